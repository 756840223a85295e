"""Micro-benchmark of the low-bit GEMM kernels against fp32 ``F.linear`` and ``torch._int_mm`` on the CPU.

Every op runs on the same shapes side by side in one process, with 1 and 2 threads; the ops are timed round-robin
(``--rounds`` rounds of about ``--batch-time`` seconds each) and the median per call is reported. Prints a markdown
table (GOP/s, 2*M*N*K operations per call, ternary counted like one plane, and speed relative to fp32) to stdout.

Usage: OMP_NUM_THREADS=2 .venv/bin/python scripts/bench/bench_kernels.py [--quick] [--m 4] [--threads 1]
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout's kernels
import fq_plugin.ops as ops  # noqa: E402
from fq_plugin.ops import reference as ref  # noqa: E402

# (N, K): Transformer base/big projections (d = 512/1024, FFN 2048/4096) and a 32k vocabulary over d = 512
NK = [(512, 512), (2048, 512), (512, 2048), (1024, 1024), (4096, 1024), (1024, 4096), (32000, 512)]
MS = [1, 4, 64, 256, 2048]
INT_MM_MAX_OPS = 4e9  # torch._int_mm is skipped above this (it runs at ~1 GOP/s on CPUs without VNNI)


def interleaved_medians(fns, rounds, batch_time):
    """Median seconds per call of each function, measured round-robin (one batch of each per round) so that a
    change of machine load during the run affects every op alike."""
    batches = {}
    for name, fn in fns.items():
        fn()  # warm-up: allocator, thread pool, caches
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        batches[name] = max(1, min(100, int(batch_time / max(once, 1e-7))))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(batches[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / batches[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def operands(m, n, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)
    x_u8 = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=g)
    x_s8 = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    w_s8 = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    return dict(
        x=x, w=w, x_u8=x_u8, x_s8=x_s8, w_s8=w_s8, w_s8_t=w_s8.t(), w_sum=w_s8.sum(1, dtype=torch.int32),
        x_bits=ref.pack_signs(x), w_bits=ref.pack_signs(w), sx=torch.rand(m), zx=torch.randn(m), sw=torch.rand(n),
        zw=torch.randn(n), bias=torch.randn(n), w_planes=torch.cat([ref.pack_signs(w > -0.5), ref.pack_signs(w > 0.5)]))


def candidates(o, m, n, k):
    fq = torch.ops.fq_plugin
    yield "fp32 F.linear", lambda: F.linear(o["x"], o["w"], o["bias"])
    if 2 * m * n * k <= INT_MM_MAX_OPS:
        yield "torch._int_mm", lambda: torch._int_mm(o["x_s8"], o["w_s8_t"])
    else:
        yield "torch._int_mm", None
    yield "int8_linear", lambda: fq.int8_linear(o["x_u8"], o["sx"], o["zx"], o["w_s8"], o["sw"], o["zw"], o["w_sum"],
                                                o["bias"])
    yield "W1A8", lambda: fq.binary_linear_w1a8(o["x_s8"], o["sx"], o["w_bits"], o["sw"], o["bias"], k)
    # Ternary weights as two sign planes: one call summing the planes, and (for comparison) the planes as 2N rows.
    yield "ternary", lambda: fq.binary_linear_w1a8(o["x_s8"], o["sx"], o["w_planes"], o["sw"], o["bias"], k, 2)
    yield "ternary as 2N rows", lambda: fq.binary_linear_w1a8(o["x_s8"], o["sx"], o["w_planes"], o["sw"].repeat(2),
                                                              None, k).view(m, 2, n).sum(1) + o["bias"]
    yield "W1A1", lambda: fq.binary_linear_w1a1(o["x_bits"], o["sx"], o["w_bits"], o["sw"], o["bias"], k, False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="fewer shapes (M in 1, 64, 2048; no 32k vocabulary)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--batch-time", type=float, default=0.01, help="seconds of calls per op and round")
    parser.add_argument("--m", type=int, nargs="+", help="only these activation row counts M")
    args = parser.parse_args()
    ms, nk = (MS, NK) if not args.quick else ([1, 64, 2048], NK[:-1])
    ms = args.m or ms

    info = ops.backend_info()
    print(f"# Low-bit GEMM kernels (CPU), {datetime.date.today()}\n")
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, extension: {info['extension']} "
          f"(CPU path: {info['cpu']}, available: {', '.join(info['cpu_paths']) or '-'}), load average at start "
          f"{os.getloadavg()[0]:.1f}\n")
    names = [name for name, _ in candidates(operands(1, 1, 1), 1, 1, 1)]
    print("| M | N | K | threads | " + " | ".join(f"{n} GOP/s" for n in names) + " | "
          + " | ".join(f"{n} ÷ fp32" for n in names[1:]) + " |")
    print("|" + "---|" * (4 + 2 * len(names) - 1))
    for m in ms:
        for n, k in nk:
            if m == 2048 and n == 32000:
                continue  # 67 GOP per call: minutes for the whole row; the vocabulary is projected per beam step
            o = operands(m, n, k)
            for threads in args.threads:
                torch.set_num_threads(threads)
                fns = {name: fn for name, fn in candidates(o, m, n, k) if fn is not None}
                medians = interleaved_medians(fns, args.rounds, args.batch_time)
                times = {name: medians.get(name) for name in names}
                ops_count = 2 * m * n * k
                gops = [f"{ops_count / t / 1e9:.1f}" if t else "skipped" for t in times.values()]
                base = times["fp32 F.linear"]
                ratios = [f"{base / t:.2f}×" if t else "–" for name, t in times.items() if name != "fp32 F.linear"]
                print(f"| {m} | {n} | {k} | {threads} | " + " | ".join(gops) + " | " + " | ".join(ratios) + " |",
                      flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
