"""Technician control: the bench state, the erase gates (policies), the local API on a
unix socket and the CLI that talks to it.

- `bench.BenchState`: observes SessionEvents and the Agent; per-slot status; operator
  sign-in; pending erase confirmations.
- `gates.make_gate`: the `confirm` / `intake` / `auto` erase policies as EraseGates.
- `intake.IntakeList`: phones the platform booked in (a table in the journal database).
- `server.ControlServer`: the aiohttp API on a unix socket (mode 0660, group wipeagent).
- `client.ControlClient` and `cli.register`: `wipeagent status|confirm|abort|login`.
"""
