// This month at a glance: tokens against the quota (with the 80/90/100 %
// warning), calls, minutes, cost, a daily chart and the latest calls.

import { get } from "../api.js";
import { h, num, money, seconds, when, label, cards, panel, table, link, barChart, failure, loading } from "../view.js";

export function quotaBanner(d) {
  if (!d.warning || d.warning === "none") return null;
  const text =
    d.warning === "100"
      ? "You have used all of this month's tokens: new calls are refused until the month ends or your plan is upgraded."
      : `You have used ${d.warning}% or more of this month's tokens (${num(d.tokens_used, 2)} of ${num(d.quota)}).`;
  return h("div", { class: `banner warn-${d.warning}`, role: "alert", id: "quota-warning", text });
}

export function runRows(runs) {
  return runs.map((r) => [
    link(`#/calls/${r.id}`, r.run_number),
    r.agent_name,
    label(r.type),
    label(r.disposition || r.status),
    seconds(r.duration_seconds),
    num(r.groq_tokens, 2),
    when(r.created_at),
  ]);
}

export const RUN_HEADERS = ["Call", "Agent", "Type", "Outcome", "Duration", "Tokens", "Started"];

export default async function dashboard(ctx) {
  ctx.page("Dashboard", loading());
  let d, recent;
  try {
    [d, recent] = await Promise.all([get("/api/usage/dashboard").then((r) => r.data), get("/api/usage/history", { limit: 5 }).then((r) => r.data)]);
  } catch (e) {
    ctx.page("Dashboard", failure(e));
    return;
  }
  const quota = h("progress", { max: d.quota || 1, value: Math.min(d.tokens_used, d.quota || 1), "aria-label": "Tokens used of this month's quota" });
  ctx.page(
    "Dashboard",
    quotaBanner(d),
    cards([
      ["tokens used this month", `${num(d.tokens_used, 2)} / ${num(d.quota)}`, "usage-tokens"],
      ["calls", num(d.calls), "usage-calls"],
      ["minutes of calls", num(d.duration / 60, 1), "usage-duration"],
      ["cost", money(d.costs), "usage-cost"],
      ["agents", `${num(d.agents.current)} / ${num(d.agents.max)}`, "usage-agents"],
    ]),
    panel("Quota", h("p", { class: "muted", text: `${num(d.percent, 1)}% of ${num(d.quota)} tokens used; ${num(d.remaining, 2)} left this month.` }), quota),
    panel(
      "By day",
      d.daily.length ? barChart("Tokens per day", d.daily.map((x) => ({ label: x.date, value: x.tokens }))) : null,
      d.daily.length ? barChart("Calls per day", d.daily.map((x) => ({ label: x.date, value: x.calls })), (v) => num(v)) : null,
    ),
    panel("Recent calls", table(RUN_HEADERS, runRows(recent), "No calls yet: create an agent, then talk to it."), h("p", {}, link("#/calls", "All calls"))),
  );
}
