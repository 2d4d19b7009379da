// The bench page (served by the agent; see wipeagent/control/page.py).
// Plain modern JavaScript, no framework, no outside assets. Every text a technician reads
// goes through _() (extracted by pybabel, translated in wipeagent/i18n/locale); values
// that come from phones or people (names, serials, slots) are set with textContent only.
"use strict";

const state = {
  session: null, csrf: "-", instance: null, lang: "en",
  messages: {}, codes: {}, slots: new Map(), header: null,
  connected: false, selected: null, serverOffsetMs: 0, toastTimer: null,
};

function _(msgid) { return state.messages[msgid] || msgid; }
function fmt(text, params) {
  return text.replace(/%\((\w+)\)s/g, (m, k) => (k in params ? String(params[k]) : m));
}
// A translated sentence whose values (slots, serials, IMEIs, names) stay raw text nodes.
function fmtRaw(text, params) {
  const out = [];
  let last = 0;
  text.replace(/%\((\w+)\)s/g, (m, k, at) => {
    out.push(text.slice(last, at), k in params ? raw(String(params[k])) : m);
    last = at + m.length;
    return m;
  });
  out.push(text.slice(last));
  return out.filter((part) => part !== "");
}
function code(table, key) {
  const t = state.codes[table] || {};
  return t[key] || key;
}

// -- DOM helpers ---------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// Text that comes from a phone, a person or the configuration: never translated.
function raw(text, cls) { return h("span", { class: "raw " + (cls || "") }, text); }

// -- server --------------------------------------------------------------------------
function requestId() {
  const a = new Uint8Array(18);
  crypto.getRandomValues(a);
  return btoa(String.fromCharCode(...a)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf,
               "X-Request-Id": requestId() },
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) { await loadSession(); render(); }
    const err = new Error(data.message || ("HTTP " + response.status));
    err.code = data.error || "http_" + response.status;
    throw err;
  }
  return data;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) { await loadSession(); render(); }
    const err = new Error(data.message || ("HTTP " + response.status));
    err.code = data.error || "http_" + response.status;
    throw err;
  }
  return data;
}

async function loadSession() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  state.session = await response.json();
  state.csrf = state.session.csrf;
  state.instance = state.session.instance;
}

async function loadCatalogue(lang) {
  const response = await fetch("/api/i18n/" + encodeURIComponent(lang));
  const data = await response.json();
  state.messages = data.messages || {};
  state.codes = data.codes || {};
  state.lang = lang;
  document.documentElement.lang = lang;
  document.title = _("Bench") + " " + (state.session ? state.session.station_id : "");
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", async (ev) => {
    const data = JSON.parse(ev.data);
    if (state.instance !== data.instance) {
      // The agent restarted: new CSRF key, sign-ins gone; ask again.
      await loadSession();
    }
    state.slots = new Map(data.slots.map((s) => [s.slot, s]));
    setHeader(data);
    state.connected = true;
    render();
  });
  source.addEventListener("slot", (ev) => {
    const entry = JSON.parse(ev.data);
    state.slots.set(entry.slot, entry);
    updateTile(entry);
    renderSide();
    if (state.selected === entry.slot) renderDetail();
  });
  source.addEventListener("header", (ev) => { setHeader(JSON.parse(ev.data)); renderTop(); });
  source.onerror = () => {
    if (state.connected) { state.connected = false; renderTop(); }
  };
}

function setHeader(data) {
  state.header = data;
  if (data.server_time) state.serverOffsetMs = Date.parse(data.server_time) - Date.now();
}

// -- actions -------------------------------------------------------------------------
async function act(label, fn) {
  try {
    const result = await fn();
    return result;
  } catch (err) {
    const known = err.code && state.codes.errors && state.codes.errors[err.code];
    toast(label + ": " + (known || err.message || err), true);
    return null;
  }
}

function needSignIn() {
  if (state.session && state.session.operator) return false;
  openSignIn();
  return true;
}

async function confirmSlot(slot) {
  if (needSignIn()) return;
  const s = state.slots.get(slot);
  const ok = await act(_("Confirm"), () => post("/api/slots/" + encodeURIComponent(slot) + "/confirm",
    { session_id: s.session_id, serial: s.phone ? s.phone.serial : null }));
  if (ok) toast(fmtRaw(_("Erase confirmed on %(slot)s"), { slot: label(slot) }));
}

async function confirmAll() {
  if (needSignIn()) return;
  const waiting = [...state.slots.values()].filter((s) => s.awaiting_confirmation);
  if (!waiting.length) return;
  const expected = {};
  for (const s of waiting) expected[s.slot] = { session_id: s.session_id, serial: s.phone ? s.phone.serial : undefined };
  const result = await act(_("Confirm all waiting"), () => post("/api/confirm",
    { slots: waiting.map((s) => s.slot), expected }));
  if (result) {
    toast(fmt(_("%(n)s erases confirmed"), { n: result.confirmed.length }) +
      (result.refused.length ? " · " + fmt(_("%(n)s refused"), { n: result.refused.length }) : ""),
      result.refused.length > 0);
  }
}

async function abortSlot(slot) {
  if (needSignIn()) return;
  const s = state.slots.get(slot);
  if (!window.confirm(fmt(_("Do not erase the phone on %(slot)s?"), { slot: label(slot) }))) return;
  await act(_("Do not erase"), () => post("/api/slots/" + encodeURIComponent(slot) + "/abort",
    { session_id: s.session_id, serial: s.phone ? s.phone.serial : null }));
}

async function manualStep(slot, index) {
  if (needSignIn()) return;
  const s = state.slots.get(slot);
  await act(_("Step done"), () => post("/api/slots/" + encodeURIComponent(slot) + "/manual-step",
    { step: index, session_id: s.session_id }));
}

async function identify(slot) {
  if (needSignIn()) return;
  const result = await act(_("Identify"), () => post("/api/slots/" + encodeURIComponent(slot) + "/identify", {}));
  if (result) {
    toast(result.woke ? fmtRaw(_("The phone on %(slot)s lit its screen"), { slot: label(slot) })
      : fmtRaw(_("Look for serial %(serial)s on %(slot)s"), { serial: result.serial || "?", slot: label(slot) }));
  }
}

// A scanned barcode. With a tile selected, the slot goes along: an IMEI then answers that
// phone if it waits for one (otherwise the only phone waiting for an IMEI takes it; with
// several waiting, the agent asks to select the phone's tile first).
async function scan(text, slot) {
  const value = text.trim();
  if (!value) return null;
  if (needSignIn()) return null;
  const target = slot || state.selected;
  const s = target ? state.slots.get(target) : null;
  const result = await act(_("Scan"), () => post("/api/scan", {
    code: value, slot: target || null, session_id: s ? s.session_id : null }));
  if (!result) return null;
  if (result.imei_entered) {
    const done = result.imei_entered;
    toast([fmtRaw(_("IMEI %(imei)s entered for the phone on %(slot)s"),
      { imei: done.imeis.join(", "), slot: label(done.slot) }),
      result.booked && result.booked.reference
        ? [" · ", fmtRaw(_("Booked in: %(id)s"), { id: result.booked.reference })] : []]);
  } else if (result.booked) {
    toast([fmtRaw(_("Booked in: %(id)s"), { id: result.booked.identifier }),
      result.reference ? [" (", raw(result.reference), ")"] : []]);
  } else if (result.reference) {
    toast(fmtRaw(_("Booking reference %(ref)s: now scan the phone's IMEI"), { ref: result.reference }));
  }
  return result;
}

// The IMEI field of a tile whose phone will not give its IMEI: one code goes the way of a
// scan (a booking reference scanned first books it in too); two IMEIs (a dual-SIM phone)
// are that phone's IMEIs.
async function enterImeis(slot, text) {
  const codes = text.split(/[\s,;]+/).filter(Boolean);
  if (!codes.length) return false;
  if (needSignIn()) return false;
  if (codes.length === 1) {
    const result = await scan(codes[0], slot);
    return Boolean(result && (result.imei_entered || result.reference));
  }
  const s = state.slots.get(slot);
  const done = await act(_("Enter IMEI"), () => post("/api/slots/" + encodeURIComponent(slot) + "/imei",
    { imeis: codes, session_id: s.session_id, serial: s.phone ? s.phone.serial : null }));
  if (done) toast(fmtRaw(_("IMEI %(imei)s entered for the phone on %(slot)s"), { imei: done.imeis.join(", "), slot: label(slot) }));
  return Boolean(done);
}

async function noImei(slot) {
  if (needSignIn()) return;
  const s = state.slots.get(slot);
  if (!window.confirm(fmt(_("The phone on %(slot)s has no IMEI (a device without a modem)?"), { slot: label(slot) }))) return;
  const done = await act(_("No IMEI"), () => post("/api/slots/" + encodeURIComponent(slot) + "/imei",
    { imeis: [], session_id: s.session_id, serial: s.phone ? s.phone.serial : null }));
  if (done) toast(fmtRaw(_("Recorded: the phone on %(slot)s has no IMEI"), { slot: label(slot) }));
}

// The technician's word that the phone was reset once more (policy final_reset): an
// attestation in their name, so it is asked for deliberately.
async function finalResetDone(slot) {
  if (needSignIn()) return;
  const s = state.slots.get(slot);
  if (!window.confirm(fmt(_("Did you reset the phone on %(slot)s from Settings and leave it at the setup wizard?"), { slot: label(slot) }))) return;
  const done = await act(_("Final reset done"), () => post("/api/slots/" + encodeURIComponent(slot) + "/handoff",
    { session_id: s.session_id, serial: s.phone ? s.phone.serial : null }));
  if (done) toast(fmtRaw(_("Final reset of the phone on %(slot)s recorded in the name of %(operator)s"), { slot: label(slot), operator: done.attested_by }));
}

async function signIn(name, secret) {
  const result = await act(_("Sign in"), () => post("/api/login", { operator: name, secret }));
  await loadSession();
  render();
  return result !== null;
}

async function signOut() {
  await act(_("Sign out"), () => post("/api/logout", {}));
  await loadSession();
  render();
}

// -- layout --------------------------------------------------------------------------
function label(slot) {
  const labels = (state.session && state.session.layout.labels) || {};
  return labels[slot] || slot;
}

// Tiles in the bench's physical order: configured positions first, the rest filling the
// free cells in slot order. Configured positions with no phone show as empty ports.
// The configured columns when the bench has a configured layout; otherwise as many as
// keep a few phones readable (12 phones: 5 columns; 128 phones: the configured 12).
function gridColumns() {
  const layout = state.session.layout;
  if (Object.keys(layout.positions || {}).length) return layout.columns;
  const n = Math.max(1, state.slots.size);
  return Math.max(1, Math.min(layout.columns, Math.max(4, Math.ceil(Math.sqrt(n * 1.8)))));
}

function placement() {
  const layout = state.session.layout;
  const columns = gridColumns();
  const taken = new Set();
  const placed = [];
  const bySlot = new Map();
  for (const [slot, [row, col]] of Object.entries(layout.positions || {})) {
    const name = [...state.slots.keys()].find((s) => s === slot || label(s) === slot) || slot;
    if (bySlot.has(name)) continue;
    bySlot.set(name, true);
    taken.add(row + ":" + col);
    placed.push({ slot: name, row, col });
  }
  let cursor = 0;
  const rest = [...state.slots.keys()].filter((s) => !bySlot.has(s)).sort(naturalOrder);
  for (const slot of rest) {
    let row, col;
    do { row = Math.floor(cursor / columns) + 1; col = (cursor % columns) + 1; cursor++; }
    while (taken.has(row + ":" + col));
    taken.add(row + ":" + col);
    placed.push({ slot, row, col });
  }
  return placed;
}

function naturalOrder(a, b) {
  return label(a).localeCompare(label(b), undefined, { numeric: true });
}

function elapsed(since) {
  if (!since) return "";
  const ms = Date.now() + state.serverOffsetMs - Date.parse(since);
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  const hh = Math.floor(m / 60);
  if (hh) return hh + ":" + String(m % 60).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
  return m + ":" + String(s % 60).padStart(2, "0");
}

function phoneName(s) {
  if (!s.phone) return null;
  return s.phone.name || (s.phone.manufacturer + " " + s.phone.model);
}

function outcomeText(s) {
  if (s.outcome === "not_erased") return (s.codes || []).map((c) => code("reasons", c));
  // Exceptions: "manual_reset", "handoff_failed", "check_warning:<check id>".
  // The check's id is an identifier, shown as it is (raw), inside the translated sentence.
  return (s.exception_codes || []).map((c) => {
    const [name, arg] = c.split(":");
    if (!arg) return code("exceptions", name);
    const [before, after] = code("exceptions", name).split("%(check)s");
    return h("span", {}, before, raw(arg), after || "");
  });
}

function needText(s) {
  if (!s.need) return "";
  return code("needs", s.need);
}

// -- rendering -----------------------------------------------------------------------
function render() {
  const app = document.getElementById("app");
  app.replaceChildren(
    h("header", { id: "top" }),
    h("div", { id: "banners" }),
    h("main", {},
      h("section", { id: "grid", "aria-label": _("Bench slots") }),
      h("aside", { id: "side" })),
    h("div", { id: "detail", class: "hidden" }),
    h("div", { id: "dialog", class: "hidden" }),
    h("div", { id: "toast", class: "hidden", role: "status" }));
  renderTop();
  renderGrid();
  renderSide();
  renderDetail();
}

function renderTop() {
  const top = document.getElementById("top");
  if (!top || !state.session) return;
  const c = (state.header && state.header.counts) || {};
  const waiting = [...state.slots.values()].filter((s) => s.awaiting_confirmation).length;
  const count = (key) => h("div", { class: "count " + key, dataset: { state: key } },
    h("span", { class: "n" }, String(c[key] || 0)), h("span", { class: "what" }, code("states", key)));
  const operator = state.session.operator;
  top.replaceChildren(...[
    h("div", { class: "station" },
      h("div", { class: "brand" }, _("Bench")), raw(state.session.station_id, "station-id")),
    h("div", { class: "counts" }, ["working", "needs_you", "erased", "not_erased", "failed"].map(count)),
    h("div", { class: "tools" },
      h("button", { id: "confirm-all", class: "primary", disabled: waiting === 0, onclick: confirmAll },
        fmt(_("Confirm all waiting (%(n)s)"), { n: waiting })),
      h("button", { id: "intake", onclick: openIntake }, _("Booked in")),
      h("input", { id: "scan", type: "text", autocomplete: "off", spellcheck: "false",
        placeholder: _("Scan IMEI or booking reference"), "aria-label": _("Scan IMEI or booking reference"),
        onkeydown: (e) => { if (e.key === "Enter") { scan(e.target.value); e.target.value = ""; } } }),
      h("select", { id: "lang", "aria-label": _("Language"), onchange: (e) => switchLanguage(e.target.value) },
        // Each language's name in that language (an endonym), never translated.
        state.session.languages.map((l) => h("option", { value: l, class: "raw", selected: l === state.lang },
          l === "zh-CN" ? "中文" : "English"))),
      operator
        ? h("div", { class: "operator" }, h("span", { class: "who" }, _("Signed in:"), " ", raw(operator)),
          h("button", { id: "sign-out", onclick: signOut }, _("Sign out")))
        : h("button", { id: "sign-in", class: "primary", onclick: openSignIn }, _("Sign in"))),
  ].filter(Boolean));
  // Banners in the page's flow (never over the tiles): the agent unreachable, and what
  // the phone sources report about themselves (usbmuxd not running ...).
  const banners = document.getElementById("banners");
  banners.replaceChildren(...[
    state.connected ? null : h("div", { id: "offline", class: "offline" },
      _("Connection to the agent lost, reconnecting…")),
    ...((state.header && state.header.notices) || []).map((n) => h("div", { class: "source-notice" },
      fmt(_("Phone source %(source)s:"), { source: n.source }), " ", raw(n.message))),
  ].filter(Boolean));
  document.getElementById("app").classList.toggle("stale", !state.connected);
}

function renderGrid() {
  const grid = document.getElementById("grid");
  if (!grid || !state.session) return;
  const columns = gridColumns();
  const cells = placement();
  const rows = Math.max(1, ...cells.map((p) => p.row));
  grid.style.gridTemplateColumns = "repeat(" + columns + ", minmax(0, 1fr))";
  // Rows share the height, but a tile never grows taller than a phone needs.
  const height = Math.max(60, Math.min(170, Math.floor((grid.clientHeight - 16) / rows) - 6));
  grid.style.gridTemplateRows = "repeat(" + rows + ", " + height + "px)";
  grid.dataset.density = rows * columns > 96 ? "dense" : rows * columns > 48 ? "compact" : "roomy";
  grid.replaceChildren(...cells.map((p) => {
    const tile = tileFor(p.slot);
    tile.style.gridRow = String(p.row);
    tile.style.gridColumn = String(p.col);
    return tile;
  }));
  if (!cells.length) grid.append(h("p", { class: "empty-bench" }, _("No phones yet: plug phones into the bench.")));
}

function tileFor(slot) {
  const s = state.slots.get(slot) || { slot, state: "empty", step: "waiting" };
  const tile = h("button", {
    class: "tile " + s.state + (s.identify ? " identify" : "") + (state.selected === slot ? " selected" : ""),
    dataset: { slot, state: s.state }, onclick: () => select(slot),
    "aria-label": label(slot),
  });
  fillTile(tile, s);
  return tile;
}

function fillTile(tile, s) {
  const name = phoneName(s);
  const parts = [
    h("div", { class: "tile-head" }, raw(label(s.slot), "slot"),
      s.running ? h("span", { class: "since", dataset: { since: s.step_since } }, elapsed(s.step_since)) : null),
    h("div", { class: "phone" }, name ? raw(name)
      : h("span", { class: "muted" }, s.state === "empty" ? code("states", "empty") : _("phone not identified"))),
  ];
  if (s.state === "needs_you") {
    parts.push(h("div", { class: "need" }, needText(s)));
  } else if (s.running) {
    parts.push(h("div", { class: "step" }, code("steps", s.step)));
    parts.push(h("div", { class: "bar" }, h("div", { class: "fill", style: { width: Math.round(s.progress * 100) + "%" } })));
  } else if (s.outcome) {
    parts.push(h("div", { class: "outcome" }, code("outcomes", s.outcome)));
    const why = outcomeText(s);
    if (why.length) parts.push(h("div", { class: "why" }, why[0]));
  } else if (s.state === "empty" && s.step !== "waiting") {
    parts.push(h("div", { class: "step" }, code("steps", s.step)));
  }
  if (s.identify && s.phone) parts.push(h("div", { class: "serial" }, raw(s.phone.serial)));
  tile.replaceChildren(...parts);
}

function updateTile(entry) {
  const grid = document.getElementById("grid");
  if (!grid) return;
  const old = grid.querySelector('[data-slot="' + CSS.escape(entry.slot) + '"]');
  if (!old) { renderGrid(); renderTop(); return; }
  const fresh = tileFor(entry.slot);
  fresh.style.gridRow = old.style.gridRow;
  fresh.style.gridColumn = old.style.gridColumn;
  old.replaceWith(fresh);
  const waiting = [...state.slots.values()].filter((s) => s.awaiting_confirmation).length;
  const button = document.getElementById("confirm-all");
  if (button) {
    button.disabled = waiting === 0;
    button.textContent = fmt(_("Confirm all waiting (%(n)s)"), { n: waiting });
  }
}

function renderSide() {
  const side = document.getElementById("side");
  if (!side) return;
  const needing = [...state.slots.values()].filter((s) => s.state === "needs_you").sort((a, b) => naturalOrder(a.slot, b.slot));
  side.replaceChildren(...[
    h("h2", {}, fmt(_("Needs you (%(n)s)"), { n: needing.length })),
    needing.length ? null : h("p", { class: "muted" }, _("Nothing to do: every phone is working or finished.")),
    h("ol", { class: "needs" }, needing.map((s) => h("li", { class: "need-item", dataset: { slot: s.slot } },
      h("div", { class: "need-head" }, raw(label(s.slot), "slot"), " ", phoneName(s) ? raw(phoneName(s)) : null),
      h("div", { class: "need-text" }, needText(s)),
      h("div", { class: "need-actions" },
        s.awaiting_confirmation ? h("button", { class: "primary confirm", onclick: () => confirmSlot(s.slot) }, _("Confirm erase")) : null,
        s.awaiting_confirmation ? h("button", { class: "abort", onclick: () => abortSlot(s.slot) }, _("Do not erase")) : null,
        s.need === "enter_imei" ? h("button", { class: "primary enter-imei", onclick: () => select(s.slot, true) }, _("Enter IMEI")) : null,
        s.need === "final_reset" ? h("button", { class: "primary final-reset", onclick: () => finalResetDone(s.slot) }, _("Final reset done")) : null,
        s.running ? h("button", { class: "identify-btn", onclick: () => identify(s.slot) }, _("Identify")) : null,
        h("button", { onclick: () => select(s.slot) }, _("Details")))))),
  ].filter(Boolean));
}

function select(slot, open) {
  state.selected = state.selected === slot && !open ? null : slot;
  for (const t of document.querySelectorAll(".tile.selected")) t.classList.remove("selected");
  if (state.selected) {
    const t = document.querySelector('.tile[data-slot="' + CSS.escape(slot) + '"]');
    if (t) t.classList.add("selected");
  }
  renderDetail();
  // A phone waiting for its IMEI: the scanner types into its field.
  const field = document.getElementById("imei-input");
  if (field) field.focus();
}

function renderDetail() {
  const panel = document.getElementById("detail");
  if (!panel) return;
  const s = state.selected && state.slots.get(state.selected);
  if (!s) { panel.className = "hidden"; panel.replaceChildren(); return; }
  // A live update of this slot must not lose what the technician is typing.
  const typing = document.getElementById("imei-input");
  const typed = typing ? typing.value : "";
  const focused = typing !== null && document.activeElement === typing;
  panel.className = "detail " + s.state;
  const rows = [];
  const row = (k, v) => rows.push(h("tr", {}, h("th", {}, k), h("td", {}, v)));
  row(_("Slot"), raw(label(s.slot)));
  if (s.phone) {
    row(_("Phone"), raw(phoneName(s)));
    row(_("Model"), raw(s.phone.manufacturer + " " + s.phone.model));
    row(_("Serial number"), raw(s.phone.serial));
    if (s.phone.imeis.length) row("IMEI", raw(s.phone.imeis.join(", ")));
  }
  row(_("Step"), code("steps", s.step) + (s.running ? " · " + elapsed(s.step_since) : ""));
  row(_("State"), code("states", s.state));
  if (s.outcome) row(_("Outcome"), code("outcomes", s.outcome));
  const body = [
    h("div", { class: "detail-head" }, h("h2", {}, raw(label(s.slot))),
      h("button", { class: "close", "aria-label": _("Close"), onclick: () => select(s.slot) }, "×")),
    h("table", {}, rows),
  ];
  if (s.need) body.push(h("p", { class: "need big" }, needText(s)));
  if (s.need === "enter_imei") body.push(imeiForm(s));
  if (s.need === "final_reset" && s.instructions.length) {
    body.push(h("ol", { class: "steps" }, s.instructions.map((text) => h("li", {}, _(text)))));
  }
  if (s.need === "manual_reset" && s.instructions.length) {
    body.push(h("ol", { class: "manual" }, s.instructions.map((text, i) => h("li", { class: i < s.manual_done ? "done" : "" },
      h("span", {}, _(text)),
      i === s.manual_done ? h("button", { class: "primary", onclick: () => manualStep(s.slot, i) }, _("Step done")) : null))));
  }
  const why = outcomeText(s);
  if (why.length) {
    body.push(h("h3", {}, s.outcome === "not_erased" ? _("Reasons") : _("Exceptions")),
      h("ul", {}, why.map((w) => h("li", {}, w))));
  }
  const actions = [];
  if (s.awaiting_confirmation) {
    actions.push(h("button", { class: "primary confirm", onclick: () => confirmSlot(s.slot) }, _("Confirm erase")));
    actions.push(h("button", { class: "abort", onclick: () => abortSlot(s.slot) }, _("Do not erase")));
  }
  if (s.need === "final_reset") {
    actions.push(h("button", { class: "primary final-reset", onclick: () => finalResetDone(s.slot) }, _("Final reset done")));
  }
  if (s.running) actions.push(h("button", { class: "identify-btn", onclick: () => identify(s.slot) }, _("Identify")));
  if (s.certificate_id) {
    const pdf = "/certificates/" + encodeURIComponent(s.certificate_id) + ".pdf?lang=" + (state.lang === "zh-CN" ? "zh" : "en");
    actions.push(h("a", { class: "button pdf", href: pdf, target: "_blank", rel: "noopener" }, _("Certificate (PDF)")));
    actions.push(h("a", { class: "button", href: pdf + "&download=1", download: "" }, _("Download")));
    // The signed file itself: what the platform ingests and `wipeagent verify` checks.
    actions.push(h("a", { class: "button signed", href: "/certificates/" + encodeURIComponent(s.certificate_id) + ".jws.json", download: "" }, _("Signed file")));
  }
  body.push(h("div", { class: "actions" }, actions));
  panel.replaceChildren(...body);
  const field = document.getElementById("imei-input");
  if (field) {
    field.value = typed;
    if (focused) field.focus();
  }
}

function imeiForm(s) {
  const input = h("input", { id: "imei-input", type: "text", inputmode: "numeric", autocomplete: "off",
    spellcheck: "false", placeholder: _("15 digits"), "aria-label": _("IMEI of this phone") });
  const form = h("form", { class: "imei-form", onsubmit: async (e) => {
    e.preventDefault();
    if (await enterImeis(s.slot, input.value)) input.value = "";
    input.focus();
  } },
    h("label", {}, _("IMEI of this phone"), input),
    h("div", { class: "imei-buttons" },
      h("button", { type: "submit", class: "primary" }, _("Enter IMEI")),
      h("button", { type: "button", class: "no-imei", onclick: () => noImei(s.slot) }, _("No IMEI (no modem)"))));
  return h("div", { class: "imei" }, form, s.instructions.map((text) => h("p", { class: "muted" }, _(text))));
}

// -- dialogs -------------------------------------------------------------------------

// Where a booking came from (the intake list's `source`): the bench's own sources in
// words, a platform feed by its configured name.
function sourceText(source) {
  if (source === "scanner") return _("scanned at the bench");
  if (source === "api") return _("entered on the command line or the API");
  return raw(source);
}

// The intake list (`wipeagent intake list | remove`): the newest bookings, a search, and
// Remove for a booking scanned by mistake.
async function openIntake() {
  if (needSignIn()) return;
  const dialog = document.getElementById("dialog");
  const close = () => { dialog.className = "hidden"; dialog.replaceChildren(); };
  const search = h("input", { id: "intake-search", type: "search", autocomplete: "off", spellcheck: "false",
    placeholder: _("IMEI, serial number or booking reference"), "aria-label": _("Search the intake list") });
  const list = h("div", { class: "intake-list" });
  const load = async () => {
    const data = await act(_("Booked in"), () => getJson("/api/intake?q=" + encodeURIComponent(search.value.trim())));
    if (!data) return;
    list.replaceChildren(
      h("p", { class: "muted" }, fmt(_("%(shown)s of %(total)s bookings, newest first"), { shown: data.entries.length, total: data.total })),
      data.entries.length ? h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, _("IMEI or serial number")), h("th", {}, _("Booking reference")),
          h("th", {}, _("Booked in by")), h("th", {}, _("Source")), h("th", {}, _("When")), h("th", {}))),
        h("tbody", {}, data.entries.map((e) => h("tr", { class: "booking", dataset: { id: e.identifier } },
          h("td", {}, raw(e.identifier)), h("td", {}, raw(e.reference || "-")), h("td", {}, raw(e.added_by || "-")),
          h("td", {}, sourceText(e.source)), h("td", {}, raw(new Date(e.added_at).toLocaleString(state.lang))),
          h("td", {}, h("button", { class: "remove", onclick: () => removeBooking(e.identifier, load) }, _("Remove")))))))
        : h("p", {}, _("No phone is booked in.")));
  };
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") load(); });
  dialog.className = "dialog";
  dialog.replaceChildren(h("div", { class: "intake" }, h("h2", {}, _("Booked in")), search, list,
    h("div", { class: "actions" }, h("button", { type: "button", class: "close-intake", onclick: close }, _("Close")))));
  await load();
  search.focus();
}

async function removeBooking(identifier, reload) {
  if (!window.confirm(fmt(_("Take %(id)s off the intake list?"), { id: identifier }))) return;
  const done = await act(_("Remove"), () => post("/api/intake/remove", { identifier }));
  if (done) toast(fmtRaw(_("Taken off the intake list: %(id)s"), { id: identifier }));
  await reload();
}
function openSignIn() {
  const dialog = document.getElementById("dialog");
  const name = h("input", { id: "operator", type: "text", autocomplete: "username", required: true });
  const secret = h("input", { id: "secret", type: "password", autocomplete: "current-password", required: true });
  const close = () => { dialog.className = "hidden"; dialog.replaceChildren(); };
  const form = h("form", { class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    if (await signIn(name.value.trim(), secret.value)) close();
    else { secret.value = ""; secret.focus(); }
  } },
    h("h2", {}, _("Sign in")),
    h("label", {}, _("Operator"), name),
    h("label", {}, _("PIN or password"), secret),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, _("Sign in")),
      h("button", { type: "button", onclick: close }, _("Cancel"))));
  dialog.className = "dialog";
  dialog.replaceChildren(form);
  name.focus();
}

// `content`: a string, or nodes and strings (fmtRaw) whose values stay raw text.
function toast(content, bad) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.replaceChildren(...[content].flat(Infinity).map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  el.className = bad ? "toast bad" : "toast";
  clearTimeout(state.toastTimer);
  state.toastTimer = setTimeout(() => { el.className = "hidden"; }, 5000);
}

async function switchLanguage(lang) {
  localStorage.setItem("wipeagent.lang", lang);
  await loadCatalogue(lang);
  render();
}

// A USB barcode scanner types like a keyboard and ends with Enter: keys typed while no
// field has the focus go to the scan field.
document.addEventListener("keydown", (e) => {
  const active = document.activeElement;
  if (active && (active.tagName === "INPUT" || active.tagName === "SELECT" || active.tagName === "TEXTAREA")) return;
  if (e.ctrlKey || e.altKey || e.metaKey || e.key.length !== 1) return;
  const field = document.getElementById("imei-input") || document.getElementById("scan");
  if (field) field.focus();
});

setInterval(() => {
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = elapsed(el.dataset.since);
}, 1000);

(async function main() {
  await loadSession();
  const stored = localStorage.getItem("wipeagent.lang");
  const lang = state.session.languages.includes(stored) ? stored : state.session.language;
  await loadCatalogue(lang);
  render();
  connect();
})();
