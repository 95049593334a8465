// The tenant's service settings (LLM, voices) and password.

import { api, get } from "../api.js";
import { h, field, message, say, onSubmit, panel, loadOrFail } from "../view.js";

export default async function settings(ctx) {
  const cfg = await loadOrFail(ctx, "Settings", get("/api/config/service").then((r) => r.data));
  if (!cfg) return;
  const out = message("settings-message");
  const provider = h("select", { name: "llm_provider" }, h("option", { value: "groq", text: "Groq" }), h("option", { value: "openai_compatible", text: "OpenAI-compatible server (self-hosted)" }));
  provider.value = cfg.llm_provider;
  const form = h(
    "form",
    { id: "service-form", novalidate: true },
    field("LLM provider", provider),
    field("Base URL (OpenAI-compatible server)", h("input", { name: "llm_base_url", id: "llm-base-url", value: cfg.llm_base_url || "", placeholder: "http://10.0.0.5:8000/v1" })),
    field("LLM model", h("input", { name: "llm_model", value: cfg.llm_model, required: true })),
    field("Voice (TTS)", h("input", { name: "tts_voice", value: cfg.tts_voice, required: true })),
    field("Speech recognition model (STT)", h("input", { name: "stt_model", value: cfg.stt_model, required: true })),
    h("button", { type: "submit", text: "Save settings" }),
  );
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
