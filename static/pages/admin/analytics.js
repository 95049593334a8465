// Admin: the platform's figures with charts, and the CSV exports.

import { get } from "../../api.js";
import { h, field, panel, cards, table, num, money, seconds, barChart, categoryChart, failure, loading } from "../../view.js";

const PERIODS = [["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"], ["1y", "1 year"]];

export default async function analytics(ctx) {
  const period = PERIODS.some(([p]) => p === ctx.query.period) ? ctx.query.period : "30d";
  ctx.page("Analytics", loading());
  let o, g, u, r;
  try {
    [o, g, u, r] = await Promise.all(["/api/admin/analytics/overview", `/api/admin/analytics/user-growth?period=${period}`, "/api/admin/analytics/usage", "/api/admin/analytics/revenue"].map((p) => get(p).then((x) => x.data)));
  } catch (e) {
    ctx.page("Analytics", failure(e));
    return;
  }
  const periodSelect = h("select", { id: "growth-period", name: "period" }, PERIODS.map(([p, t]) => h("option", { value: p, text: t, selected: p === period })));
  periodSelect.addEventListener("change", () => ctx.setQuery({ period: periodSelect.value }));
  const exportLink = (kind, t) => h("a", { class: "button secondary", href: `/api/admin/analytics/export/${kind}`, download: "", text: t });
  ctx.page(
    "Analytics",
    cards([
      ["users", `${num(o.users.total)} (${num(o.users.active)} active)`, "overview-users"],
      ["agents", num(o.agents.total), "overview-agents"],
      ["calls", `${num(o.runs.total)} (${num(o.runs.in_progress)} live)`, "overview-runs"],
      ["tokens this month", num(o.this_month.tokens, 2), "overview-tokens"],
      ["call time this month", seconds(o.this_month.duration_seconds), "overview-duration"],
      ["MRR", money(r.mrr), "revenue-mrr"],
      ["ARR", money(r.arr), "revenue-arr"],
    ]),
    panel("User growth", field("Period", periodSelect), barChart(`New users per day (${num(g.new_users)} in the period)`, g.series.map((x) => ({ label: x.date, value: x.new_users })), (v) => num(v)), barChart("Users in all", g.series.map((x) => ({ label: x.date, value: x.total_users })), (v) => num(v))),
    panel("Usage, last 30 days", barChart("Tokens per day", u.daily.map((x) => ({ label: x.date, value: x.tokens }))), barChart("Calls per day", u.daily.map((x) => ({ label: x.date, value: x.calls })), (v) => num(v))),
    panel("Top users this month", table(["Email", "Tokens", "Calls"], (u.top_users || []).map((t) => [t.email, num(t.tokens ?? t.tokens_used, 2), num(t.calls)]), "No usage this month.", "Top users")),
    h(
      "div",
      { class: "grid2" },
      panel("Plans", categoryChart("Users by tier", Object.entries(o.users.by_tier).map(([k, v]) => ({ label: k, value: v })))),
      panel("Revenue by plan", categoryChart("MRR by plan", r.by_plan.map((p) => ({ label: `${p.plan} (${p.active_subscriptions})`, value: p.mrr })), money)),
    ),
    panel("Exports (CSV)", h("div", { class: "row" }, exportLink("users", "Users"), exportLink("usage", "Usage"), exportLink("runs", "Calls"), exportLink("audit", "Audit log"))),
  );
}
