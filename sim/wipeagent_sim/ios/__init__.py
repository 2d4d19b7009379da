"""Simulated iPhones behind a fake usbmuxd, faithful enough for real clients.

pymobiledevice3 and libimobiledevice (``ideviceinfo``, ``idevicediagnostics``) talk to it
unchanged through ``USBMUXD_SOCKET_ADDRESS``. Entry points: `SimIosBench` (in-process),
`serve_forever` (CLI server), `remote_control` (CLI ``trust`` / ``unplug`` ...).
"""

from wipeagent_sim.ios.bench import PhoneSpec, SimIosBench, remote_control, serve_forever
from wipeagent_sim.ios.phone import SimIPhone
from wipeagent_sim.ios.profile import Profile, available_profiles, load_profile

__all__ = [
    "PhoneSpec",
    "Profile",
    "SimIPhone",
    "SimIosBench",
    "available_profiles",
    "load_profile",
    "remote_control",
    "serve_forever",
]
