"""How to talk to phones: protocol sessions (connect, authorise, shell, files).

Transports know bytes and sessions, nothing about wiping. Every error they raise is a
`wipeagent.errors.DeviceError` subclass; every wait is bounded through the Clock.
"""
