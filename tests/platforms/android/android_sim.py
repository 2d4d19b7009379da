"""Shared pieces of the driver's end-to-end tests: a simulated phone and its driver."""

from __future__ import annotations

from dataclasses import dataclass

from wipeagent.clock import Clock
from wipeagent.platforms.android.driver import AndroidDriver, AndroidDriverSettings
from wipeagent.transports.adb import AdbEndpoint
from wipeagent_sim.adb.server import AdbServer
from wipeagent_sim.android.phone import SimAndroidPhone

SPEED = 100.0  # bench seconds per real second: a 45 s reboot takes 0.45 s

SETTINGS = AndroidDriverSettings(
    # Bench seconds: at SPEED 100 a command may take 0.6 s of a busy shared machine.
    connect_timeout_s=10, auth_timeout_s=30, command_timeout_s=60,
    reboot_timeout_s=600, manual_reset_timeout_s=1800, poll_interval_s=2,
)


@dataclass
class Sim:
    """One simulated phone on the bench and a driver pointed at it."""

    phone: SimAndroidPhone
    server: AdbServer
    endpoint: AdbEndpoint
    driver: AndroidDriver
    clock: Clock
