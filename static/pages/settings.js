// The tenant's service settings (LLM, voices) and password.

import { api, get } from "../api.js";
import { h, field, message, say, onSubmit, panel, loadOrFail } from "../view.js";

// What the model and voice fields take, by speech provider.
const SPEECH_HINTS = {
  stt: {
    deepgram: "A Deepgram model, e.g. nova-3-general.",
    openai_compatible: "The model your speech server loads, e.g. Systran/faster-whisper-small.",
  },
  tts: {
    deepgram: "A Deepgram Aura voice, e.g. aura-2-helena-en.",
    openai_compatible: "A voice of your speech server, e.g. af_heart (Kokoro).",
  },
};

function speechSelect(name, id, value) {
  const s = h(
    "select",
    { name, id },
    h("option", { value: "deepgram", text: "Deepgram" }),
    h("option", { value: "openai_compatible", text: "OpenAI-compatible server (on-prem)" }),
  );
  s.value = value;
  return s;
}

export default async function settings(ctx) {
  const cfg = await loadOrFail(ctx, "Settings", get("/api/config/service").then((r) => r.data));
  if (!cfg) return;
  const out = message("settings-message");
  const provider = h("select", { name: "llm_provider" }, h("option", { value: "groq", text: "Groq" }), h("option", { value: "openai_compatible", text: "OpenAI-compatible server (self-hosted)" }));
  provider.value = cfg.llm_provider;
  const stt = speechSelect("stt_provider", "stt-provider", cfg.stt_provider);
  const tts = speechSelect("tts_provider", "tts-provider", cfg.tts_provider);
  const sttModel = h("input", { name: "stt_model", id: "stt-model", value: cfg.stt_model, required: true });
  const ttsVoice = h("input", { name: "tts_voice", id: "tts-voice", value: cfg.tts_voice, required: true });
  const form = h(
    "form",
    { id: "service-form", novalidate: true },
    field("LLM provider", provider),
    field("Base URL (OpenAI-compatible server)", h("input", { name: "llm_base_url", id: "llm-base-url", value: cfg.llm_base_url || "", placeholder: "http://10.0.0.5:8000/v1" })),
    field("LLM model", h("input", { name: "llm_model", value: cfg.llm_model, required: true })),
    field("Speech recognition (STT)", stt, "Deepgram needs a Deepgram key under API keys. An on-prem server is the one the administrator runs beside VoxFlow (VOXFLOW_SPEECH_STT_BASE_URL)."),
    field("Speech recognition model (STT)", sttModel, SPEECH_HINTS.stt[stt.value]),
    field("Speech synthesis (TTS)", tts, "An on-prem server is the one the administrator runs beside VoxFlow (VOXFLOW_SPEECH_TTS_BASE_URL)."),
    field("Voice (TTS)", ttsVoice, SPEECH_HINTS.tts[tts.value]),
    h("button", { type: "submit", text: "Save settings" }),
  );
  // The model and voice name what the chosen provider knows: say which.
  const hintOf = (input) => form.querySelector(`#${input.id}-hint`);
  stt.addEventListener("change", () => (hintOf(sttModel).textContent = SPEECH_HINTS.stt[stt.value]));
  tts.addEventListener("change", () => (hintOf(ttsVoice).textContent = SPEECH_HINTS.tts[tts.value]));
  onSubmit(form, out, async (v) => {
    const missing = ["llm_model", "tts_voice", "stt_model"].filter((n) => !v[n]).map((n) => ({ field: n, message: "is required" }));
    if (missing.length) throw Object.assign(new Error("Please correct the fields marked."), { fields: missing });
    if (v.llm_provider !== "openai_compatible" && !v.llm_base_url) delete v.llm_base_url;
    await api("POST", "/api/config/service", v);
    say(out, "Settings saved.", true);
  });
  const pwOut = message("password-message");
  const pw = h(
    "form",
    { id: "password-form", novalidate: true },
    field("Current password", h("input", { name: "current_password", type: "password", required: true, autocomplete: "current-password" })),
    field("New password", h("input", { name: "new_password", type: "password", required: true, autocomplete: "new-password" }), "8–128 characters, with a lowercase letter, an uppercase letter and a digit."),
    h("button", { type: "submit", text: "Change password" }),
  );
  onSubmit(pw, pwOut, async () => {
    const fd = new FormData(pw);
    await api("POST", "/api/auth/change-password", { current_password: fd.get("current_password"), new_password: fd.get("new_password") });
    pw.reset();
    say(pwOut, "Password changed; your other sessions were signed out.", true);
  });
  ctx.page("Settings", panel("Service", form, out), panel("Password", pw, pwOut));
}
