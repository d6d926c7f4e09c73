"""Benchmarks run by `lame bench <name>`: speed (LaME against its peers) and encode (our batching)."""
