"""Benchmark the Predictor's scheduler-facing paths, hybrid beside roofline-only, in one run.

Run: ``python -m benchmarks.predictor`` (as a module: a script named predictor.py would shadow the package). Reports, for Llama-2-7B on A100-80GB (tables built first and
their build time reported separately):

* single ``predict_iteration`` latency (p50 and p90 over 5,000 calls of a mixed prefill+decode batch);
* vectorised iterations per second through ``predict_iterations`` (200,000 iterations in one frame);
* ``estimate`` calls per second (batch 16, 512 in / 128 out);
* for reference, per-op model calls (the direct path) per second.
Targets: ≥ 200,000 vectorised iterations/s and a p50 single call ≤ 50 µs on 2 cores.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from predictor import Predictor

MODEL, GPU = "llama-2-7b", "a100-80gb"


def iterations_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    decode = rng.integers(0, 128, n).astype(float)
    chunks = rng.integers(0, 3, n).astype(float)
    new = rng.integers(1, 1024, n).astype(float) * chunks
    ctx = rng.integers(0, 2048, n).astype(float) * chunks
    return pd.DataFrame({
        "model": MODEL, "gpu": GPU, "tp": 1, "dtype": "fp16", "prefill_seqs": chunks, "prefill_tokens": new,
        "prefill_kv_tokens": new + ctx, "prefill_attention_pairs": new * (ctx / np.maximum(chunks, 1) + new / 2 / np.maximum(chunks, 1)),
        "decode_seqs": decode + (new == 0), "decode_context_tokens": (decode + (new == 0)) * rng.integers(16, 4096, n),
        "sample_tokens": decode + (new == 0) + chunks,
    })


def bench(predictor: Predictor) -> dict:
    t0 = time.perf_counter()
    predictor.predict_iteration(MODEL, GPU, decode=[1])
    build_s = time.perf_counter() - t0
    decode = [1024 + i for i in range(32)]
    times = []
    for i in range(5000):
        t = time.perf_counter()
        predictor.predict_iteration(MODEL, GPU, 1, "fp16", prefill=[(256, i % 512)], decode=decode)
        times.append(time.perf_counter() - t)
    frame = iterations_frame(200_000)
    t = time.perf_counter()
    predictor.predict_iterations(frame)
    vec_s = time.perf_counter() - t
    t = time.perf_counter()
    n_est = 200
    for _ in range(n_est):
        predictor.estimate(MODEL, GPU, batch_size=16, input_len=512, output_len=128)
    est_s = time.perf_counter() - t
    ops = predictor.predict_iteration(MODEL, GPU, decode=decode).ops  # warm the direct path once
    t = time.perf_counter()
    for _ in range(20):
        predictor.predict_iteration(MODEL, GPU, decode=decode)._breakdown()
    direct_s = (time.perf_counter() - t) / 20
    return {"table_build_s": build_s, "single_p50_us": float(np.median(times)) * 1e6,
            "single_p90_us": float(np.quantile(times, 0.9)) * 1e6, "vectorised_per_s": len(frame) / vec_s,
            "estimate_per_s": n_est / est_s, "direct_breakdown_ms": direct_s * 1e3, "ops_per_iteration": len(ops)}


def main() -> None:
    results = {"hybrid": bench(Predictor.load()), "roofline": bench(Predictor.roofline_only())}
    print(f"{'':28s}{'hybrid':>14s}{'roofline-only':>16s}")
    rows = [("table build (s)", "table_build_s", "{:.2f}"), ("single call p50 (µs)", "single_p50_us", "{:.1f}"),
            ("single call p90 (µs)", "single_p90_us", "{:.1f}"), ("vectorised iterations/s", "vectorised_per_s", "{:,.0f}"),
            ("estimate calls/s", "estimate_per_s", "{:,.0f}"), ("direct per-op path (ms/iter)", "direct_breakdown_ms", "{:.2f}")]
    for label, key, fmt in rows:
        print(f"{label:28s}{fmt.format(results['hybrid'][key]):>14s}{fmt.format(results['roofline'][key]):>16s}")
    h = results["hybrid"]
    print(f"targets: vectorised >= 200,000/s -> {h['vectorised_per_s']:,.0f}; single p50 <= 50 µs -> {h['single_p50_us']:.1f} µs; "
          f"table path is {h['direct_breakdown_ms'] * 1e3 / h['single_p50_us']:.0f}x faster than per-op model calls")


if __name__ == "__main__":
    main()
