// The daily report of one local day: totals, dispositions and durations as
// charts, and the same runs as a CSV download.

import { get, query } from "../api.js";
import { h, field, cards, panel, num, seconds, categoryChart, failure, loading, onSubmit, message, showFieldErrors } from "../view.js";

function today() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function zones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC"];
  }
}

export default async function reports(ctx) {
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const q = { date: ctx.query.date || today(), timezone: ctx.query.timezone || local, agent_id: ctx.query.agent_id || "" };
  ctx.page("Daily report", loading());
  let agents = [];
  let report = null;
  let error = null;
  try {
    agents = (await get("/api/agents", { limit: 100 })).data;
    report = (await get("/api/reports/daily", q)).data;
  } catch (e) {
    error = e;
  }
  const tzs = zones();
  if (!tzs.includes(q.timezone)) tzs.unshift(q.timezone);
  if (!tzs.includes("UTC")) tzs.unshift("UTC");
  const form = h(
    "form",
    { id: "report-form", class: "filters", novalidate: true },
    field("Day", h("input", { type: "date", name: "date", value: q.date, required: true })),
    field("Time zone", h("select", { name: "timezone", id: "report-timezone" }, tzs.map((z) => h("option", { value: z, text: z, selected: z === q.timezone })))),
    field("Agent", h("select", { name: "agent_id" }, h("option", { value: "", text: "All agents" }), agents.map((a) => h("option", { value: a.id, text: a.name, selected: a.id === q.agent_id })))),
    h("div", { class: "row filter-actions" }, h("button", { type: "submit", text: "Show" })),
  );
  const out = message("report-message");
  onSubmit(form, out, async (v) => {
    if (!v.date) throw Object.assign(new Error("Please correct the fields marked."), { fields: [{ field: "date", message: "is required" }] });
    ctx.setQuery(v);
  });
  let body;
  if (error) {
    body = error.fields && error.fields.length ? null : failure(error);
  } else {
    const r = report;
    const buckets = Object.entries(r.duration_buckets || {}).map(([k, v]) => ({ label: `${k} s`, value: v }));
    const disp = Object.entries(r.dispositions || {}).map(([k, v]) => ({ label: k, value: v }));
    body = [
      cards([
        ["calls", num(r.total_calls), "report-calls"],
        ["total duration", seconds(r.total_duration_seconds), "report-duration"],
        ["tokens", num(r.total_tokens, 2), "report-tokens"],
        ["transfers", num(r.transfers), "report-transfers"],
      ]),
      h("div", { class: "grid2" }, panel("Dispositions", categoryChart("Calls by disposition", disp)), panel("Durations", categoryChart("Calls by duration", buckets))),
      h("p", {}, h("a", { class: "button secondary", id: "report-download", href: `/api/reports/download${query(q)}`, download: `voxflow-report-${q.date}.csv`, text: "Download CSV" })),
    ];
  }
  ctx.page("Daily report", panel("Which day", form, out), body);
  if (error && error.fields) showFieldErrors(form, error.fields);
}
