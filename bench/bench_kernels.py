"""Superseded by bench/bench_k1.py (K1 of issue 15: fused op / bare GEMM of the same packed tokens into a
preallocated output). The old comparison here timed a GEMM over padded tokens that also allocated its output.
Kept as an alias: `python3 bench/bench_kernels.py ARGS` == `python3 bench/bench_k1.py ARGS`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from bench_k1 import main
    sys.exit(main())
