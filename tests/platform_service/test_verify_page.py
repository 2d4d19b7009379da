"""The verification page in a real browser (Debian's chromium, Playwright as the driver):
what the QR code opens, and the auditor's drop-a-file check, offline.

Screenshots at phone size (390x844) go to artifacts/screenshots/verify-*.png.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, screenshot

from wipeagent.certs.pki import load_trust_roots
from wipeagent.certs.verify import verify_certificate
from wipeagent.clock import Clock
from wipeagent.errors import CertificateError
from wipeagent.platform_service.app import PlatformService, PlatformSettings, tls_context
from wipeagent.platform_service.db import database_url, migrate
from wipeagent.platform_service.ledger import store_certificate
from wipeagent.uplink.ingest import trust_anchor
from wipeagent.uplink.tls import ensure_dev_server_tls

CORPUS = Path(__file__).resolve().parents[1] / "certs" / "corpus"
EXPECTED: dict[str, dict[str, str]] = json.loads((CORPUS / "expected.json").read_text())["files"]
PHONE = {"width": 390, "height": 844}
GOOD = "valid-v2-ed25519.jws"
NOT_ERASED = "valid-v2-not-erased-ios.jws"


@dataclass
class PageSite:
    service: PlatformService
    held: dict[str, tuple[str, str]]  # corpus file -> (certificate id, sha256)

    def link(self, name: str, *, sha256: str | None = None, lang: str | None = None) -> str:
        cid, digest = self.held[name]
        url = f"{self.service.verify_url}?id={cid}&sha256={sha256 or digest}"
        return url + (f"&lang={lang}" if lang else "")


async def _site(tmp_path: Path, roots_files: list[str], held: list[str]) -> PlatformService:
    url = database_url(f"sqlite:///{tmp_path}/platform.sqlite3")
    migrate(url)
    roots = [c for name in roots_files for c in load_trust_roots(CORPUS / name)]
    server = ensure_dev_server_tls(tmp_path / "tls")
    service = PlatformService(PlatformSettings(database=url, trust_roots=roots,
                                               client_roots=roots), clock=Clock())
    await service.start(ssl_context=tls_context(cert=server.cert, key=server.key,
                                                client_cas=[CORPUS / roots_files[0]]),
                        public=("127.0.0.1", 0))
    for name in held:  # as if delivered by the corpus station (the page test needs no TLS)
        data = (CORPUS / name).read_bytes()
        verified = verify_certificate(data, trust_roots=roots)
        anchor = trust_anchor(verified.chain, roots)
        assert anchor is not None
        async with service.engine.begin() as conn:
            await store_certificate(conn, verified, data, root=anchor, client="test",
                                    now=datetime.now(UTC))
    return service


async def _page_site(tmp_path: Path, name: str) -> PageSite:
    # The corpus certificates share one id, so a site holds one of them.
    service = await _site(tmp_path, ["root.pem", "root-p256.pem"], [name])
    verified = verify_certificate((CORPUS / name).read_bytes(),
                                  trust_roots=load_trust_roots(CORPUS / "root.pem"))
    return PageSite(service, {name: (verified.certificate_id, verified.sha256)})


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[PageSite]:
    running = await _page_site(tmp_path, GOOD)
    try:
        yield running
    finally:
        await running.service.stop()


async def _verdict(page: Any) -> tuple[str, str | None]:
    verdict = page.locator("#verdict[data-state=valid], #verdict[data-state=invalid], "
                           "#verdict[data-state=idle]")
    await verdict.wait_for(timeout=30_000)
    return (await verdict.get_attribute("data-state"),
            await verdict.get_attribute("data-reason"))


async def test_a_genuine_certificate_is_green_with_its_facts_in_both_languages(
        site: PageSite, tmp_path: Path) -> None:
    async with chromium(tmp_path, locale="en-US") as context:
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(site.link(GOOD))
        assert await _verdict(page) == ("valid", None)
        assert await page.locator("html").get_attribute("lang") == "en"
        facts = await page.locator("#facts").inner_text()
        for expected in ("samsung Galaxy S21 5G", "(SM-G991B/DS)", "…4ABC", "…5678, …5679",
                         "November 20, 2026", "Android Test Harness Mode",
                         "Purge: the data cannot be recovered", "bench-01",
                         "Acme Refurb & Co", site.held[GOOD][0]):
            assert expected in facts, expected
        assert "R58M1234ABC" not in facts  # only the last digits, for the owner
        assert await page.locator("#outcome h2").inner_text() == "Your data was erased"
        assert await page.locator("#development").count() == 0
        await screenshot(page, "verify-valid-en-390x844")
        # The auditor opens the details: the chain, the root, every check.
        await page.locator("#details summary").click()
        details = await page.locator("#details").inner_text()
        assert "CN=bench-01" in details and "EdDSA" in details
        assert "erase.canary_files_gone" in details or "erase: canary files gone" in details
        # Switch to Chinese: the same facts, in Chinese words.
        await page.locator("#lang").click()
        assert await page.locator("html").get_attribute("lang") == "zh-CN"
        assert await page.locator("#verdict .headline").inner_text() == "✓ 证书真实有效"
        assert await page.locator("#outcome h2").inner_text() == "您的数据已被清除"
        facts = await page.locator("#facts").inner_text()
        assert "净化（Purge）" in facts and "2026年11月20日" in facts and "…4ABC" in facts
        assert "测试框架模式" in facts
        assert "lang=zh-CN" in page.url
        await screenshot(page, "verify-valid-zh-390x844")
        # Everything came from the platform itself: no CDN, nothing else.
        origin = site.service.public_base_url
        assert requests and all(u.startswith(origin) for u in requests), requests


async def test_chinese_browser_gets_chinese_and_a_not_erased_phone_says_so(
        tmp_path: Path) -> None:
    site = await _page_site(tmp_path, NOT_ERASED)
    async with chromium(tmp_path, locale="zh-CN") as context:
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        await page.goto(site.link(NOT_ERASED))
        assert await _verdict(page) == ("valid", None)
        assert await page.locator("html").get_attribute("lang") == "zh-CN"
        assert await page.locator("#outcome").get_attribute("data-outcome") == "not_erased"
        assert await page.locator("#outcome h2").inner_text() == "未清除"
        facts = await page.locator("#facts").inner_text()
        assert "Find My is on" in facts  # the signed reason, as signed
        await screenshot(page, "verify-not-erased-zh-390x844")
    await site.service.stop()


async def test_a_link_with_a_changed_hash_is_red(site: PageSite, tmp_path: Path) -> None:
    _cid, digest = site.held[GOOD]
    changed = ("0" if digest[0] != "0" else "1") + digest[1:]
    async with chromium(tmp_path) as context:
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        await page.goto(site.link(GOOD, sha256=changed, lang="en"))
        assert await _verdict(page) == ("invalid", "not_found")
        assert "no certificate with this id and hash" in await page.locator("#reason").inner_text()
        assert await page.locator("#outcome").count() == 0
        await screenshot(page, "verify-changed-hash-en-390x844")


def _answer_with(certificate: str) -> Any:
    """A route handler answering the public lookup with `certificate`."""
    async def answer(route: Any) -> None:
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(
            {"certificate": certificate, "ledger": {"status": "ok", "problems": []}}))
    return answer


async def test_the_page_does_not_trust_the_platform(site: PageSite, tmp_path: Path) -> None:
    """A platform (or a proxy) answering with other bytes than the link names is caught
    by the page itself: tampered content, another certificate, another id."""
    cid, digest = site.held[GOOD]
    tampered = (CORPUS / "flipped-payload-byte.jws").read_text()
    # The corpus certificates share one id: a link naming another id with this file's
    # hash is answered with this (genuine) file.
    other_id = cid[:-1] + ("0" if cid[-1] != "0" else "1")
    cases = [
        # (link id, link hash, bytes the "platform" answers with, expected reason)
        (cid, digest, tampered, "hash_mismatch"),
        (other_id, digest, (CORPUS / GOOD).read_text(), "id_mismatch"),
    ]
    async with chromium(tmp_path) as context:
        page = await context.new_page()
        for link_id, link_hash, body, reason in cases:
            await page.route("**/v1/public/certificates/**", _answer_with(body))
            await page.goto(f"{site.service.verify_url}?id={link_id}&sha256={link_hash}"
                            "&lang=en")
            assert await _verdict(page) == ("invalid", reason)
            await page.unroute("**/v1/public/certificates/**")
        # And a tampered file whose hash the link names: the signature catches it.
        import hashlib
        tampered_hash = hashlib.sha256(tampered.encode()).hexdigest()

        await page.route("**/v1/public/certificates/**", _answer_with(tampered))
        await page.goto(f"{site.service.verify_url}?id={cid}&sha256={tampered_hash}&lang=en")
        assert await _verdict(page) == ("invalid", "bad_signature")


def _python_verdict(name: str, roots: list[Any]) -> str:
    try:
        verify_certificate((CORPUS / name).read_bytes(), trust_roots=roots)
    except CertificateError as exc:
        return exc.reason
    return "ok"


async def test_saved_files_offline_agree_with_the_verifier(site: PageSite,
                                                           tmp_path: Path) -> None:
    """Every corpus certificate dropped on the page, with the network off, gets the
    verdict and reason of `wipeagent verify` (the page trusts root.pem and root-p256.pem)."""
    roots = [c for n in ("root.pem", "root-p256.pem") for c in load_trust_roots(CORPUS / n)]
    names = sorted(EXPECTED)
    async with chromium(tmp_path) as context:
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        await page.goto(site.service.verify_url + "?lang=en")
        assert await _verdict(page) == ("idle", None)
        await context.set_offline(True)
        # The drag-and-drop path, as a person drags a file onto the page.
        data = (CORPUS / "expired-station-cert.jws").read_bytes()
        await page.evaluate("""([bytes, name]) => {
            const file = new File([new Uint8Array(bytes)], name);
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }""", [list(data), "expired-station-cert.jws"])
        assert await _verdict(page) == ("invalid", "cert_expired")
        assert "expired" in await page.locator("#reason").inner_text()
        await screenshot(page, "verify-expired-dropped-en-390x844")
        disagreements = []
        for name in names:
            await page.evaluate("document.body.dataset.status = 'next'")
            await page.set_input_files("#file", str(CORPUS / name))
            await page.locator("body[data-status=done]").wait_for(timeout=30_000)
            state, reason = await _verdict(page)
            got = "ok" if state == "valid" else reason
            want = _python_verdict(name, roots)
            if got != want:
                disagreements.append((name, want, got))
        await context.set_offline(False)
    # Any disagreement is a bug in one of the two verifiers (both refuse high-S ES256).
    assert disagreements == []
    for name in ("flipped-payload-byte.jws", "wrong-ca.jws", "expired-station-cert.jws",
                 "valid-v2-ed25519.jws"):
        assert name in names


async def test_a_development_root_is_shown_as_such(tmp_path: Path) -> None:
    service = await _site(tmp_path, ["dev-root.pem"], ["valid-dev.jws"])
    try:
        async with chromium(tmp_path) as context:
            page = await context.new_page()
            await page.set_viewport_size(PHONE)
            await page.goto(service.verify_url + "?lang=en")
            assert await _verdict(page) == ("idle", None)
            assert "DEVELOPMENT root" in await page.locator("#development").inner_text()
            await page.set_input_files("#file", str(CORPUS / "valid-dev.jws"))
            await page.locator("body[data-status=done]").wait_for(timeout=30_000)
            assert await _verdict(page) == ("valid", None)
            banner = await page.locator("#development").inner_text()
            assert "not proof that a phone was erased" in banner
            assert "DEVELOPMENT" in await page.locator("#trust").inner_text()
    finally:
        await service.stop()
