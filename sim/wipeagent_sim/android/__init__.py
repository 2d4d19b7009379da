"""The simulated Android phone: state, profiles, and a small shell."""
