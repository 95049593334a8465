// Sign in, or register when registration is open: one form shown at a time.

import { api } from "../api.js";
import { h, put, field, message, say, onSubmit } from "../view.js";

const PASSWORD_RULE = "8–128 characters, with a lowercase letter, an uppercase letter and a digit";

// The API's password policy, checked before the request so the error
// appears beside the field at once.
function passwordProblem(p) {
  if (p.length < 8 || p.length > 128 || !/[a-z]/.test(p) || !/[A-Z]/.test(p) || !/[0-9]/.test(p)) return `must be ${PASSWORD_RULE}`;
  return null;
}

export default function showLogin(view, notice, signedIn) {
  document.title = "Sign in · VoxFlow";
  const out = message("auth-message");
  if (notice) say(out, notice, notice === "Signed out.");
  const login = h(
    "form",
    { id: "login-form", "aria-labelledby": "login-title", novalidate: true },
    h("h2", { id: "login-title", text: "Sign in" }),
    field("Email", h("input", { name: "email", type: "email", required: true, autocomplete: "username" })),
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "current-password" })),
    h("button", { type: "submit", text: "Sign in" }),
  );
  const register = h(
    "form",
    { id: "register-form", "aria-labelledby": "register-title", hidden: true, novalidate: true },
    h("h2", { id: "register-title", text: "Create an account" }),
    field("Email", h("input", { name: "email", type: "email", required: true, autocomplete: "username" })),
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" }), PASSWORD_RULE),
    field("Organization (optional)", h("input", { name: "organization_name", maxlength: 255 })),
    h("button", { type: "submit", text: "Create account" }),
  );
  const toggle = h("button", { type: "button", class: "link", id: "toggle-register", text: "No account yet? Create one" });
  toggle.addEventListener("click", () => {
    const toRegister = register.hidden;
    register.hidden = !toRegister;
    login.hidden = toRegister;
    toggle.textContent = toRegister ? "Have an account? Sign in" : "No account yet? Create one";
    out.textContent = "";
    (toRegister ? register : login).querySelector("input").focus();
  });
  const need = (v, form, names) => {
    const errors = names.filter((n) => !v[n]).map((n) => ({ field: n, message: "is required" }));
    if (errors.length) throw Object.assign(new Error("Please fill in the fields marked."), { fields: errors });
  };
  onSubmit(login, out, async (v) => {
    need(v, login, ["email", "password"]);
    await api("POST", "/api/auth/login", { email: v.email, password: new FormData(login).get("password") });
    await signedIn();
  });
  onSubmit(register, out, async (v) => {
    need(v, register, ["email", "password"]);
    const password = String(new FormData(register).get("password"));
    const bad = passwordProblem(password);
    if (bad) throw Object.assign(new Error("Please correct the fields marked."), { fields: [{ field: "password", message: bad }] });
    const body = { email: v.email, password };
    if (v.organization_name) body.organization_name = v.organization_name;
    await api("POST", "/api/auth/register", body);
    await signedIn();
  });
  put(view, h("section", { class: "panel auth" }, h("h1", { id: "page-title", tabindex: "-1", text: "VoxFlow" }), login, register, toggle, out));
}
