"""The Android driver end to end against simulated phones speaking real ADB."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from android_sim import SETTINGS, Sim

from wipeagent.errors import (
    BadDeviceData,
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    IdentityMismatch,
    ProtocolError,
)
from wipeagent.models import (
    CheckKind,
    CheckResult,
    CheckStatus,
    DeviceIdentity,
    EncryptionType,
    ErasePlan,
    NistCategory,
    Refusal,
)
from wipeagent.platforms.android.erase import METHOD_MANUAL, METHOD_TESTHARNESS
from wipeagent.platforms.base import ErasePolicy, PlatformDriver
from wipeagent_sim.android.profiles import ProfileInfo, list_profiles

SimFactory = Callable[[str], AbstractAsyncContextManager[Sim]]


def by_id(checks: list[CheckResult]) -> dict[str, CheckResult]:
    return {c.id: c for c in checks}


async def technician_manual_reset(sim: Sim) -> None:
    """What the person at the bench does for a guided manual reset."""
    await sim.clock.sleep(5)
    await sim.phone.perform_manual_factory_reset()
    await sim.clock.sleep(20)  # setup wizard, developer options
    sim.phone.enable_usb_debugging()


DEFAULT_POLICY = ErasePolicy()


async def full_run(sim: Sim, policy: ErasePolicy = DEFAULT_POLICY
                   ) -> tuple[list[CheckResult], ErasePlan | Refusal, list[CheckResult]]:
    """identify -> diagnose -> plan -> canary -> erase -> await_return -> verify."""
    d = sim.driver
    ident = await d.identify()
    diag = await d.diagnose(ident)
    assert all(c.kind == CheckKind.DIAGNOSTIC for c in diag)
    pre, plan = d.plan_erase(ident, diag, policy)
    assert all(c.kind == CheckKind.PRECONDITION for c in pre)
    if isinstance(plan, Refusal):
        return diag, plan, []
    canary = await d.plant_canary()
    await d.start_erase(plan)
    helper = (asyncio.create_task(technician_manual_reset(sim)) if plan.manual else None)
    back = await d.await_return(ident, plan)
    if helper:
        await helper
    assert back.serial == ident.serial
    return diag, plan, await d.verify(back, plan, canary)


async def test_pixel8_clean_erased_purge(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        user_files_before = sim.phone.user_files()
        diag, plan, ver = await full_run(sim)
        assert isinstance(plan, ErasePlan) and plan.method_id == METHOD_TESTHARNESS
        assert plan.category == NistCategory.PURGE
        assert user_files_before and not sim.phone.user_files()
        assert sim.phone.counters.factory_resets == 1
        assert {c.status for c in ver} == {CheckStatus.PASS}
        kinds = {c.id: c.kind for c in ver}
        assert kinds["android.verify.canary_files"] == CheckKind.VALIDATION
        assert kinds["android.verify.encryption"] == CheckKind.VERIFICATION
        d = by_id(diag)
        assert d["android.battery"].evidence["level_percent"] is not None
        assert d["android.storage"].evidence["total_bytes"]


async def test_identify_reads_real_properties(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        driver: PlatformDriver = sim.driver  # the driver fulfils the session's contract
        await driver.connect()
        await driver.connect()  # idempotent: one prompt, one connection
        ident = await driver.identify()
        props = sim.phone.properties()
        assert ident.serial == props["ro.serialno"]
        assert ident.model == props["ro.product.model"]
        assert ident.encryption == EncryptionType.FILE_BASED
        assert ident.hardware_ids["boot_serial"] == props["ro.boot.serialno"]


async def test_verify_without_erase_fails_validation(sim_factory: SimFactory) -> None:
    """The worst failure: a phone that still holds data must not pass verification."""
    async with sim_factory("pixel8-clean") as sim:
        ident = await sim.driver.identify()
        _, plan = sim.driver.plan_erase(ident, await sim.driver.diagnose(ident),
                                        ErasePolicy())
        assert isinstance(plan, ErasePlan)
        canary = await sim.driver.plant_canary()
        ver = by_id(await sim.driver.verify(ident, plan, canary))  # no erase in between
        for check_id in ("android.verify.canary_files", "android.verify.canary_setting",
                         "android.verify.user_storage", "android.verify.reset_state"):
            assert ver[check_id].status == CheckStatus.FAIL, check_id
        assert ver["android.verify.packages"].status == (
            CheckStatus.FAIL if sim.phone.third_party_packages() else CheckStatus.PASS)


async def test_frp_refused(sim_factory: SimFactory) -> None:
    async with sim_factory("samsung-frp") as sim:
        diag, plan, _ = await full_run(sim)
        assert isinstance(plan, Refusal) and plan.code == "google_account"
        assert by_id(diag)["android.frp"].evidence["frp_risk"] is True
        assert sim.phone.counters.factory_resets == 0


async def test_lock_screen_refused(sim_factory: SimFactory) -> None:
    async with sim_factory("locked") as sim:
        _, plan, _ = await full_run(sim)
        assert isinstance(plan, Refusal) and plan.code == "lock_screen"
        assert "Settings > Security" in plan.hint


async def test_testharness_refusal_from_phone_is_device_error(sim_factory: SimFactory) -> None:
    # If the lock check were wrong, the phone itself refuses; the driver must say why.
    async with sim_factory("locked") as sim:
        plan = ErasePlan(method_id=METHOD_TESTHARNESS, method="adb shell cmd testharness enable",
                         technique="t", category=NistCategory.PURGE)
        with pytest.raises(DeviceError, match="lock screen") as info:
            await sim.driver.start_erase(plan)
        assert "screen lock" in info.value.hint


async def test_android9_guided_manual_reset(sim_factory: SimFactory) -> None:
    async with sim_factory("android9") as sim:
        _, plan, ver = await full_run(sim)
        assert isinstance(plan, ErasePlan) and plan.method_id == METHOD_MANUAL and plan.manual
        assert plan.instructions
        statuses = by_id(ver)
        assert all(c.status == CheckStatus.PASS for c in ver
                   if c.kind == CheckKind.VALIDATION), ver
        assert statuses["android.verify.reset_state"].status == CheckStatus.PASS


async def test_android9_refused_without_manual_policy(sim_factory: SimFactory) -> None:
    async with sim_factory("android9") as sim:
        _, plan, _ = await full_run(sim, ErasePolicy(allow_manual_reset=False))
        assert isinstance(plan, Refusal) and plan.code == "no_software_method"


async def test_unencrypted_is_clear(sim_factory: SimFactory) -> None:
    async with sim_factory("unencrypted") as sim:
        _, plan, ver = await full_run(sim)
        assert isinstance(plan, ErasePlan) and plan.category == NistCategory.CLEAR
        assert by_id(ver)["android.verify.encryption"].evidence["encryption"] == "none"
        assert all(c.status == CheckStatus.PASS for c in ver)


async def test_rooted_erased_with_warnings(sim_factory: SimFactory) -> None:
    async with sim_factory("rooted") as sim:
        diag, plan, ver = await full_run(sim)
        assert isinstance(plan, ErasePlan)
        d = by_id(diag)
        assert d["android.root"].status == CheckStatus.WARN
        assert d["android.bootloader"].status == CheckStatus.WARN
        assert by_id(ver)["android.verify.trust"].status == CheckStatus.WARN
    async with sim_factory("rooted") as sim:
        _, refused, _ = await full_run(sim, ErasePolicy(refuse_rooted=True))
        assert isinstance(refused, Refusal) and refused.code == "rooted"


@pytest.mark.parametrize(
    ("profile", "error", "match"),
    [("bad-utf8", BadDeviceData, "UTF-8"),
     ("bad-metachar", BadDeviceData, r"ro\.product\.model"),
     ("bad-hang", DeviceTimeout, "did not answer"),
     ("bad-disconnect", DeviceGone, "connection"),
     ("bad-checksum", ProtocolError, "InvalidChecksumError"),
     ("bad-oversized", ProtocolError, "exceeds"),
     ("bad-malformed", ProtocolError, "malformed")],
)
async def test_bad_phones(sim_factory: SimFactory, profile: str, error: type[Exception],
                          match: str) -> None:
    async with sim_factory(profile) as sim:
        with pytest.raises(error, match=match):
            await full_run(sim)
        assert sim.phone.counters.factory_resets == 0


async def test_identity_mismatch_after_return(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as first, sim_factory("rooted") as second:
        expected = await first.driver.identify()
        plan = ErasePlan(method_id=METHOD_TESTHARNESS, method="m", technique="t",
                         category=NistCategory.PURGE, return_timeout_s=60)
        # A different phone answers where the first one was: refused before any check.
        with pytest.raises(IdentityMismatch, match="serial"):
            await second.driver.await_return(expected, plan)


async def test_await_return_times_out(sim_factory: SimFactory) -> None:
    async with sim_factory("pixel8-clean") as sim:
        expected = await sim.driver.identify()
        await sim.driver.close()
        sim.phone.unplug()
        await sim.server.close()
        plan = ErasePlan(method_id=METHOD_TESTHARNESS, method="m", technique="t",
                         category=NistCategory.PURGE, return_timeout_s=30)
        with pytest.raises(DeviceTimeout, match="did not restart and come back"):
            await sim.driver.await_return(expected, plan)


async def test_await_return_looks_cheaply_and_connects_once(
        sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the phone reboots the driver looks at a fixed short interval (no back-off)
    with bare CNXNs (no key used); it makes one authenticated connection, once the phone
    is back, and watches the phone itself meanwhile (no verdict for a source)."""
    async with sim_factory("pixel8-clean") as sim:
        ident = await sim.driver.identify()
        _, plan = sim.driver.plan_erase(ident, await sim.driver.diagnose(ident),
                                        ErasePolicy())
        assert isinstance(plan, ErasePlan)
        await sim.driver.plant_canary()
        signer = sim.driver.key.signer
        sign = signer.Sign
        signs = 0

        def counted(data: bytes) -> bytes:
            nonlocal signs
            signs += 1
            return sign(data)  # type: ignore[no-any-return]

        monkeypatch.setattr(signer, "Sign", counted)
        clock_sleep = sim.clock.sleep
        slept: list[float] = []
        waiting: asyncio.Task[DeviceIdentity] | None = None

        async def sleep(seconds: float) -> None:
            if asyncio.current_task() is waiting:  # the driver's, not the phone's
                slept.append(seconds)
            await clock_sleep(seconds)

        monkeypatch.setattr(sim.driver.clock, "sleep", sleep)
        offline = asyncio.Event()
        sim.server.power_listeners.append(lambda online: None if online else offline.set())
        await sim.driver.start_erase(plan)
        waiting = asyncio.create_task(sim.driver.await_return(ident, plan))
        await asyncio.wait_for(offline.wait(), 30)
        assert await sim.driver.answers() is None  # in its erase reboot: the driver watches
        back = await waiting
        assert back.serial == ident.serial
        assert sim.phone.counters.power_cycles == 1
        assert signs == 1
        # Many looks during the 45 s reboot, none of them further apart than the probe
        # interval (a back-off growing to 16 s made the phone wait for the agent).
        assert len(slept) > 45 / SETTINGS.probe_interval_s / 2
        assert max(slept) <= SETTINGS.probe_interval_s
        assert await sim.driver.answers() is True  # its connection just carried commands


@pytest.mark.parametrize("info", [i for i in list_profiles() if i.demo], ids=lambda i: i.name)
async def test_every_demo_profile_matches_its_expectation(sim_factory: SimFactory,
                                                          info: ProfileInfo) -> None:
    """Each bundled profile states what the agent should conclude; the driver agrees."""
    async with sim_factory(info.name) as sim:
        diag, plan, ver = await full_run(sim)
        if info.expected_outcome == "not_erased":
            assert isinstance(plan, Refusal) and plan.code == info.expected_reason
            return
        assert isinstance(plan, ErasePlan)
        assert plan.category.value == info.expected_category
        assert all(c.status == CheckStatus.PASS for c in ver if c.kind == CheckKind.VALIDATION)
        warned = any(c.status == CheckStatus.WARN for c in [*diag, *ver]) or plan.manual
        assert warned == (info.expected_outcome == "erased_with_exceptions")


@pytest.fixture
def slow_allow_profile(tmp_path: Path) -> Path:
    """android9, but the person taps Allow only when the test says so."""
    source = Path(list_profiles_by_name()["android9"].path).read_text()
    profile = tmp_path / "android9-slow-allow.toml"
    profile.write_text(source.replace('prompt = "accept"', 'prompt = "manual"'))
    assert 'prompt = "manual"' in profile.read_text()
    return profile


async def test_manual_reset_waits_through_not_authorised(sim_factory: SimFactory,
                                                         slow_allow_profile: Path) -> None:
    """After a manual reset the person may take longer than one auth timeout to tap
    Allow: the driver keeps asking until the plan's return timeout."""
    async with sim_factory(str(slow_allow_profile)) as sim:
        async def allow_first_prompt() -> None:
            while not sim.phone.accept_pending_authorisation():
                await sim.clock.sleep(1)

        allow = asyncio.create_task(allow_first_prompt())
        ident = await sim.driver.identify()
        await allow
        _, plan = sim.driver.plan_erase(ident, await sim.driver.diagnose(ident),
                                        ErasePolicy())
        assert isinstance(plan, ErasePlan) and plan.manual

        async def technician() -> int:
            await technician_manual_reset(sim)
            while not sim.phone.pending_authorisations():
                await sim.clock.sleep(1)
            await sim.clock.sleep(SETTINGS.auth_timeout_s + 20)  # the first prompt lapses
            while not sim.phone.accept_pending_authorisation():
                await sim.clock.sleep(1)
            return sim.phone.counters.factory_resets

        person = asyncio.create_task(technician())
        back = await sim.driver.await_return(ident, plan)
        assert await person == 1
        assert back.serial == ident.serial


def list_profiles_by_name() -> dict[str, ProfileInfo]:
    return {i.name: i for i in list_profiles()}
