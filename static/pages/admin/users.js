// Admin: the users table (search, filters, sorting, server-side paging) and
// one user's page with every change an admin can make, each confirmed.

import { api, get } from "../../api.js";
import { h, put, field, message, say, onSubmit, panel, table, link, loading, failure, num, money, seconds, when, label, cards, facts, pager, confirmDialog, action } from "../../view.js";

const ROLES = ["user", "enterprise", "admin"];
const TIERS = ["free", "pro", "enterprise"];
const SORTS = [
  ["created_at", "Created"],
  ["email", "Email"],
  ["last_login", "Last sign-in"],
  ["subscription_tier", "Tier"],
  ["role", "Role"],
];

const choose = (name, options, selected, all) =>
  h("select", { name }, all ? h("option", { value: "", text: all }) : null, options.map(([v, t]) => h("option", { value: v, text: t, selected: String(v) === String(selected ?? "") })));

export async function userList(ctx) {
  const q = ctx.query;
  const form = h(
    "form",
    { id: "user-filters", class: "filters", novalidate: true },
    field("Search (email, organization)", h("input", { name: "search", type: "search", value: q.search || "" })),
    field("Role", choose("role", ROLES.map((r) => [r, r]), q.role, "Any role")),
    field("Tier", choose("tier", TIERS.map((t) => [t, t]), q.tier, "Any tier")),
    field("Status", choose("is_active", [["true", "Active"], ["false", "Inactive"]], q.is_active, "Any status")),
    field("Sort by", choose("sort_by", SORTS, q.sort_by || "created_at")),
    field("Order", choose("order", [["desc", "Descending"], ["asc", "Ascending"]], q.order || "desc")),
    h("div", { class: "row filter-actions" }, h("button", { type: "submit", text: "Apply" }), h("a", { href: "#/admin/users", class: "button secondary", text: "Clear" })),
  );
  const out = message("users-message");
  onSubmit(form, out, async (v) => ctx.setQuery(v));
  const box = h("div", { id: "users-list" }, loading());
  ctx.page("Users", panel("Find users", form, out), panel(null, box));
  try {
    const list = await get("/api/admin/users", { search: q.search, role: q.role, tier: q.tier, is_active: q.is_active, sort_by: q.sort_by, order: q.order, page: q.page, limit: 20 });
    if (!ctx.alive()) return;
    put(box, 
      table(
        ["Email", "Role", "Tier", "Status", "Agents", "Tokens this month", "Last sign-in"],
        list.data.map((u) => [
          link(`#/admin/users/${u.id}`, u.email),
          u.role,
          u.subscription_tier,
          h("span", { class: u.is_active ? "ok" : "error", text: u.is_active ? "active" : "inactive" }),
          `${num(u.agent_count)} / ${num(u.max_agents)}`,
          `${num(u.tokens_this_month, 2)} / ${num(u.monthly_token_quota)}`,
          when(u.last_login),
        ]),
        "No user matches.",
        "Users",
      ),
      pager(list.pagination, (page) => ctx.setQuery({ ...q, page })),
    );
  } catch (e) {
    put(box, failure(e));
  }
}

export async function userDetail(ctx) {
  const id = encodeURIComponent(ctx.params.id);
  ctx.page("User", loading());
  let d, tiers;
  try {
    [d, tiers] = await Promise.all([get(`/api/admin/users/${id}`).then((r) => r.data), get("/api/admin/subscription-tiers").then((r) => r.data)]);
  } catch (e) {
    ctx.page("User", failure(e), h("p", {}, link("#/admin/users", "Back to the users")));
    return;
  }
  const u = d.user;
  const self = u.id === ctx.me.id;
  const redraw = () => userDetail(ctx);
  const out = message("user-limits-message");
  const tierSelect = choose("subscription_tier", TIERS.map((t) => [t, t]), u.subscription_tier);
  const maxAgents = h("input", { name: "max_agents", type: "number", min: 0, max: 1000, value: u.max_agents, inputmode: "numeric" });
  const quota = h("input", { name: "monthly_token_quota", type: "number", min: 0, max: 10000000, value: u.monthly_token_quota, inputmode: "numeric" });
  const hint = h("p", { class: "muted", id: "tier-hint" });
  // A tier change brings that tier's limits unless they are changed here
  // too (the API's rule); the hint says which will apply.
  tierSelect.addEventListener("change", () => {
    const t = tiers.find((x) => x.name === tierSelect.value);
    hint.textContent = t && t.name !== u.subscription_tier ? `Moving to ${t.name} applies its limits (${num(t.max_agents)} agents, ${num(t.monthly_token_quota)} tokens a month, $${t.monthly_price} a month) unless you change them here.` : "";
  });
  const form = h(
    "form",
    { id: "user-limits-form", novalidate: true },
    field("Tier", tierSelect),
    hint,
    field("Role", choose("role", ROLES.map((r) => [r, r]), u.role)),
    field("Max agents", maxAgents, "0–1000"),
    field("Monthly token quota", quota, "0–10,000,000"),
    h("button", { type: "submit", text: "Save changes" }),
  );
  onSubmit(form, out, async (v) => {
    const body = {};
    const errors = [];
    if (v.subscription_tier !== u.subscription_tier) body.subscription_tier = v.subscription_tier;
    if (v.role !== u.role) body.role = v.role;
    for (const [k, max] of [["max_agents", 1000], ["monthly_token_quota", 10000000]]) {
      const n = Number(v[k]);
      if (v[k] === "" || !Number.isInteger(n) || n < 0 || n > max) errors.push({ field: k, message: `must be a whole number from 0 to ${num(max)}` });
      else if (n !== u[k]) body[k] = n;
    }
    if (errors.length) throw Object.assign(new Error("Please correct the fields marked."), { fields: errors });
    if (Object.keys(body).length === 0) {
      say(out, "Nothing changed.");
      return;
    }
    const what = Object.entries(body).map(([k, val]) => `${label(k)} ${u[k]} → ${val}`).join(", ");
    if (!(await confirmDialog(`Change ${u.email}: ${what}?`, "Save changes", false))) return;
    await api("PUT", `/api/admin/users/${u.id}/limits`, body);
    await redraw();
    say(document.getElementById("user-limits-message"), "Saved.", true);
  });
  const actOut = message("user-actions-message");
  const toggle = action(
    u.is_active ? "Deactivate" : "Activate",
    actOut,
    async () => {
      const q = u.is_active ? `Deactivate ${u.email}? Their sessions end and their campaigns stop dialing.` : `Activate ${u.email}?`;
      if (!(await confirmDialog(q, u.is_active ? "Deactivate" : "Activate", u.is_active))) return;
      await api("POST", `/api/admin/users/${u.id}/toggle-status`, { is_active: !u.is_active });
      await redraw();
    },
    { class: u.is_active ? "danger" : "secondary", id: "user-toggle", disabled: self },
  );
  const del = action(
    "Delete user",
    actOut,
    async () => {
      if (!(await confirmDialog(`Delete ${u.email} and everything they own (agents, calls, keys)? This cannot be undone.`, "Delete user"))) return;
      await api("DELETE", `/api/admin/users/${u.id}`);
      location.hash = "#/admin/users";
    },
    { class: "danger", id: "user-delete", disabled: self },
  );
  const s = d.statistics;
  const m = d.usage;
  ctx.page(
    u.email,
    h("p", { class: "row" }, link("#/admin/users", "← All users"), link(`#/admin/audit?target_user_id=${u.id}&actor=any`, "Their audit trail")),
    cards([
      ["agents", `${num(s.agent_count)} / ${num(u.max_agents)}`, "user-agents"],
      ["completed calls", num(s.total_runs), "user-runs"],
      ["time on calls", seconds(s.total_duration_seconds), "user-duration"],
      ["tokens in all", num(s.total_tokens_used, 2), "user-tokens"],
      ["tokens this month", `${num(m.tokens_used_this_month, 2)} / ${num(m.monthly_token_quota)}`, "user-month-tokens"],
      ["cost this month", money(m.costs_this_month), "user-month-cost"],
    ]),
    panel(
      "Account",
      facts([
        ["Status", u.is_active ? "active" : "inactive"],
        ["Role", u.role],
        ["Tier", u.subscription_tier],
        ["Organization", u.organization_name],
        ["Created", when(u.created_at)],
        ["Last sign-in", u.last_login ? when(u.last_login) : "never"],
        ["Subscription", d.subscription ? `${d.subscription.plan}, ${d.subscription.status}, ${money(d.subscription.monthly_price)} a month` : null],
        ["Calls this month", num(m.calls_this_month)],
      ]),
    ),
    panel("Limits, tier and role", form, out),
    panel("Status", self ? h("p", { class: "muted", text: "This is your own account: you cannot deactivate or delete it." }) : null, h("div", { class: "row" }, toggle, del), actOut),
    panel("Agents", table(["Name", "Type", "Use case", "Calls", "Created"], d.agents.map((a) => [a.name, label(a.type), a.use_case, num(a.total_runs), when(a.created_at)]), "No agents.", "Agents")),
    panel("Recent calls", table(["Call", "Agent", "Status", "Duration", "Tokens", "Started"], d.recent_runs.map((r) => [r.run_number, r.agent_name, label(r.disposition || r.status), seconds(r.duration_seconds), num(r.groq_tokens, 2), when(r.created_at)]), "No calls.", "Recent calls")),
    panel("API keys (metadata only)", table(["Provider", "Active", "Saved", "Last used"], d.api_keys.map((k) => [k.provider, k.is_active ? "yes" : "no", when(k.created_at), k.last_used_at ? when(k.last_used_at) : "never"]), "No keys saved.", "API keys")),
  );
}
