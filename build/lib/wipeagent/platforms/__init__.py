"""What to say to phones: one package per platform. Platforms never open sockets."""
