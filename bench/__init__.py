"""Benchmarks run side by side with the reference tools; `make bench` writes BENCHMARKS.md."""
