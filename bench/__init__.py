"""Benchmarks: run each script as a module from the repository root, e.g. `python -m bench.bench_k1`."""
