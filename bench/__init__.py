"""Benchmarks: `make bench` runs them and prints one JSON object of figures."""
