// VoxFlow's web UI: plain ES modules, no build step, nothing loaded from
// outside the server. It signs in with the session cookie (HttpOnly,
// SameSite=Strict); the browser's Origin header passes the server's CSRF
// check on writes. Every piece of data is put on the page as text, never
// as HTML.

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const topbar = document.getElementById("topbar");
let me = null;

class ApiError extends Error {
  constructor(status, body) {
    const fields = (body && body.errors) || [];
    const detail = fields.map((e) => `${e.field}: ${e.message}`).join("; ");
    super(detail || (body && body.message) || `The server answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const res = await fetch(path, options);
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok || !data || data.success === false) {
    if (res.status === 401 && me) {
      me = null;
      showLogin("Your session has ended; sign in again.");
    }
    throw new ApiError(res.status, data);
  }
  return data;
}

// h("tag", {attr: value, onclick: fn}, child, …): children are nodes or text.
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function field(label, input) {
  return h("label", {}, label, input);
}

function message(id) {
  return h("p", { id, role: "status", "aria-live": "polite" });
}

function say(el, text, ok = false) {
  el.textContent = text;
  el.className = ok ? "ok" : "error";
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// Submits `form` through `action(values)`, showing errors in `out`.
function onSubmit(form, out, action) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    out.textContent = "";
    try {
      await action(formValues(form));
    } catch (e) {
      say(out, e.message);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// A click handler that reports a failure in `out`.
function guarded(out, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      say(out, e.message);
    }
  };
}

function page(title, ...content) {
  view.replaceChildren(h("h1", { text: title }), ...content);
}

// ---------------------------------------------------------------- sign in

function showLogin(notice) {
  topbar.hidden = true;
  const out = message("auth-message");
  if (notice) say(out, notice);
  const login = h(
    "form",
    { id: "login-form" },
    field("Email", h("input", { name: "email", type: "email", required: true, autocomplete: "username" })),
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "current-password" })),
    h("button", { type: "submit", text: "Sign in" }),
  );
  const register = h(
    "form",
    { id: "register-form", hidden: true },
    field("Email", h("input", { name: "email", type: "email", required: true, autocomplete: "username" })),
    field(
      "Password (8–128 characters, with a lowercase letter, an uppercase letter and a digit)",
      h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" }),
    ),
    field("Organization (optional)", h("input", { name: "organization_name" })),
    h("button", { type: "submit", text: "Create account" }),
  );
  const toggle = h("button", {
    type: "button",
    class: "link",
    id: "toggle-register",
    text: "No account yet? Create one",
    onclick: () => {
      register.hidden = !register.hidden;
      login.hidden = !login.hidden;
      toggle.textContent = register.hidden ? "No account yet? Create one" : "Have an account? Sign in";
      out.textContent = "";
    },
  });
  onSubmit(login, out, async (v) => {
    await api("POST", "/api/auth/login", v);
    await start();
  });
  onSubmit(register, out, async (v) => {
    if (!v.organization_name) delete v.organization_name;
    await api("POST", "/api/auth/register", v);
    await start();
  });
  view.replaceChildren(
    h("section", { class: "panel auth" }, h("h1", { text: "VoxFlow" }), login, register, toggle, out),
  );
}

// ---------------------------------------------------------------- agents

async function showAgents() {
  const out = message("agents-message");
  const table = h("tbody", { id: "agents-body" });
  const limits = h("p", { class: "muted", id: "agents-limit" });
  async function refresh() {
    const [list, usage] = await Promise.all([api("GET", "/api/agents?limit=100"), api("GET", "/api/auth/me")]);
    const u = usage.data.current_usage;
    limits.textContent = `${u.agent_count} of ${usage.data.max_agents} agents on the ${usage.data.subscription_tier} plan`;
    table.replaceChildren(
      ...list.data.map((a) =>
        h(
          "tr",
          {},
          h("td", { text: a.name }),
          h("td", { text: a.type }),
          h("td", { text: a.use_case }),
          h("td", { text: a.total_runs }),
          h(
            "td",
            {},
            h("a", { href: `#/call/${a.id}`, text: "Call" }),
            " ",
            h("button", {
              type: "button",
              class: "danger",
              text: "Delete",
              onclick: guarded(out, async () => {
                if (!confirm(`Delete ${a.name} and its runs?`)) return;
                await api("DELETE", `/api/agents/${a.id}`);
                await refresh();
              }),
            }),
          ),
        ),
      ),
    );
    if (list.data.length === 0) table.append(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No agents yet." })));
  }
  const form = h(
    "form",
    { id: "agent-form" },
    field("Name", h("input", { name: "name", required: true, maxlength: 255 })),
    field("Type", h("select", { name: "type" }, h("option", { text: "INBOUND" }), h("option", { text: "OUTBOUND" }))),
    field("Use case", h("input", { name: "use_case", required: true, maxlength: 255 })),
    field("Prompt (what the agent is and how it speaks, 10–5000 characters)", h("textarea", { name: "description", required: true, maxlength: 5000 })),
    h("button", { type: "submit", text: "Create agent" }),
  );
  onSubmit(form, out, async (v) => {
    try {
      await api("POST", "/api/agents", v);
    } catch (e) {
      const up = e.body.upgrade;
      if (e.body.code === "AGENT_LIMIT_REACHED" && up && up.message) throw new Error(`${e.message} ${up.message}`);
      throw e;
    }
    form.reset();
    say(out, "Agent created.", true);
    await refresh();
  });
  page(
    "Agents",
    h(
      "section",
      { class: "panel" },
      limits,
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Type", "Use case", "Runs", ""].map((t) => h("th", { text: t })))), table),
    ),
    h("section", { class: "panel" }, h("h2", { text: "New agent" }), form, out),
  );
  await refresh();
}

// ---------------------------------------------------------------- web call

async function showCall(agentId) {
  const agents = (await api("GET", "/api/agents?limit=100")).data;
  const out = message("call-message");
  const chat = h("div", { class: "chat", id: "chat" });
  const select = h("select", { id: "call-agent" }, agents.map((a) => h("option", { value: a.id, text: a.name })));
  if (agentId) select.value = agentId;
  const startButton = h("button", { type: "button", id: "call-start", text: "Start call" });
  const endButton = h("button", { type: "button", id: "call-end", class: "danger", text: "End call", disabled: true });
  const input = h("input", { name: "message", id: "call-input", placeholder: "Say something…", maxlength: 4000, disabled: true, required: true });
  const send = h("form", { id: "call-form", class: "row" }, input, h("button", { type: "submit", text: "Send", disabled: true }));
  let runId = null;
  const turn = (role, text) => {
    chat.append(h("div", { class: `turn ${role}`, text }));
    chat.scrollTop = chat.scrollHeight;
  };
  const live = (on) => {
    input.disabled = !on;
    send.querySelector("button").disabled = !on;
    endButton.disabled = !on;
    startButton.disabled = on;
    select.disabled = on;
  };
  startButton.addEventListener("click", async () => {
    out.textContent = "";
    chat.replaceChildren();
    try {
      const r = (await api("POST", "/api/calls/web/start", { agent_id: select.value })).data;
      runId = r.run_id;
      turn("assistant", r.greeting);
      say(out, `Call ${r.run_number} in progress.`, true);
      live(true);
      input.focus();
    } catch (e) {
      say(out, e.message);
      // Calls left open elsewhere (another tab, a closed browser) can be
      // ended from here, so the plan's concurrent calls free up at once.
      for (const live of e.body.in_progress || []) {
        out.append(
          " ",
          h("button", {
            type: "button",
            class: "secondary",
            text: `End ${live.run_number}`,
            onclick: guarded(out, async () => {
              await api("POST", "/api/calls/web/end", { run_id: live.run_id });
              say(out, `${live.run_number} ended; start the call again.`, true);
            }),
          }),
        );
      }
    }
  });
  onSubmit(send, out, async (v) => {
    turn("user", v.message);
    input.value = "";
    let r;
    try {
      r = (await api("POST", "/api/calls/web/message", { run_id: runId, message: v.message })).data;
    } catch (e) {
      // The month's tokens ran out mid-call: the server ended (and billed) it.
      const ended = e.body && e.body.code === "QUOTA_EXCEEDED" && e.body.run;
      if (ended) {
        live(false);
        throw new Error(`${e.message} Call ${ended.run_number}: ${ended.duration_seconds} s, ${ended.groq_tokens} tokens.`);
      }
      throw e;
    }
    turn("assistant", r.response);
  });
  endButton.addEventListener("click", async () => {
    try {
      const r = (await api("POST", "/api/calls/web/end", { run_id: runId })).data;
      live(false);
      say(out, `Call ${r.run_number} ended: ${r.duration_seconds} s, ${r.groq_tokens} tokens.`, true);
    } catch (e) {
      say(out, e.message);
    }
  });
  if (agents.length === 0) {
    page("Calls", h("section", { class: "panel" }, h("p", {}, "Create an agent first: ", h("a", { href: "#/agents", text: "Agents" }))));
    return;
  }
  const phoneOut = message("phone-message");
  const phoneForm = h(
    "form",
    { id: "phone-form", class: "row" },
    h("input", { name: "phone_number", id: "phone-number", placeholder: "+14155550123", required: true, maxlength: 20 }),
    h("button", { type: "submit", text: "Call this number" }),
  );
  onSubmit(phoneForm, phoneOut, async (v) => {
    const r = (await api("POST", "/api/calls/phone/start", { agent_id: select.value, phone_number: v.phone_number.trim() })).data;
    say(phoneOut, `Calling: ${r.run_number} (Twilio call ${r.call_sid}). The agent talks on the phone; the transcript is kept with the run.`, true);
  });
  page(
    "Calls",
    h("section", { class: "panel" }, h("h2", { text: "Web call" }), h("div", { class: "row" }, select, startButton, endButton), chat, send, out),
    h(
      "section",
      { class: "panel" },
      h("h2", { text: "Phone call" }),
      h("p", { class: "muted", text: "The selected agent calls this number through your Twilio account (pro and enterprise plans)." }),
      phoneForm,
      phoneOut,
    ),
  );
}

// ---------------------------------------------------------------- campaigns

async function showCampaigns() {
  const out = message("campaigns-message");
  const body = h("tbody", { id: "campaigns-body" });
  const agents = (await api("GET", "/api/agents?limit=100")).data;
  const actions = { created: ["start"], running: ["pause", "stop"], paused: ["resume", "stop"] };
  async function refresh() {
    const list = (await api("GET", "/api/campaigns?limit=100")).data;
    body.replaceChildren(
      ...list.map((c) =>
        h(
          "tr",
          { id: `campaign-${c.id}` },
          h("td", { text: c.name }),
          h("td", { class: "state", text: c.state }),
          h("td", { text: `${c.contacts.called} called, ${c.contacts.failed} failed, ${c.contacts.pending} pending` }),
          h(
            "td",
            {},
            (actions[c.state] || []).map((a) =>
              h("button", {
                type: "button",
                class: a === "stop" ? "danger" : "secondary",
                text: a,
                onclick: guarded(out, async () => {
                  await api("POST", `/api/campaigns/${c.id}/${a}`);
                  await refresh();
                }),
              }),
            ),
          ),
        ),
      ),
    );
    if (list.length === 0) body.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No campaigns yet." })));
  }
  const form = h(
    "form",
    { id: "campaign-form" },
    field("Name", h("input", { name: "name", required: true, minlength: 2, maxlength: 100 })),
    field("Agent", h("select", { name: "agent_id" }, agents.map((a) => h("option", { value: a.id, text: a.name })))),
    field("Contacts (CSV with a phone_number column; first_name and last_name optional; at most 10 MB)", h("input", { name: "file", type: "file", accept: ".csv,text/csv", required: true })),
    h("button", { type: "submit", text: "Import contacts" }),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.textContent = "";
    // multipart/form-data straight from the form: the browser sets the boundary.
    const res = await fetch("/api/campaigns", { method: "POST", body: new FormData(form), credentials: "same-origin" });
    const data = await res.json().catch(() => null);
    if (!res.ok || !data || !data.success) {
      const report = data && data.import ? ` (${data.import.rows} rows, none valid)` : "";
      say(out, `${(data && data.message) || `The server answered ${res.status}`}${report}`);
      return;
    }
    const imp = data.data.import;
    const bad = imp.invalid.map((i) => `row ${i.row}: ${i.reason}`).join("; ");
    say(out, `Imported ${imp.imported} of ${imp.rows} rows, ${imp.duplicates} duplicates dropped${bad ? `, skipped ${bad}` : ""}.`, true);
    form.reset();
    await refresh();
  });
  page(
    "Campaigns",
    h(
      "section",
      { class: "panel" },
      h("p", { class: "muted", text: "A running campaign calls its contacts one at a time through your Twilio account (pro and enterprise plans)." }),
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "State", "Contacts", ""].map((t) => h("th", { text: t })))), body),
      out,
    ),
    h("section", { class: "panel" }, h("h2", { text: "New campaign" }), form),
  );
  await refresh();
}

// ---------------------------------------------------------------- API keys

async function showKeys() {
  const out = message("keys-message");
  const body = h("tbody", { id: "keys-body" });
  async function refresh() {
    const status = (await api("GET", "/api/api-keys/status")).data;
    body.replaceChildren(
      ...["groq", "deepgram", "twilio"].map((p) => {
        const s = status[p] || {};
        return h(
          "tr",
          { id: `key-${p}` },
          h("td", { text: p }),
          h("td", { text: s.configured ? `yes (${s.source})` : "no" }),
          h("td", { text: s.masked || "" }),
          h("td", { text: s.last_used_at || "never" }),
          h(
            "td",
            {},
            h("button", {
              type: "button",
              class: "secondary",
              text: "Test",
              disabled: !s.configured,
              onclick: guarded(out, async () => {
                const r = (await api("POST", `/api/api-keys/${p}/test`)).data;
                say(out, `${p}: ${r.message}`, r.valid);
              }),
            }),
            " ",
            s.source === "user"
              ? h("button", {
                  type: "button",
                  class: "danger",
                  text: "Delete",
                  onclick: guarded(out, async () => {
                    await api("DELETE", `/api/api-keys/${p}`);
                    await refresh();
                  }),
                })
              : null,
          ),
        );
      }),
    );
  }
  const keyForm = (provider, label) => {
    const f = h(
      "form",
      { id: `${provider}-form`, class: "row" },
      h("input", { name: "api_key", type: "password", placeholder: label, required: true, autocomplete: "off" }),
      h("button", { type: "submit", text: `Save ${provider} key` }),
    );
    onSubmit(f, out, async (v) => {
      await api("POST", `/api/api-keys/${provider}`, v);
      f.reset();
      say(out, `${provider} key saved.`, true);
      await refresh();
    });
    return f;
  };
  const twilio = h(
    "form",
    { id: "twilio-form" },
    field("Account SID", h("input", { name: "account_sid", required: true })),
    field("Auth token", h("input", { name: "auth_token", type: "password", required: true, autocomplete: "off" })),
    field("From number (E.164, optional)", h("input", { name: "phone_number" })),
    h("button", { type: "submit", text: "Save Twilio credentials" }),
  );
  onSubmit(twilio, out, async (v) => {
    if (!v.phone_number) delete v.phone_number;
    await api("POST", "/api/api-keys/twilio", v);
    twilio.reset();
    say(out, "Twilio credentials saved.", true);
    await refresh();
  });
  page(
    "API keys",
    h(
      "section",
      { class: "panel" },
      h("p", { class: "muted", text: "Keys are stored encrypted and never shown again; without your own key the server's key is used, if it has one." }),
      h("table", {}, h("thead", {}, h("tr", {}, ["Provider", "Configured", "Key", "Last used", ""].map((t) => h("th", { text: t })))), body),
      out,
    ),
    h("section", { class: "panel" }, h("h2", { text: "Save a key" }), keyForm("groq", "gsk_…"), keyForm("deepgram", "40 hexadecimal characters"), twilio),
  );
  await refresh();
}

// ---------------------------------------------------------------- settings

async function showSettings() {
  const cfg = (await api("GET", "/api/config/service")).data;
  const out = message("settings-message");
  const provider = h(
    "select",
    { name: "llm_provider" },
    h("option", { value: "groq", text: "Groq" }),
    h("option", { value: "openai_compatible", text: "OpenAI-compatible server (self-hosted)" }),
  );
  provider.value = cfg.llm_provider;
  const baseUrl = h("input", { name: "llm_base_url", id: "llm-base-url", value: cfg.llm_base_url || "", placeholder: "http://10.0.0.5:8000/v1" });
  const form = h(
    "form",
    { id: "service-form" },
    field("LLM provider", provider),
    field("Base URL (OpenAI-compatible server)", baseUrl),
    field("LLM model", h("input", { name: "llm_model", value: cfg.llm_model, required: true })),
    field("Voice (TTS)", h("input", { name: "tts_voice", value: cfg.tts_voice, required: true })),
    field("Speech recognition model (STT)", h("input", { name: "stt_model", value: cfg.stt_model, required: true })),
    h("button", { type: "submit", text: "Save settings" }),
  );
  onSubmit(form, out, async (v) => {
    if (v.llm_provider !== "openai_compatible" && !v.llm_base_url) delete v.llm_base_url;
    await api("POST", "/api/config/service", v);
    say(out, "Settings saved.", true);
  });
  const pwOut = message("password-message");
  const pw = h(
    "form",
    { id: "password-form" },
    field("Current password", h("input", { name: "current_password", type: "password", required: true, autocomplete: "current-password" })),
    field("New password", h("input", { name: "new_password", type: "password", required: true, autocomplete: "new-password" })),
    h("button", { type: "submit", text: "Change password" }),
  );
  onSubmit(pw, pwOut, async (v) => {
    await api("POST", "/api/auth/change-password", v);
    pw.reset();
    say(pwOut, "Password changed; your other sessions were signed out.", true);
  });
  page(
    "Settings",
    h("section", { class: "panel" }, h("h2", { text: "Service" }), form, out),
    h("section", { class: "panel" }, h("h2", { text: "Password" }), pw, pwOut),
  );
}

// ---------------------------------------------------------------- usage

async function showUsage() {
  const d = (await api("GET", "/api/usage/dashboard")).data;
  const card = (label, value, id) => h("div", { class: "card", id }, h("b", { text: value }), label);
  const warn = d.warning === "none" ? null : h("p", { class: "error", text: `You have used ${d.warning}% or more of this month's tokens.` });
  page(
    "Usage this month",
    warn,
    h(
      "div",
      { class: "cards" },
      card("tokens used", `${d.tokens_used} / ${d.quota}`, "usage-tokens"),
      card("calls", d.calls, "usage-calls"),
      card("seconds of calls", d.duration, "usage-duration"),
      card("LLM costs (USD)", `$${d.costs.toFixed(6)}`, "usage-costs"),
      card("agents", `${d.agents.current} / ${d.agents.max}`, "usage-agents"),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", { text: "By day" }),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Date", "Calls", "Seconds", "Tokens", "LLM costs (USD)"].map((t) => h("th", { text: t })))),
        h(
          "tbody",
          {},
          d.daily
            .filter((x) => x.calls > 0 || x.costs > 0)
            .map((x) => h("tr", {}, [x.date, x.calls, x.duration_seconds, x.tokens, x.costs.toFixed(6)].map((t) => h("td", { text: t })))),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------- admin

async function showAdmin() {
  const out = message("admin-message");
  const body = h("tbody", { id: "users-body" });
  async function refresh() {
    const users = (await api("GET", "/api/admin/users?limit=100&sort_by=email&order=asc")).data;
    body.replaceChildren(
      ...users.map((u) =>
        h(
          "tr",
          {},
          h("td", { text: u.email }),
          h("td", { text: u.role }),
          h("td", { text: u.subscription_tier }),
          h("td", { text: `${u.agent_count} / ${u.max_agents}` }),
          h("td", { text: `${u.tokens_this_month} / ${u.monthly_token_quota}` }),
          h(
            "td",
            {},
            u.id === me.id
              ? h("span", { class: "muted", text: "you" })
              : h("button", {
                  type: "button",
                  class: u.is_active ? "danger" : "secondary",
                  text: u.is_active ? "Deactivate" : "Activate",
                  onclick: guarded(out, async () => {
                    await api("POST", `/api/admin/users/${u.id}/toggle-status`, { is_active: !u.is_active });
                    await refresh();
                  }),
                }),
          ),
        ),
      ),
    );
  }
  page(
    "Users",
    h(
      "section",
      { class: "panel" },
      h("table", {}, h("thead", {}, h("tr", {}, ["Email", "Role", "Tier", "Agents", "Tokens this month", ""].map((t) => h("th", { text: t })))), body),
      out,
    ),
  );
  await refresh();
}

// ---------------------------------------------------------------- routing

const routes = {
  agents: showAgents,
  call: showCall,
  campaigns: showCampaigns,
  keys: showKeys,
  settings: showSettings,
  usage: showUsage,
  admin: showAdmin,
};

function renderNav(current) {
  const links = [
    ["agents", "Agents"],
    ["call", "Calls"],
    ["campaigns", "Campaigns"],
    ["usage", "Usage"],
    ["keys", "API keys"],
    ["settings", "Settings"],
  ];
  if (me.role === "admin") links.push(["admin", "Users"]);
  nav.replaceChildren(...links.map(([r, label]) => h("a", { href: `#/${r}`, text: label, class: r === current ? "active" : null })));
}

async function route() {
  if (!me) return;
  const [, name = "agents", arg] = location.hash.split("/");
  const show = routes[name] || showAgents;
  renderNav(routes[name] ? name : "agents");
  try {
    await show(arg);
  } catch (e) {
    if (e.status !== 401) page("Something went wrong", h("p", { class: "error", text: e.message }));
  }
}

async function start() {
  try {
    me = (await api("GET", "/api/auth/me")).data;
  } catch {
    me = null;
    showLogin();
    return;
  }
  topbar.hidden = false;
  document.getElementById("who").textContent = me.email;
  await route();
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/auth/logout");
  } finally {
    me = null;
    location.hash = "";
    showLogin("Signed out.");
  }
});
window.addEventListener("hashchange", route);
start();
