// VoxFlow's web UI: plain ES modules, no build step, nothing loaded from
// outside the server. Hash routes (#/calls/{id}, #/admin/users/{id}, …) so
// that reload, back and deep links work; each page is a module of pages/.

import { api, whenSignedOut } from "./api.js";
import { h, failure } from "./view.js";
import showLogin from "./pages/login.js";
import dashboard from "./pages/dashboard.js";
import { callHistory, callDetail } from "./pages/calls.js";
import talk from "./pages/talk.js";
import reports from "./pages/reports.js";
import { agentList, agentEdit } from "./pages/agents.js";
import { campaignList, campaignDetail } from "./pages/campaigns.js";
import keys from "./pages/keys.js";
import settings from "./pages/settings.js";
import { userList, userDetail } from "./pages/admin/users.js";
import audit from "./pages/admin/audit.js";
import analytics from "./pages/admin/analytics.js";
import system from "./pages/admin/system.js";
import allAgents from "./pages/admin/agents.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const topbar = document.getElementById("topbar");
const menu = document.getElementById("menu");
let me = null;
let leaving = [];

// [pattern, page, nav entry it belongs to, admin only]
const routes = [
  ["dashboard", dashboard, "dashboard"],
  ["calls", callHistory, "calls"],
  ["calls/:id", callDetail, "calls"],
  ["talk", talk, "talk"],
  ["talk/:id", talk, "talk"],
  ["reports", reports, "reports"],
  ["agents", agentList, "agents"],
  ["agents/:id", agentEdit, "agents"],
  ["campaigns", campaignList, "campaigns"],
  ["campaigns/:id", campaignDetail, "campaigns"],
  ["keys", keys, "keys"],
  ["settings", settings, "settings"],
  // The first edition's routes, so old bookmarks still land.
  ["call", talk, "talk"],
  ["call/:id", talk, "talk"],
  ["usage", dashboard, "dashboard"],
  ["admin", userList, "admin/users", true],
  ["admin/users", userList, "admin/users", true],
  ["admin/users/:id", userDetail, "admin/users", true],
  ["admin/audit", audit, "admin/audit", true],
  ["admin/analytics", analytics, "admin/analytics", true],
  ["admin/system", system, "admin/system", true],
  ["admin/agents", allAgents, "admin/agents", true],
];

const tenantLinks = [
  ["dashboard", "Dashboard"],
  ["calls", "Calls"],
  ["talk", "Talk"],
  ["reports", "Reports"],
  ["agents", "Agents"],
  ["campaigns", "Campaigns"],
  ["keys", "API keys"],
  ["settings", "Settings"],
];
const adminLinks = [
  ["admin/users", "Users"],
  ["admin/audit", "Audit log"],
  ["admin/analytics", "Analytics"],
  ["admin/system", "System"],
  ["admin/agents", "All agents"],
];

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, page, section, adminOnly] of routes) {
    const want = pattern.split("/");
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(":") ? ((params[w.slice(1)] = decodeURIComponent(parts[i])), true) : w === parts[i]))) {
      return { page, section, adminOnly, params };
    }
  }
  return null;
}

function renderNav(current) {
  const item = ([r, name]) => h("a", { href: `#/${r}`, text: name, "aria-current": r === current ? "page" : null });
  const admin = me.role === "admin" ? [h("span", { class: "nav-group", "aria-hidden": "true", text: "Admin" }), ...adminLinks.map(item)] : [];
  nav.replaceChildren(...tenantLinks.map(item), ...admin);
}

function setMenu(open) {
  topbar.classList.toggle("open", open);
  menu.setAttribute("aria-expanded", String(open));
}

async function route() {
  if (!me) return;
  for (const fn of leaving) fn();
  leaving = [];
  setMenu(false);
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?");
  const found = match(path || "dashboard");
  if (!found || (found.adminOnly && me.role !== "admin")) {
    location.replace("#/dashboard");
    return;
  }
  renderNav(found.section);
  let token = {};
  const current = token;
  const ctx = {
    me,
    params: found.params,
    query: Object.fromEntries(new URLSearchParams(qs)),
    // Whether this page is still the one shown (a slow answer for a page
    // left meanwhile must not draw over the next one).
    alive: () => current === token,
    onLeave: (fn) => leaving.push(fn),
    // Sets the hash query; the page is drawn again from it.
    setQuery(q) {
      const s = new URLSearchParams(Object.entries(q).filter(([, v]) => v !== "" && v !== undefined && v !== null)).toString();
      location.hash = `#/${path}${s ? `?${s}` : ""}`;
    },
    page(title, ...content) {
      if (!ctx.alive()) return;
      document.title = `${title} · VoxFlow`;
      view.replaceChildren(h("h1", { id: "page-title", tabindex: "-1", text: title }), ...content.flat().filter((c) => c !== null && c !== undefined && c !== false));
    },
  };
  leaving.push(() => (token = null));
  try {
    await found.page(ctx);
  } catch (e) {
    if (e.status !== 401 && ctx.alive()) ctx.page("Something went wrong", failure(e));
  }
}

async function start() {
  try {
    me = (await api("GET", "/api/auth/me")).data;
  } catch {
    me = null;
    topbar.hidden = true;
    showLogin(view, null, start);
    return;
  }
  topbar.hidden = false;
  document.getElementById("who").textContent = me.email;
  await route();
}

whenSignedOut(() => {
  if (!me) return;
  me = null;
  topbar.hidden = true;
  showLogin(view, "Your session has ended; sign in again.", start);
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/auth/logout");
  } catch {
    // Signed out either way: the cookie is gone or the session was.
  }
  me = null;
  topbar.hidden = true;
  history.replaceState(null, "", "#/");
  showLogin(view, "Signed out.", start);
});
menu.addEventListener("click", () => setMenu(!topbar.classList.contains("open")));
window.addEventListener("hashchange", () => {
  // A hash change moves focus to the new page's title, for keyboards and screen readers.
  route().then(() => document.getElementById("page-title")?.focus({ preventScroll: true }));
});
start();
