// Call history with the API's filters and paging, and one call in full:
// the transcript, the recording, duration, tokens, cost and disposition.

import { get } from "../api.js";
import { h, num, money, seconds, when, label, text, panel, table, pager, field, facts, failure, loading, empty, link, onSubmit, message, showFieldErrors } from "../view.js";
import { runRows, RUN_HEADERS } from "./dashboard.js";

export const DISPOSITIONS = ["user_hangup", "agent_hangup", "no_answer", "busy", "failed", "voicemail", "user_idle_max_duration_exceeded"];

const FILTERS = ["agent_id", "phone", "disposition", "date_from", "date_to", "min_duration", "max_duration"];

export async function callHistory(ctx) {
  const q = ctx.query;
  ctx.page("Calls", loading());
  let agents, list;
  try {
    agents = (await get("/api/agents", { limit: 100 })).data;
    list = await get("/api/usage/history", { ...Object.fromEntries(FILTERS.map((f) => [f, q[f]])), page: q.page, limit: 20 });
  } catch (e) {
    // A bad filter is a 400 naming its field: shown beside it below.
    if (!e.fields || !e.fields.length) {
      ctx.page("Calls", failure(e));
      return;
    }
    list = { error: e };
  }
  const input = (name, props = {}) => h("input", { name, value: q[name] || "", ...props });
  const form = h(
    "form",
    { id: "history-filters", class: "filters", novalidate: true },
    field("Agent", h("select", { name: "agent_id" }, h("option", { value: "", text: "All agents" }), (agents || []).map((a) => h("option", { value: a.id, text: a.name, selected: a.id === q.agent_id })))),
    field("Phone (part of)", input("phone", { inputmode: "tel", maxlength: 32, pattern: "[0-9+() -]*" })),
    field("Disposition", h("select", { name: "disposition" }, h("option", { value: "", text: "Any" }), DISPOSITIONS.map((d) => h("option", { value: d, text: label(d), selected: d === q.disposition })))),
    field("From", input("date_from", { type: "date" })),
    field("To", input("date_to", { type: "date" })),
    field("Min. seconds", input("min_duration", { type: "number", min: 0, inputmode: "numeric" })),
    field("Max. seconds", input("max_duration", { type: "number", min: 0, inputmode: "numeric" })),
    h("div", { class: "row filter-actions" }, h("button", { type: "submit", text: "Filter" }), h("a", { href: "#/calls", class: "button secondary", text: "Clear" })),
  );
  const out = message("history-message");
  onSubmit(form, out, async (v) => {
    if (v.phone && !/^[0-9+() -]*$/.test(v.phone)) throw Object.assign(new Error("Please correct the fields marked."), { fields: [{ field: "phone", message: "digits, +, -, (, ) and spaces only" }] });
    ctx.setQuery(v);
  });
  let results;
  if (list.error) {
    results = h("p", { class: "error", text: list.error.message });
  } else {
    const filtered = FILTERS.some((f) => q[f]);
    results = [table(RUN_HEADERS, runRows(list.data), filtered ? "No call matches these filters." : "No calls yet.", "Calls"), pager(list.pagination, (page) => ctx.setQuery({ ...q, page }))];
  }
  ctx.page("Calls", panel("Filters", form, out), panel(null, results));
  if (list.error) showFieldErrors(form, list.error.fields);
}

// Extra per-turn figures, shown when the server has them (issue 8 adds
// tokens and cost per turn; voice adds latency). Null values are left out.
// What a voice call's answer records beside its words: how long after the
// caller stopped speaking the first LLM token and the first audio came, and
// whether the caller talked over it.
const TURN_EXTRAS = [
  ["latency", (v) => `first token ${num(v.llm_first_token_ms)} ms, first audio ${num(v.first_audio_ms)} ms`],
  ["interrupted", (v) => (v ? "interrupted by the caller" : "")],
];

function transcript(turns) {
  if (!turns || turns.length === 0) return empty("No transcript: nothing was said.");
  return h(
    "ol",
    { class: "transcript", id: "transcript" },
    turns.map((t) => {
      const extras = TURN_EXTRAS.filter(([k]) => t[k] !== null && t[k] !== undefined)
        .map(([k, f]) => f(t[k]))
        .filter((x) => x !== "");
      return h(
        "li",
        { class: `turn ${t.role === "user" ? "user" : "assistant"}` },
        h("div", { class: "turn-meta" }, h("strong", { text: t.role === "user" ? "Caller" : t.role === "assistant" ? "Agent" : label(t.role) }), " · ", h("time", { datetime: t.at || "", text: when(t.at) }), extras.length ? ` · ${extras.join(" · ")}` : ""),
        h("div", { class: "turn-text", text: text(t.content) }),
      );
    }),
  );
}

export async function callDetail(ctx) {
  ctx.page("Call", loading());
  let run;
  try {
    run = (await get(`/api/calls/run/${encodeURIComponent(ctx.params.id)}`)).data;
  } catch (e) {
    ctx.page("Call", failure(e), h("p", {}, link("#/calls", "Back to the calls")));
    return;
  }
  // The server fetches the recording from Twilio with the account's
  // credentials, so it plays here (the page loads nothing from elsewhere).
  const recording = run.recording_url
    ? h(
        "p",
        {},
        h("audio", {
          controls: true,
          preload: "none",
          id: "recording",
          src: `/api/calls/run/${encodeURIComponent(run.id)}/recording`,
          "aria-label": "The call's recording",
        }),
      )
    : h("p", { class: "muted", text: "No recording for this call." });
  const usage = run.llm_usage || null;
  const cost = usage ? usage.cost : null;
  const llmTokens = usage ? usage.prompt_tokens + usage.completion_tokens : null;
  ctx.page(
    `Call ${run.run_number}`,
    h("p", {}, link("#/calls", "← All calls")),
    panel(
      "Summary",
      facts([
        ["Agent", run.agent_name ? link(`#/agents/${run.agent_id}`, run.agent_name) : null],
        ["Type", label(run.type)],
        ["Status", label(run.status)],
        ["Disposition", run.disposition ? label(run.disposition) : null],
        ["Phone", run.phone_number],
        ["Started", when(run.created_at)],
        ["Ended", run.completed_at ? when(run.completed_at) : null],
        ["Duration", seconds(run.duration_seconds)],
        ["Tokens", num(run.groq_tokens, 2)],
        ["LLM tokens", llmTokens === null ? null : num(llmTokens)],
        ["Cost", cost === null || cost === undefined ? null : money(cost)],
        ["Campaign", run.campaign_id ? link(`#/campaigns/${run.campaign_id}`, "Open the campaign") : null],
      ]),
      recording,
    ),
    panel("Transcript", transcript(run.transcript)),
  );
}
