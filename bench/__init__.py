"""Benchmarks that print figures (speed, memory, convergence): bench/README.md says how to run each."""
