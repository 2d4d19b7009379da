"""Running the agent as a systemd service: sd_notify (READY, STATUS, WATCHDOG, RELOADING,
STOPPING), logs that journald and people can read, and live configuration reload.

`wipeagent.runner` puts these together; each module here works and is tested on its own.
"""
