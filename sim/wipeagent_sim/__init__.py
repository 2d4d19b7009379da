"""Simulated phones that speak the real wire protocols (ADB; later usbmuxd/lockdown).

Real clients (adb-shell, Debian's `adb`) talk to them unchanged. A phone's state and
behaviour come from profile data files, not code.
"""
