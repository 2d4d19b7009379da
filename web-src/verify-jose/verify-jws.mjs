// The JWS half of checking a wipeagent certificate without Python, with panva/jose
// (docs/verify-without-python.md, which quotes this file whole; a test keeps them equal).
//
//   node verify-jws.mjs split CERT        writes station.pem (x5c[0]) and chain.pem (the rest)
//   node verify-jws.mjs verify CERT KEY   prints the payload if the signature is the
//                                         station key's (KEY: PEM public key), else exit 1
import { readFileSync, writeFileSync } from "node:fs";
import { calculateJwkThumbprint, exportJWK, flattenedVerify, importSPKI } from "jose";

const [command, certFile, keyFile] = process.argv.slice(2);

function fail(reason) {
  console.error(`INVALID: ${reason}`);
  process.exit(1);
}

const text = readFileSync(certFile, "utf8");
let jws;
try {
  jws = JSON.parse(text);
} catch {
  fail("not JSON");
}
// The one serialization a certificate has: any other spelling of it would be a twin
// with another SHA-256 (so also refuses extra members such as an unprotected header).
const canonical = `{"payload":"${jws.payload}","protected":"${jws.protected}",` +
  `"signature":"${jws.signature}"}`;
if (text !== canonical) fail("not the canonical flattened JWS serialization");
// Canonical base64url too: no spare bits set in a last character (RFC 4648 section 3.5).
for (const part of ["payload", "protected", "signature"]) {
  const value = String(jws[part]);
  if (Buffer.from(value, "base64url").toString("base64url") !== value) {
    fail(`${part} is not canonical base64url`);
  }
}
const header = JSON.parse(Buffer.from(jws.protected, "base64url").toString("utf8"));

if (command === "split") {
  const pem = (b64) => `-----BEGIN CERTIFICATE-----\n${b64.match(/.{1,64}/g).join("\n")}\n` +
    "-----END CERTIFICATE-----\n";
  writeFileSync("station.pem", pem(header.x5c[0]));
  writeFileSync("chain.pem", header.x5c.slice(1).map(pem).join(""));
} else if (command === "verify") {
  // Exactly these header members; only EdDSA (Ed25519) and ES256, never "none" or HMAC.
  if (Object.keys(header).sort().join() !== "alg,kid,typ,x5c") fail("unexpected header members");
  if (header.typ !== "wipeagent-cert+jws") fail("wrong typ");
  if (header.alg !== "EdDSA" && header.alg !== "ES256") fail(`alg ${header.alg} refused`);
  const key = await importSPKI(readFileSync(keyFile, "utf8"), header.alg, { extractable: true });
  if (header.kid !== await calculateJwkThumbprint(await exportJWK(key))) fail("kid mismatch");
  if (header.alg === "ES256") {
    // Low S only (S <= n/2): (R, n - S) would verify too, a byte-different twin.
    const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    const s = BigInt("0x" + Buffer.from(jws.signature, "base64url").subarray(32).toString("hex"));
    if (s > n / 2n) fail("ES256 signature with a high S");
  }
  let verified;
  try {
    verified = await flattenedVerify(jws, key, { algorithms: [header.alg] });
  } catch (error) {
    fail(`signature: ${error.code || error.message}`);
  }
  process.stdout.write(new TextDecoder("utf-8", { fatal: true }).decode(verified.payload));
} else {
  fail("usage: node verify-jws.mjs split CERT | verify CERT KEY.pem");
}
