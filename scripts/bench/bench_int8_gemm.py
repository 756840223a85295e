"""Who should multiply int8 matrices on this CPU: our kernels or torch._int_mm (oneDNN) with our epilogue.

The choice that ``fq_plugin.ops.set_int8_gemm("auto")`` makes is by row count (tokens x beam); this measures both
sides per row count on the ops as the decoder calls them, with *cold* weights: each timed call reads the next of
``--layers`` distinct weight matrices (40 x 1 MB by default, beyond the caches), as a decoder step reads each
layer's weights once. Prints a markdown table (microseconds per call, median of ``--rounds`` rounds, and the ratio).

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/bench_int8_gemm.py [--threads 1] [--n 2048] [--k 512]
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout's kernels
import fq_plugin.ops as ops  # noqa: E402


def per_call_us(call, layers, rounds):
    for i in range(layers):  # warm-up: thread pool, oneDNN primitives
        call(i)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(layers):
            call(i)
        samples.append((time.perf_counter() - t0) / layers * 1e6)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=2048, help="output features (weight rows)")
    parser.add_argument("--k", type=int, default=512, help="input features")
    parser.add_argument("--layers", type=int, default=40, help="distinct weight matrices cycled through")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 256])
    args = parser.parse_args()
    if not ops.extension_available():
        sys.exit(f"fq_plugin C++ extension {ops.backend_info()['cause']}")
    torch.set_num_threads(args.threads)
    n, k = args.n, args.k
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g) for _ in range(args.layers)]
    sums = [w.sum(1, dtype=torch.int32) for w in codes]
    bits = [ops.pack_signs(torch.randn(n, k, generator=g)) for _ in range(args.layers)]
    sw, zw, bias = torch.rand(n, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g)
    info = ops.backend_info()
    print(f"CPU path {info['cpu']}, {args.threads} thread(s), N = {n}, K = {k}, {args.layers} weight matrices "
          f"cycled; microseconds per call (median of {args.rounds} rounds)\n")
    print("| rows | int8 kernels | int8 int_mm | kernels / int_mm | W1A8 kernels | W1A8 int_mm | kernels / int_mm |")
    print("|---|---|---|---|---|---|---|")
    before = info["int8_gemm"]
    try:
        for m in args.rows:
            x_u8 = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=g)
            x_s8 = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
            sx, zx = torch.rand(m, generator=g), torch.randn(m, generator=g)
            times = {}
            for gemm in ("kernels", "int_mm"):
                ops.set_int8_gemm(gemm)
                times["int8", gemm] = per_call_us(lambda i: torch.ops.fq_plugin.int8_linear(
                    x_u8, sx, zx, codes[i], sw, zw, sums[i], bias), args.layers, args.rounds)
                times["w1a8", gemm] = per_call_us(lambda i: torch.ops.fq_plugin.binary_linear_w1a8(
                    x_s8, sx, bits[i], sw, bias, k, 1), args.layers, args.rounds)
            row = [f"{m}"]
            for op in ("int8", "w1a8"):
                own, int_mm = times[op, "kernels"], times[op, "int_mm"]
                row += [f"{own:.1f}", f"{int_mm:.1f}", f"{own / int_mm:.2f}"]
            print("| " + " | ".join(row) + " |")
    finally:
        ops.set_int8_gemm(before)


if __name__ == "__main__":
    main()
