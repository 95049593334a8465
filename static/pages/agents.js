// Agents: the list with the plan's limit, creation, editing and deletion.

import { api, get } from "../api.js";
import { h, put, field, message, say, onSubmit, panel, table, link, loading, failure, num, when, label, confirmDialog, action } from "../view.js";

// The API's bounds, checked before sending so errors show beside the field.
function check(v) {
  const errors = [];
  if (!v.name || v.name.length > 255) errors.push({ field: "name", message: "must be 1–255 characters" });
  if (!v.use_case || v.use_case.length > 255) errors.push({ field: "use_case", message: "must be 1–255 characters" });
  if (!v.description || v.description.length < 10 || v.description.length > 5000) errors.push({ field: "description", message: "must be 10–5000 characters" });
  if ((v.first_message || "").length > 1000) errors.push({ field: "first_message", message: "must be at most 1000 characters" });
  const max = v.max_call_seconds;
  if (max !== undefined && !(Number.isInteger(max) && max >= 10 && max <= 14400)) errors.push({ field: "max_call_seconds", message: "must be a whole number from 10 to 14400" });
  if (errors.length) throw Object.assign(new Error("Please correct the fields marked."), { fields: errors });
}

// The form's text values as the API takes them: the time limit a number
// (left out when blank), recording a boolean from its checkbox.
function voiceValues(v, form) {
  if (v.max_call_seconds === "" || v.max_call_seconds === undefined) delete v.max_call_seconds;
  else v.max_call_seconds = Number(v.max_call_seconds);
  v.record_calls = form.elements.namedItem("record_calls").checked;
  return v;
}

function agentForm(id, agent, submitText) {
  const type = h("select", { name: "type" }, ["INBOUND", "OUTBOUND"].map((t) => h("option", { value: t, text: label(t), selected: agent && agent.type === t })));
  const form = h(
    "form",
    { id, novalidate: true },
    field("Name", h("input", { name: "name", required: true, maxlength: 255, value: agent ? agent.name : "" })),
    field("Type", type),
    field("Use case", h("input", { name: "use_case", required: true, maxlength: 255, value: agent ? agent.use_case : "" })),
    field("Prompt", h("textarea", { name: "description", required: true, maxlength: 5000 }), "What the agent is and how it speaks, 10–5000 characters. {{first_name}}, {{last_name}}, {{phone}} and a campaign's CSV columns are filled in per call."),
    h(
      "fieldset",
      {},
      h("legend", { text: "Voice" }),
      field("First message", h("input", { name: "first_message", maxlength: 1000, value: agent && agent.first_message ? agent.first_message : "" }), "What the agent says when a call starts; empty: a greeting with its name."),
      field("Voice", h("input", { name: "voice", maxlength: 100, value: agent && agent.voice ? agent.voice : "", placeholder: "the voice in Settings" })),
      field("Language", h("input", { name: "language", maxlength: 20, value: agent && agent.language ? agent.language : "", placeholder: "e.g. en-US" })),
      field("Longest call (seconds)", h("input", { name: "max_call_seconds", type: "number", min: 10, max: 14400, value: agent ? agent.max_call_seconds : 600 })),
      field("Record phone calls", h("input", { name: "record_calls", type: "checkbox", checked: Boolean(agent && agent.record_calls) })),
    ),
    h("button", { type: "submit", text: submitText }),
  );
  if (agent) form.elements.namedItem("description").value = agent.description;
  return form;
}

export async function agentList(ctx) {
  const out = message("agents-message");
  const listBox = h("div", { id: "agents-list" }, loading());
  const limits = h("p", { class: "muted", id: "agents-limit" });
  async function refresh() {
    try {
      const [list, me] = await Promise.all([get("/api/agents", { limit: 100 }), get("/api/auth/me")]);
      const u = me.data.current_usage;
      limits.textContent = `${num(u.agent_count)} of ${num(me.data.max_agents)} agents on the ${me.data.subscription_tier} plan.`;
      put(listBox, 
        table(
          ["Name", "Type", "Use case", "Calls", "Created", ""],
          list.data.map((a) => [
            link(`#/agents/${a.id}`, a.name),
            label(a.type),
            a.use_case,
            num(a.total_runs),
            when(a.created_at),
            h("span", { class: "row" }, link(`#/talk/${a.id}`, "Talk"), link(`#/agents/${a.id}`, "Edit")),
          ]),
          "No agents yet: create one below.",
          "Agents",
        ),
      );
    } catch (e) {
      put(listBox, failure(e));
    }
  }
  const form = agentForm("agent-form", null, "Create agent");
  onSubmit(form, out, async (v) => {
    check(voiceValues(v, form));
    try {
      await api("POST", "/api/agents", v);
    } catch (e) {
      const up = e.body.upgrade;
      if (e.body.code === "AGENT_LIMIT_REACHED" && up && up.message) throw Object.assign(new Error(`${e.message} ${up.message}`), { fields: [] });
      throw e;
    }
    form.reset();
    say(out, `Agent ${v.name} created.`, true);
    await refresh();
  });
  ctx.page("Agents", panel(null, limits, listBox), panel("New agent", form, out));
  await refresh();
}

export async function agentEdit(ctx) {
  ctx.page("Agent", loading());
  let agent;
  try {
    agent = (await get(`/api/agents/${encodeURIComponent(ctx.params.id)}`)).data;
  } catch (e) {
    ctx.page("Agent", failure(e), h("p", {}, link("#/agents", "Back to the agents")));
    return;
  }
  const out = message("agent-edit-message");
  const form = agentForm("agent-edit-form", agent, "Save changes");
  onSubmit(form, out, async (v) => {
    check(voiceValues(v, form));
    agent = (await api("PUT", `/api/agents/${agent.id}`, v)).data;
    say(out, "Saved.", true);
    document.getElementById("page-title").textContent = agent.name;
  });
  const delOut = message("agent-delete-message");
  const del = action(
    "Delete agent",
    delOut,
    async () => {
      if (!(await confirmDialog(`Delete ${agent.name} and all its calls? This cannot be undone.`, "Delete agent"))) return;
      await api("DELETE", `/api/agents/${agent.id}`);
      location.hash = "#/agents";
    },
    { class: "danger", id: "agent-delete" },
  );
  ctx.page(
    agent.name,
    h("p", { class: "row" }, link("#/agents", "← All agents"), link(`#/talk/${agent.id}`, "Talk to this agent"), link(`#/calls?agent_id=${agent.id}`, "Its calls")),
    panel("Edit", form, out),
    panel("Delete", h("p", { class: "muted", text: "Deleting an agent deletes its calls too; an agent with a call in progress cannot be deleted." }), del, delOut),
  );
}
