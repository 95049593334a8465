// The tenant's provider keys: saved encrypted, shown masked only.

import { api, get } from "../api.js";
import { h, put, field, message, say, onSubmit, panel, table, loading, failure, when, action } from "../view.js";

export default async function keys(ctx) {
  const out = message("keys-message");
  const box = h("div", { id: "keys-list" }, loading());
  async function refresh() {
    try {
      const status = (await get("/api/api-keys/status")).data;
      put(box, 
        table(
          ["Provider", "Configured", "Key", "Last used", ""],
          ["groq", "deepgram", "twilio"].map((p) => {
            const s = status[p] || {};
            return [
              p,
              s.configured ? `yes (${s.source})` : "no",
              s.masked || "—",
              s.last_used_at ? when(s.last_used_at) : "never",
              h(
                "span",
                { class: "row" },
                action("Test", out, async () => {
                  const r = (await api("POST", `/api/api-keys/${p}/test`)).data;
                  say(out, `${p}: ${r.message}`, r.valid);
                }, { disabled: !s.configured, "aria-label": `Test the ${p} key` }),
                s.source === "user"
                  ? action("Delete", out, async () => {
                      await api("DELETE", `/api/api-keys/${p}`);
                      say(out, `${p} key deleted.`, true);
                      await refresh();
                    }, { class: "danger", "aria-label": `Delete the ${p} key` })
                  : null,
              ),
            ];
          }),
        ),
      );
    } catch (e) {
      put(box, failure(e));
    }
  }
  const keyForm = (provider, placeholder) => {
    const f = h(
      "form",
      { id: `${provider}-form`, class: "inline-form", novalidate: true },
      field(`${provider === "groq" ? "Groq" : "Deepgram"} API key`, h("input", { name: "api_key", type: "password", placeholder, required: true, autocomplete: "off" })),
      h("button", { type: "submit", text: `Save ${provider} key` }),
    );
    onSubmit(f, out, async (v) => {
      if (!v.api_key) throw Object.assign(new Error("Please correct the fields marked."), { fields: [{ field: "api_key", message: "is required" }] });
      await api("POST", `/api/api-keys/${provider}`, v);
      f.reset();
      say(out, `${provider} key saved.`, true);
      await refresh();
    });
    return f;
  };
  const twilio = h(
    "form",
    { id: "twilio-form", novalidate: true },
    field("Twilio account SID", h("input", { name: "account_sid", required: true, autocomplete: "off" })),
    field("Twilio auth token", h("input", { name: "auth_token", type: "password", required: true, autocomplete: "off" })),
    field("From number (E.164, optional)", h("input", { name: "phone_number", inputmode: "tel" })),
    h("button", { type: "submit", text: "Save Twilio credentials" }),
  );
  onSubmit(twilio, out, async (v) => {
    if (!v.phone_number) delete v.phone_number;
    await api("POST", "/api/api-keys/twilio", v);
    twilio.reset();
    say(out, "Twilio credentials saved.", true);
    await refresh();
  });
  ctx.page(
    "API keys",
    panel(null, h("p", { class: "muted", text: "Keys are stored encrypted and never shown again; without your own key the server's key is used, if it has one." }), box, out),
    panel("Save a key", keyForm("groq", "gsk_…"), keyForm("deepgram", "40 hexadecimal characters"), twilio),
  );
  await refresh();
}
