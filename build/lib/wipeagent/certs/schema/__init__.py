"""JSON Schemas of the certificate payload (package data; a package so wheels ship them)."""
