// Campaigns: import contacts from a CSV file (with the dialing settings in
// "Advanced"), and one campaign with its progress, refreshed while it runs,
// its contacts and their states, the state changes and deletion.

import { api, get, upload } from "../api.js";
import { h, put, field, message, say, panel, table, link, loading, failure, num, when, label, cards, facts, pager, confirmDialog, action, showFieldErrors } from "../view.js";

const ACTIONS = { created: ["start"], running: ["pause", "stop"], paused: ["resume", "stop"] };
const CONTACT_STATES = ["pending", "dialing", "reached", "retrying", "failed"];
// While a campaign runs its page asks again this often.
const REFRESH_MS = 3000;

const progressText = (c) => `${num(c.reached)} reached, ${num(c.failed)} failed, ${num(c.pending + c.dialing + c.retrying)} to go of ${num(c.total)}`;

export async function campaignList(ctx) {
  const out = message("campaigns-message");
  const box = h("div", { id: "campaigns-list" }, loading());
  let agents = [];
  async function refresh() {
    try {
      const list = (await get("/api/campaigns", { limit: 100 })).data;
      put(box, 
        table(
          ["Name", "Agent", "State", "Contacts", "Created"],
          list.map((c) => [link(`#/campaigns/${c.id}`, c.name), c.agent_name, label(c.state), progressText(c.contacts), when(c.created_at)]),
          "No campaigns yet: import a CSV file below.",
          "Campaigns",
        ),
      );
    } catch (e) {
      put(box, failure(e));
    }
  }
  try {
    agents = (await get("/api/agents", { limit: 100 })).data;
  } catch (e) {
    ctx.page("Campaigns", failure(e));
    return;
  }
  const num0 = (name, min, max, hint) => field(label(name).replace(/^./, (c) => c.toUpperCase()), h("input", { name, type: "number", min, max, inputmode: "numeric" }), hint);
  const form = h(
    "form",
    { id: "campaign-form", novalidate: true },
    field("Name", h("input", { name: "name", required: true, minlength: 2, maxlength: 100 })),
    field("Agent", h("select", { name: "agent_id" }, agents.map((a) => h("option", { value: a.id, text: a.name })))),
    field("Contacts file", h("input", { name: "file", type: "file", accept: ".csv,text/csv", required: true }), "CSV with a phone_number column; first_name and last_name optional; at most 10 MB."),
    h(
      "details",
      { class: "advanced" },
      h("summary", { text: "Advanced: retries and calling hours" }),
      h(
        "fieldset",
        {},
        h("legend", { class: "sr-only", text: "Dialing settings" }),
        num0("max_retries", 0, 10, "0–10; default 2."),
        num0("retry_delay_seconds", 1, 604800, "Seconds before a retry, 1–604800; default 300."),
        num0("min_talk_seconds", 0, 3600, "Talk time that counts as reached, 0–3600; default 5."),
        field("Calling window start", h("input", { name: "window_start", type: "time" }), "Local time of the contact; set both or neither."),
        field("Calling window end", h("input", { name: "window_end", type: "time" })),
      ),
    ),
    h("button", { type: "submit", text: "Import contacts" }),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    out.textContent = "";
    form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
    const fd = new FormData(form);
    const errors = [];
    const name = String(fd.get("name") || "").trim();
    if (name.length < 2 || name.length > 100) errors.push({ field: "name", message: "must be 2–100 characters" });
    const file = fd.get("file");
    if (!file || !file.name) errors.push({ field: "file", message: "choose a CSV file" });
    if (!fd.get("agent_id")) errors.push({ field: "agent_id", message: "create an agent first" });
    if (Boolean(fd.get("window_start")) !== Boolean(fd.get("window_end"))) errors.push({ field: "window_end", message: "window_start and window_end go together" });
    if (errors.length) {
      showFieldErrors(form, errors);
      say(out, "Please correct the fields marked.");
      return;
    }
    for (const k of ["max_retries", "retry_delay_seconds", "min_talk_seconds", "window_start", "window_end"]) if (!fd.get(k)) fd.delete(k);
    button.disabled = true;
    try {
      const data = await upload("/api/campaigns", fd);
      const imp = data.data.import;
      const bad = imp.invalid.map((i) => `row ${i.row}: ${i.reason}`).join("; ");
      say(out, `Imported ${imp.imported} of ${imp.rows} rows, ${imp.duplicates} duplicates dropped${bad ? `, skipped ${bad}` : ""}.`, true);
      out.append(" ", link(`#/campaigns/${data.data.id}`, `Open ${data.data.name}`));
      form.reset();
      await refresh();
    } catch (e) {
      const rest = showFieldErrors(form, e.fields);
      const report = e.body.import ? ` (${e.body.import.rows} rows, none valid)` : "";
      say(out, `${[e.message, ...rest].join(" ")}${report}`);
    } finally {
      button.disabled = false;
    }
  });
  ctx.page(
    "Campaigns",
    panel(null, h("p", { class: "muted", text: "A running campaign calls its contacts one at a time through your Twilio account (pro and enterprise plans)." }), box, out),
    panel("New campaign", agents.length ? form : h("p", {}, link("#/agents", "Create an agent first"))),
  );
  await refresh();
}

export async function campaignDetail(ctx) {
  const id = encodeURIComponent(ctx.params.id);
  const q = ctx.query;
  const out = message("campaign-message");
  const head = h("div", { id: "campaign-progress" }, loading());
  const contactsBox = h("div", { id: "campaign-contacts" }, loading());
  const actionsBox = h("div", { class: "row", id: "campaign-actions" });
  let timer = null;
  ctx.onLeave(() => clearTimeout(timer));
  let title = "Campaign";
  // The buttons are drawn again only when the state changes, so a refresh
  // never swaps a button under the pointer.
  let shownState = null;

  async function draw() {
    clearTimeout(timer);
    let c, contacts;
    try {
      [c, contacts] = await Promise.all([get(`/api/campaigns/${id}`).then((r) => r.data), get(`/api/campaigns/${id}/contacts`, { page: q.page, limit: 25, status: q.status })]);
    } catch (e) {
      if (!ctx.alive()) return;
      put(head, failure(e));
      put(contactsBox, );
      return;
    }
    if (!ctx.alive()) return;
    if (title !== c.name) {
      title = c.name;
      document.getElementById("page-title").textContent = c.name;
      document.title = `${c.name} · VoxFlow`;
    }
    const p = c.progress;
    const done = p.reached + p.failed;
    const s = c.settings;
    put(head, 
      c.paused_reason ? h("div", { class: "banner warn-90", role: "alert", text: `Paused: ${c.paused_reason}` }) : null,
      facts([
        ["State", label(c.state)],
        ["Agent", link(`#/agents/${c.agent_id}`, c.agent_name)],
        ["Created", when(c.created_at)],
        ["Success rate", `${num(p.success_rate, 1)}% of ${num(done)} finished`],
      ]),
      h("progress", { max: p.total || 1, value: done, "aria-label": `Contacts finished: ${done} of ${p.total}` }),
      cards([
        ["pending", num(p.pending), "progress-pending"],
        ["dialing", num(p.dialing), "progress-dialing"],
        ["reached", num(p.reached), "progress-reached"],
        ["retrying", num(p.retrying), "progress-retrying"],
        ["failed", num(p.failed), "progress-failed"],
      ]),
      h("p", { class: "muted", id: "campaign-settings", text: `Up to ${s.max_retries} retries, ${s.retry_delay_seconds} s apart; reached after ${s.min_talk_seconds} s of talk; ${s.window_start && s.window_end ? `calls between ${s.window_start} and ${s.window_end} local time` : "calls at any hour"}.` }),
      c.state === "running" ? h("p", { class: "muted", text: "This page refreshes itself while the campaign runs." }) : null,
    );
    if (shownState !== c.state) {
      shownState = c.state;
      put(actionsBox, 
      ...(ACTIONS[c.state] || []).map((a) =>
        action(a[0].toUpperCase() + a.slice(1), out, async () => {
          if (a === "stop" && !(await confirmDialog(`Stop ${c.name}? A stopped campaign cannot be started again.`, "Stop campaign"))) return;
          await api("POST", `/api/campaigns/${id}/${a}`);
          shownState = null;
          say(out, `Campaign ${a === "stop" ? "stopped" : a === "pause" ? "paused" : "running"}.`, true);
          await draw();
        }, { class: a === "stop" ? "danger" : "secondary", id: `campaign-${a}` }),
      ),
      c.state === "running"
        ? null
        : action("Delete", out, async () => {
            if (!(await confirmDialog(`Delete ${c.name} and its ${c.contacts.total} contacts?`, "Delete campaign"))) return;
            await api("DELETE", `/api/campaigns/${id}`);
            location.hash = "#/campaigns";
          }, { class: "danger", id: "campaign-delete" }),
      );
    }
    put(contactsBox, 
      table(
        ["Phone", "Name", "State", "Attempts", "Next attempt", "Last outcome", "Call"],
        contacts.data.map((k) => [
          k.phone_number,
          [k.first_name, k.last_name].filter(Boolean).join(" ") || "—",
          h("span", { class: `status status-${k.status}`, text: label(k.status) }),
          num(k.attempts),
          k.next_attempt_at ? when(k.next_attempt_at) : "—",
          k.last_disposition ? label(k.last_disposition) : "—",
          k.agent_run_id ? link(`#/calls/${k.agent_run_id}`, "See the call") : "—",
        ]),
        q.status ? `No contact is ${q.status}.` : "No contacts.",
        "Contacts",
      ),
      pager(contacts.pagination, (page) => ctx.setQuery({ ...q, page })),
    );
    if (c.state === "running") timer = setTimeout(draw, REFRESH_MS);
  }

  const statusFilter = h("select", { id: "contact-status", name: "status" }, h("option", { value: "", text: "All states" }), CONTACT_STATES.map((s) => h("option", { value: s, text: label(s), selected: s === q.status })));
  statusFilter.addEventListener("change", () => ctx.setQuery({ status: statusFilter.value }));
  ctx.page(
    title,
    h("p", {}, link("#/campaigns", "← All campaigns")),
    panel("Progress", head, actionsBox, out),
    panel("Contacts", field("Show", statusFilter), contactsBox),
  );
  await draw();
}

