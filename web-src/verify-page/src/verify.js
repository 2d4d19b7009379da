// Verification of a wipeagent certificate in the browser: the same rules, in the same
// order and with the same reason codes, as wipeagent/certs/verify.py (docs/certificate.md).
//
//   const result = await verifyCertificate(bytes, { roots, schemas, expected, now })
//   result.ok === true  -> result.payload, result.chain, result.anchor ...
//   result.ok === false -> result.reason (a stable code), result.detail (English, for
//                          auditors; the page shows a translated sentence per reason)
//
// Parts: strict JSON with duplicate-member refusal (@humanwhocodes/momoa, a maintained
// JSON parser that keeps every member), X.509 (@peculiar/x509), signatures (WebCrypto:
// Ed25519 and ECDSA P-256), JSON Schema 2020-12 (@cfworker/json-schema, which evaluates
// schemas without eval(), so the page runs under a strict Content-Security-Policy).

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { AsnConvert } from "@peculiar/asn1-schema";
import * as asnX509 from "@peculiar/asn1-x509";
import { parse as parseJsonAst } from "@humanwhocodes/momoa";
import { Validator } from "@cfworker/json-schema";

export const MAX_CERTIFICATE_BYTES = 512 * 1024;
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
export const EKU_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36";
export const DEV_OU = "wipeagent development - not for production";
const ANY_EKU = "2.5.29.37.0";
const TYP = "wipeagent-cert+jws";
const HEADER_MEMBERS = ["alg", "kid", "typ", "x5c"];
const JWS_MEMBERS = ["payload", "protected", "signature"];
// The P-256 group order; an ES256 signature's S must be at most half of it (low-S), so
// nobody can make a byte-different valid twin of a certificate (issue 10).
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const STATION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?Z$/;

x509.cryptoProvider.set(globalThis.crypto);
const subtle = globalThis.crypto.subtle;

export class Refusal extends Error {
  constructor(reason, detail) {
    super(detail || reason);
    this.reason = reason;
    this.detail = detail || reason;
  }
}

function fail(reason, detail) {
  throw new Refusal(reason, detail);
}

// -- encodings ---------------------------------------------------------------------

function fromAst(node, what) {
  switch (node.type) {
    case "Object": {
      const out = Object.create(null);
      for (const member of node.members) {
        const key = member.name.value;
        if (Object.prototype.hasOwnProperty.call(out, key)) {
          fail("malformed", `duplicate member ${JSON.stringify(key)} in ${what}`);
        }
        out[key] = fromAst(member.value, what);
      }
      return Object.assign({}, out);
    }
    case "Array":
      return node.elements.map((e) => fromAst(e.value, what));
    case "String":
    case "Number":
    case "Boolean":
      return node.value;
    case "Null":
      return null;
    default:
      return fail("malformed", `unexpected ${node.type} in ${what}`);
  }
}

/** JSON.parse that refuses duplicate members and anything but strict JSON. */
export function strictJson(text, what, reason = "malformed") {
  let ast;
  try {
    ast = parseJsonAst(text, { mode: "json", tokens: false, ranges: false });
  } catch (error) {
    fail(reason, `${what} is not JSON: ${error.message}`);
  }
  return fromAst(ast.body, what);
}

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** Strict, canonical base64url (RFC 7515: no padding, no other characters; RFC 4648 3.5:
 * the last character's spare bits are zero, so a byte string has one spelling only). */
export function b64urlDecode(text, what) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    fail("malformed", `${what} is not base64url`);
  }
  const rest = text.length % 4;
  if (rest && (B64URL.indexOf(text[text.length - 1]) & (rest === 2 ? 0b1111 : 0b11))) {
    fail("not_canonical", `${what}: base64url with non-zero spare bits`);
  }
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function b64urlEncode(bytes) {
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64Decode(text, what) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4) {
    fail("bad_header", `${what} is not standard base64`);
  }
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** An RFC 3339 UTC time ("Z") that names a real calendar moment, as a Date. */
export function parseTime(text, what) {
  const m = typeof text === "string" ? RFC3339.exec(text) : null;
  if (!m) fail("invalid_time", `${what}: not an RFC 3339 UTC time`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const date = new Date(ms);
  if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 ||
      date.getUTCDate() !== day || date.getUTCHours() !== hour ||
      date.getUTCMinutes() !== minute || date.getUTCSeconds() !== second) {
    fail("invalid_time", `${what}: ${text} is not a real time`);
  }
  const fraction = m[7] ? Number(m[7]) : 0;
  return new Date(ms + Math.floor(fraction * 1000));
}

// -- the JWS ---------------------------------------------------------------------

function parseJws(bytes) {
  if (bytes.byteLength > MAX_CERTIFICATE_BYTES) fail("too_large", "larger than 512 KiB");
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    fail("malformed", "not UTF-8");
  }
  const outer = strictJson(text, "the certificate file");
  if (outer === null || typeof outer !== "object" || Array.isArray(outer) ||
      Object.keys(outer).sort().join() !== JWS_MEMBERS.join() ||
      !JWS_MEMBERS.every((k) => typeof outer[k] === "string")) {
    fail("malformed", "not a flattened JWS with exactly payload, protected, signature");
  }
  const payloadBytes = b64urlDecode(outer.payload, "payload");
  const protectedBytes = b64urlDecode(outer.protected, "protected");
  const signature = b64urlDecode(outer.signature, "signature");
  // One serialization only: any other spelling would be a twin with another SHA-256.
  if (text !== `{"payload":"${outer.payload}","protected":"${outer.protected}",` +
      `"signature":"${outer.signature}"}`) {
    fail("not_canonical", "not the canonical serialization (compact JSON, members in the " +
      "order payload, protected, signature)");
  }
  const header = strictJson(new TextDecoder().decode(protectedBytes), "the protected header");
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    fail("bad_header", "the protected header is not an object");
  }
  // The algorithm first: nothing else is looked at for alg none / HS256 ...
  if (header.alg !== "EdDSA" && header.alg !== "ES256") {
    fail("unsupported_alg", `alg ${JSON.stringify(header.alg)} is not EdDSA or ES256`);
  }
  if (Object.keys(header).sort().join() !== HEADER_MEMBERS.join()) {
    fail("bad_header", "header members must be exactly alg, typ, kid, x5c");
  }
  if (header.typ !== TYP) fail("bad_header", `typ must be ${TYP}`);
  // An RFC 7638 SHA-256 thumbprint, base64url without padding: always 43 characters.
  if (typeof header.kid !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(header.kid)) {
    fail("bad_header", "kid is not a SHA-256 JWK thumbprint (43 base64url)");
  }
  if (!Array.isArray(header.x5c) || header.x5c.length < 1 || header.x5c.length > 4) {
    fail("bad_header", "x5c must hold 1 to 4 certificates");
  }
  const x5c = header.x5c.map((entry, i) => b64Decode(entry, `x5c[${i}]`));
  const signingInput = new TextEncoder().encode(`${outer.protected}.${outer.payload}`);
  return { alg: header.alg, kid: header.kid, x5c, payloadBytes, signature, signingInput };
}

// -- the chain -------------------------------------------------------------------

function basicConstraints(cert) {
  return cert.getExtension(x509.BasicConstraintsExtension);
}

function isCa(cert) {
  return basicConstraints(cert)?.ca === true;
}

async function issuedBy(cert, issuer) {
  if (cert.issuer !== issuer.subject) return false;
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

function checkCaUsage(cert) {
  if (!isCa(cert)) fail("key_usage", "an issuing certificate is not a CA");
  // RFC 5280 4.2.1.3: a CA certificate MUST carry keyUsage; it must allow keyCertSign.
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (!ku || !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
    fail("key_usage", "an issuing certificate lacks keyCertSign");
  }
  // An EKU on a CA restricts what it may certify (as OpenSSL and browsers treat it).
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku && !eku.usages.includes(EKU_DOCUMENT_SIGNING) && !eku.usages.includes(ANY_EKU)) {
    fail("key_usage", "an issuing CA may not certify document signing");
  }
}

function checkLeafUsage(leaf) {
  const ku = leaf.getExtension(x509.KeyUsagesExtension);
  const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
  if (!ku || !eku) fail("key_usage", "station certificate lacks KU or EKU");
  if (!(ku.usages & x509.KeyUsageFlags.digitalSignature)) {
    fail("key_usage", "station certificate lacks digitalSignature");
  }
  if (ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) {
    // RFC 5280 4.2.1.3: keyCertSign only with cA; a station never signs certificates.
    fail("key_usage", "station certificate may sign certificates");
  }
  if (!eku.usages.includes(EKU_DOCUMENT_SIGNING)) {
    fail("key_usage", "station certificate lacks id-kp-documentSigning");
  }
}

// -- name constraints (RFC 5280 4.2.1.10), for the forms a station chain can carry -----

const EMAIL_OID = "1.2.840.113549.1.9.1";

function fold(text) {
  // RFC 4518 string preparation at its core: whitespace collapsed, case folded.
  return String(text).split(/\s+/).filter(Boolean).join(" ").toLowerCase();
}

function rdnKeys(name) {
  return Array.from(name, (rdn) => Array.from(rdn, (a) => `${a.type}=${fold(a.value.toString())}`)
    .sort().join("+"));
}

function hostWithin(host, base) {
  host = host.toLowerCase().replace(/\.$/, "");
  base = base.toLowerCase();
  if (base.startsWith(".")) return host.endsWith(base);
  return host === base || host.endsWith("." + base);
}

function asnCertificate(cert) {
  return AsnConvert.parse(cert.rawData, asnX509.Certificate).tbsCertificate;
}

/** The names of a certificate that name constraints apply to, as [form, value]. */
function constrainedNames(cert) {
  const tbs = asnCertificate(cert);
  const names = [];
  if (tbs.subject.length) names.push(["dir", rdnKeys(tbs.subject)]);
  for (const rdn of tbs.subject) {
    for (const attr of rdn) if (attr.type === EMAIL_OID) names.push(["email", attr.value.toString()]);
  }
  const san = (tbs.extensions || []).find((e) => e.extnID === "2.5.29.17");
  if (san) {
    for (const gn of AsnConvert.parse(san.extnValue, asnX509.SubjectAlternativeName)) {
      names.push(generalName(gn));
    }
  }
  return names;
}

function generalName(gn) {
  if (gn.directoryName) return ["dir", rdnKeys(gn.directoryName)];
  if (gn.dNSName !== undefined) return ["dns", gn.dNSName];
  if (gn.rfc822Name !== undefined) return ["email", gn.rfc822Name];
  if (gn.uniformResourceIdentifier !== undefined) return ["uri", gn.uniformResourceIdentifier];
  if (gn.iPAddress !== undefined) return ["ip", gn.iPAddress];
  return ["other", null];
}

function within([form, value], [treeForm, tree]) {
  if (form !== treeForm) return false;
  if (form === "dir") return tree.every((rdn, i) => value[i] === rdn);
  if (form === "dns") return tree ? hostWithin(value, tree) : true;
  if (form === "email") {
    if (tree.includes("@")) return value.toLowerCase() === tree.toLowerCase();
    return hostWithin(value.split("@").pop(), tree);
  }
  if (form === "uri") {
    let host = "";
    try { host = new URL(value).hostname; } catch { return false; }
    return Boolean(host) && hostWithin(host, tree);
  }
  return false;
}

function checkNameConstraints(ext, below) {
  const nc = AsnConvert.parse(ext.value, asnX509.NameConstraints);
  const permitted = Array.from(nc.permittedSubtrees || [], (t) => generalName(t.base));
  const excluded = Array.from(nc.excludedSubtrees || [], (t) => generalName(t.base));
  for (const tree of [...permitted, ...excluded]) {
    // IP address ranges are left to `wipeagent verify`: refused here, never passed.
    if (!["dir", "dns", "email", "uri"].includes(tree[0])) {
      fail("name_constraints", `unsupported name constraint form ${tree[0]}`);
    }
  }
  for (const cert of below) {
    for (const name of constrainedNames(cert)) {
      if (excluded.some((tree) => within(name, tree))) fail("name_constraints", `${name[1]} is excluded`);
      const sameForm = permitted.filter((t) => t[0] === name[0]);
      if (sameForm.length && !sameForm.some((tree) => within(name, tree))) {
        fail("name_constraints", `${name[1]} is not permitted`);
      }
    }
  }
}

// Extensions whose meaning checkPath implements (as wipeagent/certs/verify.py).
const UNDERSTOOD = new Set([
  "2.5.29.19", // basicConstraints
  "2.5.29.15", // keyUsage
  "2.5.29.37", // extKeyUsage
  "2.5.29.30", // nameConstraints
  "2.5.29.17", // subjectAltName
  "2.5.29.14", // subjectKeyIdentifier
  "2.5.29.35", // authorityKeyIdentifier
]);

function selfIssued(cert) {
  return cert.issuer === cert.subject;
}

/** RFC 5280 6.1 over the path (leaf first, anchor last), the anchor's constraints too. */
function checkPath(path) {
  path.forEach((cert, position) => {
    for (const ext of cert.extensions) {
      if (ext.critical && !UNDERSTOOD.has(ext.type)) {
        fail("unknown_critical_extension", `critical extension ${ext.type} is not understood`);
      }
    }
    if (position === 0) return;
    checkCaUsage(cert);
    const limit = basicConstraints(cert).pathLength;
    // Intermediate CAs between this CA and the leaf; self-issued ones do not count.
    const between = path.slice(1, position).filter((c) => !selfIssued(c)).length;
    if (limit !== undefined && between > limit) {
      fail("path_length", `a CA allows ${limit} intermediate CA(s) below it, the chain has ${between}`);
    }
    const nc = cert.extensions.find((e) => e.type === "2.5.29.30");
    if (nc) {
      // Self-issued intermediates are exempt (6.1.4 (b)); the leaf never is.
      checkNameConstraints(nc, path.slice(0, position).filter((c, i) => i === 0 || !selfIssued(c)));
    }
  });
}

function isDevelopment(cert) {
  return cert.subjectName.getField("OU").includes(DEV_OU);
}

function keyAlg(cert) {
  const alg = cert.publicKey.algorithm;
  if (alg.name === "Ed25519") return { jws: "EdDSA", webcrypto: { name: "Ed25519" } };
  if (alg.name === "ECDSA" && alg.namedCurve === "P-256") {
    return { jws: "ES256", webcrypto: { name: "ECDSA", namedCurve: "P-256" } };
  }
  return fail("unsupported_key", "station key is neither Ed25519 nor ECDSA P-256");
}

async function buildChain(ders, roots) {
  const certs = ders.map((der) => {
    let cert;
    try {
      cert = new x509.X509Certificate(der);
    } catch {
      return fail("chain_invalid", "an x5c entry is not DER X.509");
    }
    // Every extension parsed now, and at most one instance of each (RFC 5280 4.2), as
    // wipeagent verify refuses a certificate whose extensions do not parse.
    let types;
    try {
      types = cert.extensions.map((ext) => ext.type);
    } catch {
      return fail("chain_invalid", "an x5c entry has extensions that do not parse");
    }
    if (new Set(types).size !== types.length) fail("chain_invalid", "an extension appears twice");
    return cert;
  });
  const leaf = certs[0];
  if (isCa(leaf)) {
    const hasLeaf = certs.slice(1).some((c) => !isCa(c));
    fail(hasLeaf ? "chain_order" : "key_usage",
      "x5c must start with the station (non-CA) certificate");
  }
  for (let i = 0; i + 1 < certs.length; i++) {
    const [child, parent] = [certs[i], certs[i + 1]];
    if (!(await issuedBy(child, parent))) {
      const upsideDown = await issuedBy(parent, child);
      fail(upsideDown ? "chain_order" : "chain_broken", "x5c certificates do not chain leaf first");
    }
  }
  const last = certs[certs.length - 1];
  let anchor = roots.find((r) => sameBytes(r.cert.rawData, last.rawData));
  if (!anchor) {
    for (const root of roots) {
      if (await issuedBy(last, root.cert)) {
        anchor = root;
        break;
      }
    }
  }
  if (!anchor) fail("untrusted_root", "the chain does not end at a trusted root");
  const full = sameBytes(anchor.cert.rawData, last.rawData) ? certs : [...certs, anchor.cert];
  checkPath(full);
  checkLeafUsage(leaf);
  const cns = leaf.subjectName.getField("CN");
  if (cns.length !== 1 || !STATION_ID.test(cns[0])) {
    fail("station_mismatch", "the station certificate's subject has no single ASCII station id (CN)");
  }
  return { certs, full, anchor, leaf, stationId: cns[0] };
}

async function jwkThumbprint(key) {
  const jwk = await subtle.exportKey("jwk", key);
  const members = jwk.kty === "OKP"
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
    : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(members)));
  return b64urlEncode(new Uint8Array(digest));
}

async function checkSignature(parsed, leaf, alg) {
  const key = await subtle.importKey("spki", leaf.publicKey.rawData, alg.webcrypto, true,
    ["verify"]);
  if (parsed.kid !== (await jwkThumbprint(key))) {
    fail("kid_mismatch", "kid does not name the station key");
  }
  if (parsed.signature.length !== 64) fail("bad_signature", "a signature is 64 bytes");
  let params = { name: "Ed25519" };
  if (alg.jws === "ES256") {
    const s = BigInt("0x" + Array.from(parsed.signature.slice(32),
      (b) => b.toString(16).padStart(2, "0")).join(""));
    if (s > P256_N / 2n) fail("signature_not_canonical", "ES256 signature with a high S (not canonical)");
    params = { name: "ECDSA", hash: "SHA-256" };
  }
  const ok = await subtle.verify(params, key, parsed.signature, parsed.signingInput);
  if (!ok) fail("bad_signature", "signature verification failed");
}

// -- the payload -----------------------------------------------------------------

function finding(checks, kind) {
  const relevant = checks.filter((c) => c.kind === kind);
  if (relevant.some((c) => c.status === "fail")) return "failed";
  if (relevant.some((c) => c.status === "pass") &&
      !relevant.some((c) => c.status === "error" || c.status === "skipped")) return "confirmed";
  return "not_established";
}

const STATUSES = ["pass", "fail", "warn", "info", "skipped", "error"];
// Lock families by check id words, and the platform a lock exists on (certificate.md).
const LOCK_WORDS = {
  activation_lock: ["activation", "find_my", "findmy", "fmip"],
  google_frp: ["frp", "factory_reset_protection", "google_account"],
  mdm: ["mdm", "device_owner", "profile_owner", "supervis", "managed"],
};
const LOCK_PLATFORM = { activation_lock: "ios", google_frp: "android" };
// wipeagent/outcome.py MANUAL_RESET_EXCEPTION, word for word.
const MANUAL_RESET_EXCEPTION = "manual reset: the technician performed the factory reset " +
  "under the agent's guidance; the agent verified the result but did not execute the reset itself";

function deriveLocks(checks, platform) {
  const locks = {};
  for (const [name, words] of Object.entries(LOCK_WORDS)) {
    const found = checks.filter((c) => words.some((w) => c.id.includes(w)));
    const onlyOn = LOCK_PLATFORM[name];
    const statuses = new Set(found.map((c) => c.status));
    let state;
    if (!found.length && platform !== null && onlyOn !== undefined && platform !== onlyOn) {
      state = "not_applicable";
    } else if (!found.length) state = "not_checked";
    else if (statuses.has("fail")) state = "present";
    else if (statuses.size === 1 && statuses.has("pass")) state = "not_present";
    else state = "inconclusive";
    locks[name] = { state, checks: found.slice(0, 16).map((c) => ({ id: c.id, status: c.status, method: c.method })) };
  }
  return locks;
}

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** wipeagent/outcome.py decide(), on the payload's checks and sanitization. */
function decide(manual, checks) {
  const codes = [];
  const reasons = [];
  for (const kind of ["validation", "verification"]) {
    const mine = checks.filter((c) => c.kind === kind);
    const bad = mine.filter((c) => ["fail", "error", "skipped"].includes(c.status));
    reasons.push(...bad.map(describe));
    if (bad.length || !mine.some((c) => c.status === "pass")) codes.push(`${kind}_failed`);
  }
  if (codes.length) return { outcome: "not_erased", codes, exceptions: [] };
  const exceptions = checks.filter((c) => c.status === "warn").map(describe);
  if (manual) exceptions.push(MANUAL_RESET_EXCEPTION);
  return { outcome: exceptions.length ? "erased_with_exceptions" : "erased", codes, exceptions };
}

function describe(check) {
  return `${check.title}: ${check.detail || check.status}`;
}

function outcomeProblems(p) {
  const result = p.outcome.result;
  const san = p.sanitization;
  const ver = p.verification;
  const checks = ver.checks;
  const problems = [];
  for (const [field, kind] of [["technique_completed", "verification"], ["data_unrecoverable", "validation"]]) {
    if (ver[field] !== finding(checks, kind)) problems.push(`verification.${field} does not follow from the checks`);
  }
  if (result === "not_erased") {
    if (!p.outcome.reasons.length) problems.push("not_erased must give its reasons");
    return problems; // saying less than the checks would allow is never a false claim
  }
  if (p.device === null) problems.push("an erased phone must be identified");
  if (!san.performed || san.ended_at === null || san.category === null) {
    problems.push("erased needs a finished sanitization with a NIST category");
    return problems;
  }
  if (checks.some((c) => c.status === "fail")) problems.push("erased with a failed verification check");
  if (result === "erased" && checks.some((c) => c.status === "error" || c.status === "warn")) {
    problems.push("a post-erase check could not run or warned: not a clean erase");
  }
  const decision = decide(san.manual, checks);
  if (decision.outcome === "not_erased") {
    problems.push(`the outcome rule finds the phone not erased (${decision.codes.join(", ")})`);
  } else if (result === "erased" && decision.outcome !== "erased") {
    problems.push("the outcome rule finds exceptions, so not a plain erased");
  } else if (result === "erased_with_exceptions") {
    const listed = new Set(p.outcome.exceptions);
    if (!listed.size) problems.push("erased_with_exceptions must list its exceptions");
    else if (!decision.exceptions.every((e) => listed.has(e))) {
      problems.push("an exception the outcome rule finds is not listed");
    }
  }
  return problems;
}

/** docs/certificate.md "Consistency rules" (wipeagent/certs/payload.py check_consistency):
 * invalid_time for a time that is not real, else every broken rule. */
export function consistencyProblems(p) {
  const san = p.sanitization;
  const custody = p.custody;
  const issuedAt = parseTime(p.issued_at, "issued_at");
  const sessionStart = parseTime(custody.session_started_at, "session_started_at");
  const sessionEnd = parseTime(custody.session_ended_at, "session_ended_at");
  const started = san.started_at !== null ? parseTime(san.started_at, "started_at") : null;
  const ended = san.ended_at !== null ? parseTime(san.ended_at, "ended_at") : null;
  const problems = outcomeProblems(p);
  if (started && ended && ended < started) problems.push("sanitization ended before it started");
  if (sessionEnd < sessionStart) problems.push("the session ended before it started");
  // A UUIDv7 carries its time in the first 48 bits: the certificate id names issued_at
  // (within a millisecond: agents before 0.2 computed the id's time in floating point).
  const idMs = parseInt(p.certificate_id.replace(/-/g, "").slice(0, 12), 16);
  if (Math.abs(idMs - issuedAt.getTime()) > 1) {
    problems.push("certificate_id does not carry issued_at (UUIDv7 time)");
  }
  const diagnostics = p.diagnostics;
  const summary = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const c of diagnostics.checks) summary[c.status] += 1;
  if (canonical(summary) !== canonical(diagnostics.summary)) {
    problems.push("diagnostics.summary does not count diagnostics.checks");
  }
  const every = [...diagnostics.checks, ...p.preconditions.checks, ...p.verification.checks];
  if (canonical(p.locks) !== canonical(deriveLocks(every, p.device ? p.device.platform : null))) {
    problems.push("locks do not follow from the checks");
  }
  handoffProblems(p, problems);
  if (p.chain.station_id !== custody.station_id) {
    problems.push("chain.station_id differs from custody.station_id");
  }
  if ((p.chain.sequence === 1) !== (p.chain.previous_hash === null)) {
    problems.push("previous_hash must be null exactly for sequence 1");
  }
  return problems;
}

/** The hand-off rules of version 2 (payload.py _check_handoff, docs/handoff.md): a
 * hand-off only after a verified erase; a failed one is an exception, never `erased`; its
 * status agrees with its items; IMEIs have a source exactly when there are IMEIs. */
function handoffProblems(p, problems) {
  const device = p.device;
  if (device && "imei_source" in device && (device.imei_source === null) !== (device.imeis.length === 0)) {
    problems.push("device.imei_source is given exactly when there are IMEIs");
  }
  const handoff = p.handoff;
  if (handoff === undefined || handoff === null) return;
  const result = p.outcome.result;
  if (result === "not_erased") problems.push("a hand-off follows a verified erase only (not for not_erased)");
  const failed = handoff.items.some((item) => item.result === "failed");
  if (failed !== (handoff.status === "failed")) {
    problems.push("handoff.status is failed exactly when one of its items failed");
  }
  if (handoff.status === "failed" && result === "erased") {
    problems.push("a failed hand-off is an exception: erased_with_exceptions, not erased");
  }
  if (parseTime(handoff.ended_at, "ended_at") < parseTime(handoff.started_at, "started_at")) {
    problems.push("the hand-off ended before it started");
  }
}

function checkPayload(payload, schemas) {
  const version = payload && typeof payload === "object" ? payload.version : undefined;
  const schema = Number.isInteger(version) ? schemas[String(version)] : undefined;
  if (!schema) fail("schema_invalid", `payload version ${JSON.stringify(version)} is not supported`);
  const outcome = new Validator(schema, "2020-12", true).validate(payload);
  if (!outcome.valid) {
    const first = outcome.errors[outcome.errors.length - 1] || outcome.errors[0];
    fail("schema_invalid", `payload invalid: ${first ? first.error : "schema"}`);
  }
  const problems = consistencyProblems(payload);
  if (problems.length) fail("inconsistent_payload", problems.join("; "));
}

// -- the whole -------------------------------------------------------------------

/** Trust roots from the platform's /v1/public/trust-roots answer. */
export function loadRoots(answer) {
  return answer.roots.map((r) => {
    const cert = new x509.X509Certificate(r.pem);
    return { cert, sha256: r.sha256, organisation: r.organisation,
      development: isDevelopment(cert) };
  });
}

/**
 * Verify certificate bytes against `roots` (loadRoots) and `schemas` ({"1": schema, ...}).
 * `expected` ({id, sha256}, from the QR link) must match when given.
 */
export async function verifyCertificate(bytes, { roots, schemas, expected = {}, now = new Date() }) {
  const result = { ok: false, sha256: null, reason: null, detail: null };
  try {
    if (!roots.length) fail("no_roots", "no trusted root is configured");
    result.sha256 = await sha256Hex(bytes);
    if (expected.sha256 && expected.sha256 !== result.sha256) {
      fail("hash_mismatch", `the file's SHA-256 is ${result.sha256}, the link says ${expected.sha256}`);
    }
    const parsed = parseJws(bytes);
    const chain = await buildChain(parsed.x5c, roots);
    const alg = keyAlg(chain.leaf);
    if (parsed.alg !== alg.jws) fail("alg_mismatch", `alg ${parsed.alg} but the key needs ${alg.jws}`);
    await checkSignature(parsed, chain.leaf, alg);
    result.chain = chain;
    result.alg = parsed.alg;
    result.kid = parsed.kid;
    let payloadText;
    try {
      payloadText = new TextDecoder("utf-8", { fatal: true }).decode(parsed.payloadBytes);
    } catch {
      fail("malformed", "the payload is not UTF-8");
    }
    const payload = strictJson(payloadText, "the payload", "malformed");
    result.payload = payload;
    checkPayload(payload, schemas);
    // The station that signed is the station whose ledger this extends (issue 10): exact,
    // and the certificate's id is ASCII, so no look-alike passes.
    if (payload.chain.station_id !== chain.stationId) {
      fail("station_mismatch",
        `payload names station ${JSON.stringify(payload.chain.station_id)}, signed by ${JSON.stringify(chain.stationId)}`);
    }
    const issuedAt = parseTime(payload.issued_at, "issued_at");
    for (const cert of chain.full) {
      if (issuedAt < cert.notBefore) {
        fail("cert_not_yet_valid", `${cert.subject} was not yet valid at issue time`);
      }
      if (issuedAt > cert.notAfter) fail("cert_expired", `${cert.subject} had expired at issue time`);
    }
    if (issuedAt.getTime() > now.getTime() + CLOCK_SKEW_MS) {
      fail("issued_in_future", `issued at ${payload.issued_at}`);
    }
    const development = chain.full.some(isDevelopment);
    if (development && payload.development !== true) {
      fail("development_mismatch", "signed by a development CA but not marked development");
    }
    if (expected.id && expected.id !== payload.certificate_id) {
      fail("id_mismatch", `the certificate's id is ${payload.certificate_id}, the link says ${expected.id}`);
    }
    Object.assign(result, { ok: true, development, issuedAt });
  } catch (error) {
    if (!(error instanceof Refusal)) {
      // Never an unexplained accept, never a crash: anything unexpected is a refusal.
      result.reason = "malformed";
      result.detail = `unexpected: ${error && error.message}`;
      return result;
    }
    result.reason = error.reason;
    result.detail = error.detail;
  }
  return result;
}
