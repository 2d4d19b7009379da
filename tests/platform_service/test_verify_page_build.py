"""The verification page's committed bundle is what its sources and lock file build, and
its two language catalogues are complete."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "web-src" / "verify-page"
BUNDLE = ROOT / "wipeagent" / "platform_service" / "web" / "assets" / "verify.js"


def _node(*args: str, cwd: Path = PAGE) -> str:
    assert (PAGE / "node_modules" / "esbuild").exists(), \
        "run scripts/setup --test (npm ci in web-src/verify-page)"
    done = subprocess.run(["node", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_committed_bundle_matches_a_fresh_build(tmp_path: Path) -> None:
    _node("build.mjs", str(tmp_path))
    fresh = (tmp_path / "verify.js").read_bytes()
    assert fresh == BUNDLE.read_bytes(), \
        "the committed bundle is stale: cd web-src/verify-page && node build.mjs"
    # No address of anything outside the platform is in the bundle.
    assert b"cdn" not in fresh.lower() and b"googleapis" not in fresh


def test_both_languages_define_every_message() -> None:
    out = _node("--input-type=module", "-e",
                "import { missingKeys } from './src/i18n.js'; "
                "console.log(JSON.stringify(missingKeys()));")
    assert json.loads(out) == []
