// Talk to an agent: a web call through the configured LLM, or a phone
// call through the tenant's Twilio account.

import { api, get } from "../api.js";
import { h, field, message, say, onSubmit, panel, empty, link, seconds, num, loadOrFail } from "../view.js";

export default async function talk(ctx) {
  const agents = await loadOrFail(ctx, "Talk to an agent", get("/api/agents", { limit: 100 }).then((r) => r.data));
  if (!agents) return;
  if (agents.length === 0) {
    ctx.page("Talk to an agent", panel(null, empty("No agents yet."), h("p", {}, link("#/agents", "Create an agent first"))));
    return;
  }
  const out = message("call-message");
  const chat = h("ol", { class: "chat transcript", id: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const select = h("select", { id: "call-agent", name: "agent_id" }, agents.map((a) => h("option", { value: a.id, text: a.name })));
  if (ctx.params.id) select.value = ctx.params.id;
  const startButton = h("button", { type: "button", id: "call-start", text: "Start call" });
  const endButton = h("button", { type: "button", id: "call-end", class: "danger", text: "End call", disabled: true });
  const input = h("input", { name: "message", id: "call-input", placeholder: "Say something…", maxlength: 4000, disabled: true, autocomplete: "off" });
  const sendButton = h("button", { type: "submit", text: "Send", disabled: true });
  const send = h("form", { id: "call-form", class: "row chat-form" }, h("label", { for: "call-input", class: "sr-only", text: "Your message" }), input, sendButton);
  let runId = null;
  const turn = (role, t) => {
    const li = h("li", { class: `turn ${role}` }, h("div", { class: "turn-meta" }, h("strong", { text: role === "user" ? "You" : "Agent" })), h("div", { class: "turn-text", text: t }));
    chat.append(li);
    chat.scrollTop = chat.scrollHeight;
    return li;
  };
  const live = (on) => {
    input.disabled = !on;
    sendButton.disabled = !on;
    endButton.disabled = !on;
    startButton.disabled = on;
    select.disabled = on;
  };
  ctx.onLeave(() => {
    // Leaving the page mid-call ends it, so the plan's concurrent calls free up.
    if (runId) api("POST", "/api/calls/web/end", { run_id: runId }).catch(() => {});
  });
  startButton.addEventListener("click", async () => {
    out.textContent = "";
    chat.replaceChildren();
    startButton.disabled = true;
    try {
      const r = (await api("POST", "/api/calls/web/start", { agent_id: select.value })).data;
      runId = r.run_id;
      turn("assistant", r.greeting);
      say(out, `Call ${r.run_number} in progress.`, true);
      live(true);
      input.focus();
    } catch (e) {
      startButton.disabled = false;
      say(out, e.message);
      // Calls left open elsewhere (another tab, a closed browser) can be
      // ended from here, so the plan's concurrent calls free up at once.
      for (const open of e.body.in_progress || []) {
        const b = h("button", { type: "button", class: "secondary", text: `End ${open.run_number}` });
        b.addEventListener("click", async () => {
          b.disabled = true;
          try {
            await api("POST", "/api/calls/web/end", { run_id: open.run_id });
            say(out, `${open.run_number} ended; start the call again.`, true);
          } catch (err) {
            say(out, err.message);
            b.disabled = false;
          }
        });
        out.append(" ", b);
      }
    }
  });
  send.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const mine = turn("user", text);
    input.value = "";
    sendButton.disabled = true;
    out.textContent = "";
    try {
      const r = (await api("POST", "/api/calls/web/message", { run_id: runId, message: text })).data;
      turn("assistant", r.response);
    } catch (e) {
      // The server discarded the message: take it out of the chat and give
      // it back to the input, so what is shown is what the agent heard.
      mine.remove();
      input.value = text;
      say(out, `Not sent: ${e.message}`);
    } finally {
      if (runId) sendButton.disabled = false;
      input.focus();
    }
  });
  endButton.addEventListener("click", async () => {
    endButton.disabled = true;
    try {
      const r = (await api("POST", "/api/calls/web/end", { run_id: runId })).data;
      const ended = runId;
      runId = null;
      live(false);
      say(out, `Call ${r.run_number} ended: ${seconds(r.duration_seconds)}, ${num(r.groq_tokens, 2)} tokens. `, true);
      out.append(link(`#/calls/${ended}`, "See the call"));
    } catch (e) {
      endButton.disabled = false;
      say(out, e.message);
    }
  });
  const phoneOut = message("phone-message");
  const phoneForm = h(
    "form",
    { id: "phone-form", novalidate: true },
    field("Phone number (E.164)", h("input", { name: "phone_number", id: "phone-number", placeholder: "+14155550123", required: true, maxlength: 20, inputmode: "tel", autocomplete: "off" })),
    h("button", { type: "submit", text: "Call this number" }),
  );
  onSubmit(phoneForm, phoneOut, async (v) => {
    if (!/^\+[1-9][0-9]{6,14}$/.test(v.phone_number)) throw Object.assign(new Error("Please correct the fields marked."), { fields: [{ field: "phone_number", message: "must be in E.164 form, like +14155550123" }] });
    const r = (await api("POST", "/api/calls/phone/start", { agent_id: select.value, phone_number: v.phone_number })).data;
    say(phoneOut, `Calling: ${r.run_number} (Twilio call ${r.call_sid}). The agent talks on the phone; the transcript is kept with the call. `, true);
    phoneOut.append(link(`#/calls/${r.run_id}`, "See the call"));
  });
  ctx.page(
    "Talk to an agent",
    panel("Agent", field("Agent to talk to", select)),
    panel("Web call", h("div", { class: "row" }, startButton, endButton), chat, send, out),
    panel("Phone call", h("p", { class: "muted", text: "The selected agent calls this number through your Twilio account (pro and enterprise plans)." }), phoneForm, phoneOut),
  );
}
