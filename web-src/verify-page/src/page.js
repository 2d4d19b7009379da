// The verification page: what the QR code on a wipe certificate opens.
//
//   /verify?id=<certificate id>&sha256=<hash>   fetches the certificate from the platform's
//                                               public lookup and verifies it here;
//   /verify                                     verifies a saved file (drop / file picker),
//                                               offline once the page is loaded.
//
// Every string from a certificate reaches the page through textContent, never as HTML.

import { formatDate, initialLanguage, translator } from "./i18n.js";
import { loadRoots, verifyCertificate } from "./verify.js";

const LOOKUP = "/v1/public/certificates/";
const ROOTS = "/v1/public/trust-roots";
const SCHEMAS = "/v1/public/schemas";

const state = {
  lang: initialLanguage(location.search, navigator.languages),
  roots: [],
  schemas: {},
  status: "loading", // loading | idle | checking | done | error
  result: null,
  ledger: null,
  error: null, // {reason, status}
  source: null, // "link" | "file"
};

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function lastDigits(value, n = 4) {
  const text = String(value ?? "");
  return text.length > n ? "…" + text.slice(-n) : text;
}

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function shortHash(hex) {
  return hex ? `${hex.slice(0, 16)}…${hex.slice(-8)}` : "";
}

// -- pieces ----------------------------------------------------------------------

function header(t) {
  return h("header", { class: "top" },
    h("h1", {}, t("page.title")),
    h("button", { type: "button", id: "lang", class: "lang", lang: state.lang === "en" ? "zh-CN" : "en",
      onclick: () => setLanguage(state.lang === "en" ? "zh-CN" : "en") }, t("lang.switch")));
}

function verdict(t) {
  if (state.status === "loading" || state.status === "checking") {
    return h("section", { id: "verdict", class: "verdict pending", "data-state": "pending",
      role: "status" }, h("p", { class: "headline" }, t(`state.${state.status}`)));
  }
  if (state.status === "idle") {
    return h("section", { id: "verdict", class: "verdict idle", "data-state": "idle" },
      h("p", {}, t("state.idle")));
  }
  const reason = state.error ? state.error.reason : state.result.reason;
  if (reason) {
    return h("section", { id: "verdict", class: "verdict bad", "data-state": "invalid",
      "data-reason": reason, role: "alert" },
      h("p", { class: "headline" }, "✗ ", t("state.bad")),
      h("p", {}, t("state.bad.detail"), " ", h("strong", { id: "reason" }, t(`reason.${reason}`))),
      h("p", { class: "code" }, `${t("details.reason")}: ${reason}`));
  }
  return h("section", { id: "verdict", class: "verdict ok", "data-state": "valid", role: "status" },
    h("p", { class: "headline" }, "✓ ", t("state.ok")),
    h("p", {}, t("state.ok.detail")));
}

function devBanner(t) {
  const devRoot = state.roots.some((r) => r.development);
  const devCert = state.result && state.result.ok && state.result.payload.development;
  if (!devRoot && !devCert) return null;
  return h("p", { id: "development", class: "banner dev", role: "note" },
    devCert ? t("dev.banner") : t("dev.root"));
}

function outcomeSection(t) {
  const r = state.result;
  if (!r || !r.ok) return null;
  const p = r.payload;
  const result = p.outcome.result;
  const dev = p.device;
  const san = p.sanitization;
  const facts = [];
  if (dev) {
    const name = [dev.manufacturer, dev.marketing_name || dev.model].filter(Boolean).join(" ");
    facts.push(...fact(t("fact.phone"), name, dev.model_number ? ` (${dev.model_number})` : ""));
    facts.push(...fact(t("fact.serial"), lastDigits(dev.serial)));
    if (dev.imeis.length) facts.push(...fact(t("fact.imei"), dev.imeis.map((i) => lastDigits(i)).join(", ")));
  }
  const when = san.ended_at || p.issued_at;
  facts.push(...fact(t(result === "not_erased" ? "fact.date.not_erased" : "fact.date"),
    formatDate(new Date(when), state.lang)));
  if (san.performed) {
    // Known methods in plain words (the signed method_id is a stable machine code);
    // an unknown one as signed.
    const known = `method.${san.method_id}`;
    facts.push(...fact(t("fact.method"), t.has(known) ? t(known) : (san.technique || san.method || "-"),
      !t.has(known) && san.manual ? h("span", { class: "note" }, " ", t("fact.manual")) : null));
    facts.push(...fact(t("fact.category"),
      san.category ? t(`category.${san.category}`) : t("category.none")));
  }
  if (p.handoff) {
    // docs/handoff.md: how the phone was handed on, in words (the payload holds codes).
    const key = p.handoff.status === "failed" ? "handoff.failed"
      : `handoff.${p.handoff.policy}.${p.handoff.status}`;
    facts.push(...fact(t("fact.handoff"), t.has(key) ? t(key) : `${p.handoff.policy} ${p.handoff.status}`));
  }
  facts.push(...fact(t("fact.station"), [p.custody.station_id, p.custody.site].filter(Boolean).join(" · ")));
  facts.push(...fact(t("fact.organisation"), p.custody.organisation || r.chain.anchor.organisation));
  if (p.outcome.reasons.length) {
    facts.push(...fact(t("fact.reasons"), h("ul", {}, p.outcome.reasons.map((x) => h("li", {}, x)))));
  }
  if (p.outcome.exceptions.length) {
    facts.push(...fact(t("fact.exceptions"), h("ul", {}, p.outcome.exceptions.map((x) => h("li", {}, x)))));
  }
  facts.push(...fact(t("fact.certificate"), h("code", {}, p.certificate_id)));
  return h("section", { id: "outcome", class: `outcome ${result}`, "data-outcome": result },
    h("h2", {}, t(`outcome.${result}`)),
    h("p", {}, t(`outcome.${result}.text`)),
    h("dl", { id: "facts" }, facts));
}

function ledgerNote(t) {
  if (!state.ledger || state.ledger.status === "ok" || !state.result?.ok) return null;
  return h("p", { id: "ledger-note", class: "banner warn" },
    t("ledger.problems", { problems: state.ledger.problems.join(", ") }));
}

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((x) => h("td", {}, x))))));
}

function checksTable(checks) {
  return table(["id", "kind", "status", "method"],
    checks.map((c) => [c.title || c.id, c.kind, c.status, c.method]));
}

function details(t) {
  const r = state.result;
  if (!r && !state.error) return null;
  const parts = [h("summary", {}, t("details.summary"))];
  if (r && r.sha256) parts.push(h("p", {}, `${t("details.sha256")}: `, h("code", {}, r.sha256)));
  const reason = state.error ? state.error.reason : r && r.reason;
  if (reason) parts.push(h("p", {}, `${t("details.reason")}: `, h("code", {}, reason), " — ",
    (r && r.detail) || ""));
  if (r && r.chain) {
    parts.push(h("h3", {}, t("details.signature")), h("p", {}, `${r.alg} · kid `, h("code", {}, r.kid)));
    parts.push(h("h3", {}, t("details.chain")), table(["subject", t("details.valid")],
      r.chain.full.map((c) => [c.subject, `${c.notBefore.toISOString()} – ${c.notAfter.toISOString()}`])));
    const a = r.chain.anchor;
    parts.push(h("h3", {}, t("details.root")), h("p", {}, a.organisation, a.development ? " (DEVELOPMENT)" : "",
      " · SHA-256 ", h("code", {}, a.sha256)));
  }
  if (r && r.payload && r.ok) {
    const p = r.payload;
    parts.push(h("h3", {}, t("details.checks")), checksTable(p.verification.checks));
    parts.push(h("h3", {}, t("details.preconditions")), checksTable(p.preconditions.checks));
    parts.push(h("h3", {}, t("details.locks")), table(["lock", "state"],
      Object.entries(p.locks).map(([name, lock]) => [name, lock.state])));
    parts.push(h("h3", {}, t("details.ledger")), h("p", {}, `${p.chain.station_id} #${p.chain.sequence} · previous `,
      h("code", {}, p.chain.previous_hash || "-")));
  }
  if (r && r.payload) {
    parts.push(h("h3", {}, t("details.payload")), h("pre", { id: "payload" }, JSON.stringify(r.payload, null, 2)));
  }
  return h("details", { id: "details", class: "details" }, parts);
}

function dropZone(t) {
  const input = h("input", { type: "file", id: "file", accept: ".jws,.json,application/jose+json,application/json",
    onchange: (event) => { const f = event.target.files[0]; if (f) checkFile(f); } });
  const zone = h("section", { id: "drop", class: "drop" },
    h("h2", {}, t("drop.title")),
    h("p", {}, t("drop.text")),
    h("label", { class: "button", for: "file" }, t("drop.button")), input);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) checkFile(file);
  });
  return zone;
}

function footer(t) {
  if (!state.roots.length) return h("footer", {}, h("p", {}, t("trust.none")));
  return h("footer", { id: "trust" }, state.roots.map((r) => h("p", {},
    t("trust.footer", { organisation: r.organisation, fingerprint: shortHash(r.sha256) }),
    r.development ? h("strong", { class: "dev" }, " DEVELOPMENT") : null)));
}

// -- flow ------------------------------------------------------------------------

function render() {
  try {
    draw();
  } catch (error) {
    // A page that cannot show a result must not look like it is still checking.
    console.error(error);
    state.error = { reason: "unhandled_input" };
    state.result = null;
    state.status = "done";
    draw();
  }
}

function draw() {
  const t = translator(state.lang);
  document.documentElement.lang = state.lang;
  document.title = t("page.title");
  const app = document.getElementById("app");
  const open = document.getElementById("details")?.open;
  app.replaceChildren(header(t), h("p", { class: "lead" }, t("page.lead")), verdict(t),
    devBanner(t) || "", outcomeSection(t) || "", ledgerNote(t) || "", details(t) || "",
    dropZone(t), footer(t));
  if (open && document.getElementById("details")) document.getElementById("details").open = true;
  document.body.dataset.status = state.status;
}

function setLanguage(lang) {
  state.lang = lang;
  const url = new URL(location.href);
  url.searchParams.set("lang", lang);
  history.replaceState(null, "", url);
  render();
}

async function check(bytes, expected, source, ledger = null) {
  state.status = "checking";
  state.source = source;
  render();
  state.result = await verifyCertificate(bytes, { roots: state.roots, schemas: state.schemas, expected });
  state.ledger = ledger;
  state.error = null;
  state.status = "done";
  render();
}

async function checkFile(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  await check(bytes, {}, "file");
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { status: response.status });
  return response.json();
}

async function lookup(id, sha256) {
  let answer;
  try {
    answer = await fetchJson(LOOKUP + encodeURIComponent(id) + "/" + encodeURIComponent(sha256));
  } catch (error) {
    const reason = error.status === 404 ? "not_found" : error.status === 429 ? "rate_limited" : "fetch_failed";
    state.error = { reason, status: error.status };
    state.result = null;
    state.status = "done";
    render();
    return;
  }
  await check(new TextEncoder().encode(answer.certificate), { id, sha256 }, "link", answer.ledger);
}

async function main() {
  render();
  try {
    const [roots, schemas] = await Promise.all([fetchJson(ROOTS), fetchJson(SCHEMAS)]);
    state.roots = loadRoots(roots);
    state.schemas = schemas.schemas;
  } catch (error) {
    state.error = { reason: "fetch_failed", status: error.status };
    state.status = "done";
    render();
    return;
  }
  const params = new URLSearchParams(location.search);
  const id = params.get("id");
  const sha256 = params.get("sha256");
  if (id || sha256) {
    await lookup((id || "").trim().toLowerCase(), (sha256 || "").trim().toLowerCase());
  } else {
    state.status = "idle";
    render();
  }
}

main();
