// Admin: the audit log with its filters; by default the admins' actions
// only, with a switch for the tenants' own; each entry's details as a diff.

import { get } from "../../api.js";
import { h, put, field, message, onSubmit, panel, loading, failure, empty, when, label, pager, showFieldErrors, link } from "../../view.js";

const ACTIONS = [
  "update_user_limits", "update_user_subscription", "toggle_user_status", "delete_user",
  "create_agent", "update_agent", "delete_agent", "start_web_call", "end_web_call", "start_phone_call",
  "create_campaign", "start_campaign", "pause_campaign", "resume_campaign", "stop_campaign", "delete_campaign",
  "save_api_key", "delete_api_key", "update_service_config", "update_telephony_config",
];

const show = (v) => (v === null || v === undefined ? "none" : typeof v === "object" ? JSON.stringify(v) : String(v));

// details → rows of [field, before, after]: {before, changes}, {from, to}
// or plain values (after only).
export function diffRows(d) {
  if (!d || typeof d !== "object") return [];
  if (d.before && d.changes) {
    return Object.keys(d.changes)
      .filter((k) => d.changes[k] !== null && d.changes[k] !== undefined)
      .map((k) => [k, d.before[k], d.changes[k]]);
  }
  const rows = [];
  if ("from" in d || "to" in d) rows.push(["value", d.from, d.to]);
  for (const [k, v] of Object.entries(d)) if (k !== "from" && k !== "to") rows.push([k, undefined, v]);
  return rows;
}

function diff(details) {
  const rows = diffRows(details);
  if (rows.length === 0) return h("span", { class: "muted", text: "no details" });
  return h(
    "dl",
    { class: "diff" },
    rows.map(([k, before, after]) =>
      h(
        "div",
        {},
        h("dt", { text: label(k) }),
        h("dd", {}, before !== undefined ? [h("del", { text: show(before) }), h("span", { "aria-hidden": "true", text: " → " }), h("span", { class: "sr-only", text: " changed to " })] : null, h("ins", { text: show(after) })),
      ),
    ),
  );
}

export default async function audit(ctx) {
  const q = ctx.query;
  const actor = q.actor === "any" ? "any" : "admin";
  const includeTenants = h("input", { type: "checkbox", name: "actor", value: "any", id: "audit-tenants", checked: actor === "any" });
  const form = h(
    "form",
    { id: "audit-filters", class: "filters", novalidate: true },
    field("Action", h("select", { name: "action" }, h("option", { value: "", text: "Any action" }), ACTIONS.map((a) => h("option", { value: a, text: label(a), selected: a === q.action })))),
    field("From", h("input", { type: "date", name: "date_from", value: q.date_from || "" })),
    field("To", h("input", { type: "date", name: "date_to", value: q.date_to || "" })),
    q.target_user_id ? h("input", { type: "hidden", name: "target_user_id", value: q.target_user_id }) : null,
    h("div", { class: "check" }, includeTenants, h("label", { for: "audit-tenants", text: "Include tenants' own actions" })),
    h("div", { class: "row filter-actions" }, h("button", { type: "submit", text: "Apply" }), h("a", { href: "#/admin/audit", class: "button secondary", text: "Clear" })),
  );
  const out = message("audit-message");
  onSubmit(form, out, async (v) => ctx.setQuery(v));
  includeTenants.addEventListener("change", () => form.requestSubmit());
  const box = h("div", { id: "audit-list" }, loading());
  ctx.page(
    "Audit log",
    panel("Filters", form, q.target_user_id ? h("p", { class: "muted" }, "One user's entries only. ", link("#/admin/audit", "Show all")) : null, out),
    panel(null, box),
  );
  try {
    const list = await get("/api/admin/audit-logs", { action: q.action, date_from: q.date_from, date_to: q.date_to, target_user_id: q.target_user_id, actor, page: q.page, limit: 25 });
    if (!ctx.alive()) return;
    put(box, 
      list.data.length === 0
        ? empty(actor === "admin" ? "No admin action matches. Tenants' own actions are left out; tick the box to include them." : "No entry matches.")
        : h(
            "ol",
            { class: "audit", id: "audit-entries" },
            list.data.map((e) =>
              h(
                "li",
                { class: "audit-entry" },
                h(
                  "div",
                  { class: "audit-head" },
                  h("strong", { class: "audit-action", text: label(e.action) }),
                  h("span", { class: "muted" }, " by ", e.admin_email || "a deleted account", e.target_email && e.target_email !== e.admin_email ? ` on ${e.target_email}` : "", e.target_resource_type && e.target_resource_type !== "user" ? ` (${e.target_resource_type})` : ""),
                  h("time", { class: "muted", datetime: e.created_at, text: when(e.created_at) }),
                ),
                diff(e.details),
              ),
            ),
          ),
      pager(list.pagination, (page) => ctx.setQuery({ ...q, page })),
    );
  } catch (e) {
    if (e.fields && e.fields.length) showFieldErrors(form, e.fields);
    put(box, failure(e));
  }
}
