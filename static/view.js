// A small view helper: elements from data (always as text, never as HTML),
// the loading, empty and error states every page shows, forms that show the
// API's field errors beside the field, confirmations, paging and charts.

// h("tag", {attr: value, onclick: fn}, child, …): children are nodes or text.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = String(v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// ------------------------------------------------------------ formatting

const DASH = "—";
const isNone = (v) => v === null || v === undefined || v === "" || Number.isNaN(v);

export const num = (v, digits = 0) =>
  isNone(v) ? DASH : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
// Dollars to the cent; an LLM turn's cost is often a fraction of a cent,
// kept to the micro-dollar, so a small non-zero amount shows its digits
// instead of reading "$0.00".
export const money = (v) => {
  if (isNone(v)) return DASH;
  const n = Number(v);
  const digits = n > 0 && n < 0.01 ? 6 : 2;
  return `$${n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits })}`;
};
export const text = (v) => (isNone(v) ? DASH : String(v));

export function seconds(v) {
  if (isNone(v)) return DASH;
  const s = Math.round(Number(v));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function when(iso) {
  if (isNone(iso)) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export const label = (s) => (isNone(s) ? DASH : String(s).replaceAll("_", " "));

// ------------------------------------------------------------ page states

export const loading = (what = "Loading…") => h("p", { class: "state loading", role: "status", text: what });
export const empty = (what) => h("p", { class: "state empty", text: what });

export function failure(e) {
  const box = h("div", { class: "state failure", role: "alert" }, h("strong", { text: "Could not load this. " }), e && e.message ? e.message : String(e));
  return box;
}

// Shows a loading state in `box`, then what `load()` returns, or the error.
export async function fill(box, load) {
  box.replaceChildren(loading());
  try {
    const content = await load();
    box.replaceChildren(...[content].flat().filter((c) => c !== null && c !== undefined));
  } catch (e) {
    if (e && e.status === 401) return;
    box.replaceChildren(failure(e));
  }
}

// ------------------------------------------------------------ layout

export const panel = (title, ...content) =>
  h("section", { class: "panel" }, title ? h("h2", { text: title }) : null, ...content);

export function cards(items) {
  return h(
    "div",
    { class: "cards" },
    items.map(([name, value, id]) => h("div", { class: "card", id }, h("span", { class: "card-value", text: value }), h("span", { class: "card-label", text: name }))),
  );
}

// A definition list of [name, value] pairs; values that are null are left out.
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, v]) => !isNone(v))
      .map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v instanceof Node ? v : String(v)))),
  );
}

// A table in a scrolling wrapper (wide tables scroll inside, not the page).
// `rows` are arrays of cells (text or nodes); `empty` is shown when there are none.
export function table(headers, rows, emptyText = "Nothing here yet.", caption) {
  if (rows.length === 0) return empty(emptyText);
  return h(
    "div",
    // Focusable, so a keyboard can scroll a table wider than the screen.
    { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption || headers.filter(Boolean).slice(0, 3).join(", ") },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only", text: caption }) : null,
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t ? t : h("span", { class: "sr-only", text: "Actions" }))))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c instanceof Node ? c : text(c)))))),
    ),
  );
}

export const link = (href, t, props = {}) => h("a", { href, ...props, text: t });

// ------------------------------------------------------------ forms

let fieldSeq = 0;

// A labelled input with a place for its error, linked by aria-describedby.
export function field(labelText, input, hint) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  const err = h("span", { class: "field-error", id: `${id}-error`, role: "alert" });
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint`, text: hint }) : null;
  input.setAttribute("aria-describedby", [hintEl ? hintEl.id : null, err.id].filter(Boolean).join(" "));
  return h("div", { class: "field" }, h("label", { for: id, text: labelText }), input, hintEl, err);
}

export const message = (id) => h("p", { id, class: "message", role: "status", "aria-live": "polite" });

export function say(el, t, ok = false) {
  el.textContent = t;
  el.className = `message ${ok ? "ok" : "error"}`;
}

export function values(form) {
  const v = {};
  for (const [k, val] of new FormData(form).entries()) if (typeof val === "string") v[k] = val.trim();
  return v;
}

function clearErrors(form) {
  for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

// Puts each of the API's field errors beside its field; returns those
// that have no field in the form.
export function showFieldErrors(form, errors) {
  const rest = [];
  for (const { field: name, message: msg } of errors) {
    const input = name && form.elements.namedItem(name);
    const err = input && input.id && document.getElementById(`${input.id}-error`);
    if (err) {
      err.textContent = msg;
      input.setAttribute("aria-invalid", "true");
    } else rest.push(name ? `${name} ${msg}` : msg);
  }
  return rest;
}

// Runs `action(values)` on submit with the submit button disabled; the
// API's errors go beside their fields, other failures into `out`.
export function onSubmit(form, out, action) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach((b) => (b.disabled = true));
    clearErrors(form);
    out.textContent = "";
    out.className = "message";
    try {
      await action(values(form));
    } catch (e) {
      const rest = showFieldErrors(form, e.fields || []);
      const firstBad = form.querySelector("[aria-invalid=true]");
      if (firstBad) firstBad.focus();
      say(out, rest.length || !(e.fields || []).length ? [e.message, ...rest.filter((r) => r !== e.message)].join(" ") : "Please correct the fields marked.");
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

// A button whose click runs `fn` with the button disabled; failures go to `out`.
export function action(textLabel, out, fn, props = {}) {
  const b = h("button", { type: "button", class: "secondary", ...props, text: textLabel });
  b.addEventListener("click", async () => {
    b.disabled = true;
    if (out) out.textContent = "";
    try {
      await fn();
    } catch (e) {
      if (out) say(out, e.message);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// A modal confirmation (a <dialog>): resolves true when confirmed.
export function confirmDialog(question, confirmText = "Confirm", danger = true) {
  return new Promise((resolve) => {
    const title = h("h2", { id: "confirm-title", text: "Please confirm" });
    const ok = h("button", { type: "button", id: "confirm-ok", class: danger ? "danger" : "", text: confirmText });
    const cancel = h("button", { type: "button", id: "confirm-cancel", class: "secondary", text: "Cancel" });
    const dlg = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" }, title, h("p", { text: question }), h("div", { class: "row" }, ok, cancel));
    const done = (answer) => {
      dlg.close();
      dlg.remove();
      resolve(answer);
    };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      done(false);
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// "Page 2 of 5" with previous and next; `go(page)` shows another page.
export function pager(p, go) {
  if (!p || p.pages <= 1) return p ? h("p", { class: "muted pager", text: `${num(p.total)} in all` }) : null;
  const prev = h("button", { type: "button", class: "secondary", text: "Previous", disabled: p.page <= 1, onclick: () => go(p.page - 1) });
  const next = h("button", { type: "button", class: "secondary", text: "Next", disabled: p.page >= p.pages, onclick: () => go(p.page + 1) });
  return h("nav", { class: "row pager", "aria-label": "Pages" }, prev, h("span", { text: `Page ${p.page} of ${p.pages} (${num(p.total)} in all)` }), next);
}

// ------------------------------------------------------------ charts

// Vertical bars over a series: [{label, value}], hand-written (no library).
// The heights are set through the CSSOM, which the CSP allows.
export function barChart(title, points, format = (v) => num(v, 2)) {
  const max = Math.max(0, ...points.map((p) => Number(p.value) || 0));
  const total = points.reduce((s, p) => s + (Number(p.value) || 0), 0);
  const bars = h("div", { class: "bars", role: "img", "aria-label": `${title}: ${points.length} values, total ${format(total)}, highest ${format(max)}` });
  for (const p of points) {
    const bar = h("div", { class: "bar", title: `${p.label}: ${format(p.value)}` });
    bar.style.height = max > 0 ? `${Math.max(((Number(p.value) || 0) / max) * 100, p.value ? 2 : 0)}%` : "0";
    bars.append(h("div", { class: "bar-slot" }, bar));
  }
  const first = points[0];
  const last = points[points.length - 1];
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, h("span", { text: title }), h("span", { class: "muted", text: ` highest ${format(max)}` })),
    bars,
    first ? h("div", { class: "axis muted" }, h("span", { text: first.label }), h("span", { text: last.label })) : null,
  );
}

// Horizontal bars for categories: [{label, value}].
export function categoryChart(title, points, format = (v) => num(v)) {
  const max = Math.max(0, ...points.map((p) => Number(p.value) || 0));
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", { text: title }),
    points.length === 0
      ? empty("No data yet.")
      : h(
          "div",
          { class: "hbars" },
          points.map((p) => {
            const fillEl = h("span", { class: "hbar-fill" });
            fillEl.style.width = max > 0 ? `${((Number(p.value) || 0) / max) * 100}%` : "0";
            return h("div", { class: "hbar" }, h("span", { class: "hbar-label", text: label(p.label) }), h("span", { class: "hbar-track" }, fillEl), h("span", { class: "hbar-value", text: format(p.value) }));
          }),
        ),
  );
}

// replaceChildren that skips null, undefined and false (the DOM's own
// would print them as text).
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Shows `title` with a loading state, then awaits `request`: its value, or
// null once the page shows the error instead.
export async function loadOrFail(ctx, title, request, ...after) {
  ctx.page(title, loading());
  try {
    return await request;
  } catch (e) {
    ctx.page(title, failure(e), ...after);
    return null;
  }
}
