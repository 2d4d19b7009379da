"""A fake adbd: the ADB wire protocol over TCP in front of a simulated device backend."""
