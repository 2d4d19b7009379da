"""Bundled simulated-iPhone profiles (TOML data files); see wipeagent.sim.ios.profile."""
