// Talk to an agent: a web call (spoken through the microphone and the
// speaker, or typed) through the configured LLM, or a phone call through
// the tenant's Twilio account.

import { api, get } from "../api.js";
import { h, field, message, say, onSubmit, panel, empty, link, seconds, num, label, text, loadOrFail } from "../view.js";
import { VoiceCall, voiceSupport } from "../voice-call.js";

// A microphone drawn inline (the page loads no image from anywhere).
function micIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11z");
  path.setAttribute("fill", "currentColor");
  svg.append(path);
  return svg;
}

export default async function talk(ctx) {
  const agents = await loadOrFail(ctx, "Talk to an agent", get("/api/agents", { limit: 100 }).then((r) => r.data));
  if (!agents) return;
  if (agents.length === 0) {
    ctx.page("Talk to an agent", panel(null, empty("No agents yet."), h("p", {}, link("#/agents", "Create an agent first"))));
    return;
  }
  const out = message("call-message");
  const micOut = message("call-mic-message");
  const chat = h("ol", { class: "chat transcript", id: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const select = h("select", { id: "call-agent", name: "agent_id" }, agents.map((a) => h("option", { value: a.id, text: a.name })));
  if (ctx.params.id) select.value = ctx.params.id;
  const voiceButton = h("button", { type: "button", id: "call-voice", class: "with-icon" }, micIcon(), "Start voice call");
  const startButton = h("button", { type: "button", id: "call-start", class: "secondary", text: "Start typed call" });
  const muteButton = h("button", { type: "button", id: "call-mute", class: "secondary", text: "Mute", "aria-pressed": "false", disabled: true, hidden: true });
  const endButton = h("button", { type: "button", id: "call-end", class: "danger", text: "Hang up", disabled: true });
  const input = h("input", { name: "message", id: "call-input", placeholder: "Type a message…", maxlength: 4000, disabled: true, autocomplete: "off" });
  const sendButton = h("button", { type: "submit", text: "Send", disabled: true });
  const send = h("form", { id: "call-form", class: "row chat-form" }, h("label", { for: "call-input", class: "sr-only", text: "Your message" }), input, sendButton);
  // What the call is doing now, and how much of the agent's speech has
  // played (the count of samples is kept on the element for tests).
  const status = h("p", { id: "call-status", class: "call-status", role: "status", hidden: true });
  const played = h("p", { id: "call-audio", class: "muted", "data-played-samples": "0", hidden: true, text: "Agent audio played: 0.0 s" });
  const unsupported = voiceSupport();
  if (unsupported) {
    voiceButton.disabled = true;
    say(micOut, `Voice calls are not available here: ${unsupported}. Typed calls work.`);
  }
  let runId = null;
  let voice = null; // the VoiceCall while a voice call is live
  let hearing = null; // the caller's words not yet final, shown as they come
  let audioRate = 16000;
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
    voiceButton.disabled = on || Boolean(unsupported);
    select.disabled = on;
    if (!on) {
      muteButton.disabled = true;
      status.hidden = true;
    }
  };
  const setStatus = (t) => {
    status.hidden = false;
    status.textContent = t;
  };
  const ended = (run, ok = true) => {
    const id = runId;
    runId = null;
    voice = null;
    hearing = null;
    live(false);
    const how = run.disposition && run.disposition !== "user_hangup" ? ` (${label(run.disposition)})` : "";
    say(out, `Call ${text(run.run_number)} ended${how}: ${seconds(run.duration_seconds)}, ${num(run.groq_tokens, 2)} tokens. `, ok);
    if (id) out.append(link(`#/calls/${id}`, "See the call"));
  };
  ctx.onLeave(() => {
    // Leaving the page mid-call ends it, so the plan's concurrent calls free up.
    if (voice) voice.close();
    else if (runId) api("POST", "/api/calls/web/end", { run_id: runId }).catch(() => {});
  });
  // The call's run, or null once `out` says why it could not start.
  const startRun = async () => {
    out.textContent = "";
    micOut.textContent = "";
    chat.replaceChildren();
    try {
      return (await api("POST", "/api/calls/web/start", { agent_id: select.value })).data;
    } catch (e) {
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
      return null;
    }
  };
  const typed = (r) => {
    runId = r.run_id;
    turn("assistant", r.greeting);
    say(out, `Call ${r.run_number} in progress.`, true);
    live(true);
    input.focus();
  };
  startButton.addEventListener("click", async () => {
    startButton.disabled = true;
    voiceButton.disabled = true;
    const r = await startRun();
    if (r) typed(r);
    else live(false);
  });
  voiceButton.addEventListener("click", async () => {
    startButton.disabled = true;
    voiceButton.disabled = true;
    // Made now, while the click still counts as the person's gesture.
    const call = new VoiceCall(null, {
      transcript(role, t, final) {
        if (role === "user") {
          if (!hearing) hearing = turn("user", t);
          hearing.querySelector(".turn-text").textContent = t;
          hearing.classList.toggle("interim", !final);
          if (final) hearing = null;
        } else {
          turn("assistant", t);
        }
        chat.scrollTop = chat.scrollHeight;
      },
      speaking: () => setStatus("The agent is speaking…"),
      interrupted: () => setStatus(call.muted ? "Muted: the agent hears nothing." : "Listening…"),
      played(samples) {
        played.hidden = false;
        played.dataset.playedSamples = String(samples);
        played.textContent = `Agent audio played: ${(samples / audioRate).toFixed(1)} s`;
      },
      problem: (m) => say(micOut, m),
      ended: (run) => ended(run),
      closed(m) {
        const id = runId;
        runId = null;
        voice = null;
        live(false);
        say(out, `${m} `);
        if (id) out.append(link(`#/calls/${id}`, "See the call"));
      },
    });
    const r = await startRun();
    if (!r) {
      call.close();
      live(false);
      return;
    }
    call.runId = r.run_id;
    runId = r.run_id;
    try {
      await call.open();
    } catch (e) {
      // No voice for this call: it goes on typed.
      call.close();
      typed(r);
      say(micOut, `Voice is not available, so this call is typed: ${e.message}`);
      return;
    }
    voice = call;
    live(true);
    muteButton.hidden = false;
    say(out, `Call ${r.run_number} in progress: speak, or type below.`, true);
    setStatus("Listening…");
    try {
      await call.startMic();
      muteButton.disabled = false;
      muteButton.focus();
    } catch (e) {
      say(micOut, `The microphone is not available: ${e.message}. Type below; the agent still speaks.`);
      setStatus("Microphone off: type your turns.");
      input.focus();
    }
  });
  muteButton.addEventListener("click", () => {
    if (!voice) return;
    const muted = !voice.muted;
    voice.setMuted(muted);
    muteButton.setAttribute("aria-pressed", String(muted));
    muteButton.textContent = muted ? "Unmute" : "Mute";
    setStatus(muted ? "Muted: the agent hears nothing." : "Listening…");
  });
  send.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    out.textContent = "";
    if (voice) {
      // Inside a voice call the typed turn goes over the socket; the
      // server's transcript frame shows it in the conversation.
      try {
        voice.sendText(t);
        input.value = "";
      } catch (e) {
        say(out, `Not sent: ${e.message}`);
      }
      input.focus();
      return;
    }
    const mine = turn("user", t);
    input.value = "";
    sendButton.disabled = true;
    try {
      const r = (await api("POST", "/api/calls/web/message", { run_id: runId, message: t })).data;
      turn("assistant", r.response);
    } catch (e) {
      // The server discarded the message: take it out of the chat and give
      // it back to the input, so what is shown is what the agent heard.
      mine.remove();
      input.value = t;
      say(out, `Not sent: ${e.message}`);
    } finally {
      if (runId) sendButton.disabled = false;
      input.focus();
    }
  });
  endButton.addEventListener("click", async () => {
    endButton.disabled = true;
    if (voice) {
      try {
        setStatus("Hanging up…");
        voice.hangUp();
      } catch (e) {
        say(out, e.message);
      }
      return;
    }
    try {
      ended((await api("POST", "/api/calls/web/end", { run_id: runId })).data);
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
    panel(
      "Web call",
      h("p", { class: "muted", text: "A voice call uses your microphone and speaker; a typed call is a chat. Either way the agent answers as it would on the phone." }),
      h("div", { class: "row call-controls" }, voiceButton, startButton, muteButton, endButton),
      micOut,
      status,
      played,
      chat,
      send,
      out,
    ),
    panel("Phone call", h("p", { class: "muted", text: "The selected agent calls this number through your Twilio account (pro and enterprise plans)." }), phoneForm, phoneOut),
  );
}
