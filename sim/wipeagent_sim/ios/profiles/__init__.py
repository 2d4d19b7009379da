"""Bundled simulated-iPhone profiles (TOML data files); see wipeagent_sim.ios.profile."""
