// Build the verification page's script: one self-contained bundle of our code and the
// pinned libraries (package-lock.json), written into the Python package, which serves it.
// Deterministic: the same sources and lock always give the same bytes (a test checks the
// committed bundle against a fresh build).
//
//   npm ci && node build.mjs [OUT_DIR]
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || path.join(here, "../../wipeagent/platform_service/web/assets");

await build({
  entryPoints: [path.join(here, "src/page.js")],
  outfile: path.join(out, "verify.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  // Browsers with WebCrypto Ed25519 (Chromium 137+, Firefox 129+, Safari 17+).
  target: ["chrome120", "firefox129", "safari17"],
  minify: true,
  legalComments: "eof", // the libraries' licence notices stay in the bundle
  charset: "utf8",
  logLevel: "warning",
});
console.log(`built ${path.join(out, "verify.js")}`);
