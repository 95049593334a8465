// Admin: every tenant's agents with their owners.

import { get } from "../../api.js";
import { h, put, field, message, onSubmit, panel, table, link, num, when, label, pager, failure, loading } from "../../view.js";

export default async function allAgents(ctx) {
  const q = ctx.query;
  const form = h(
    "form",
    { id: "all-agents-filters", class: "filters", novalidate: true },
    field("Search (name, use case, owner)", h("input", { name: "search", type: "search", value: q.search || "" })),
    field("Type", h("select", { name: "type" }, h("option", { value: "", text: "Any type" }), ["INBOUND", "OUTBOUND"].map((t) => h("option", { value: t, text: label(t), selected: t === q.type })))),
    h("div", { class: "row filter-actions" }, h("button", { type: "submit", text: "Apply" })),
  );
  const out = message("all-agents-message");
  onSubmit(form, out, async (v) => ctx.setQuery(v));
  const box = h("div", { id: "all-agents-list" }, loading());
  ctx.page("All agents", panel("Find agents", form, out), panel(null, box));
  try {
    const list = await get("/api/admin/agents", { search: q.search, type: q.type, page: q.page, limit: 25 });
    if (!ctx.alive()) return;
    put(box, 
      table(
        ["Agent", "Owner", "Type", "Use case", "Calls", "Created"],
        list.data.map((a) => [a.name, link(`#/admin/users/${a.owner.id}`, a.owner.email), label(a.type), a.use_case, num(a.total_runs), when(a.created_at)]),
        "No agent matches.",
        "Agents",
      ),
      pager(list.pagination, (page) => ctx.setQuery({ ...q, page })),
    );
  } catch (e) {
    put(box, failure(e));
  }
}
