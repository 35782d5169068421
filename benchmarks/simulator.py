"""Benchmark the serving simulator: simulated requests per wall second.

Run: ``python -m benchmarks.simulator``. 4,096 requests with Splitwise-conversation prompt and output
lengths, Poisson arrivals at a rate that keeps the engine busy, Llama-2-7B on one A100-80GB, hybrid
predictor (tables built before timing). Prints simulated requests per wall second (target ≥ 5,000) and
simulated time / wall time, for the hybrid and roofline-only predictors in the same run.
"""

from __future__ import annotations

import time

from predictor import Predictor
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import build_workload

N, RATE = 4096, 6.0


def bench(predictor: Predictor) -> dict:
    workload = build_workload("poisson", N, rate=RATE, trace="splitwise_conv", seed=0)
    sim = Simulator(predictor, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    t = time.perf_counter()
    result = sim.run(workload)
    wall = time.perf_counter() - t
    s = result.summary()
    return {"wall_s": wall, "requests_per_wall_s": N / wall, "sim_over_wall": s["makespan_s"] / wall,
            "iterations": s["iterations"], "mean_batch": s["batch_size"]["mean"], "kv_util": s["kv_utilization"]["mean"]}


def main() -> None:
    for name, predictor in (("hybrid", Predictor.load()), ("roofline", Predictor.roofline_only())):
        r = bench(predictor)
        print(f"{name:9s} {N} requests in {r['wall_s']:.2f} s wall: {r['requests_per_wall_s']:,.0f} simulated requests/s, "
              f"simulated/wall time {r['sim_over_wall']:,.0f}x, {r['iterations']:,} iterations, mean batch "
              f"{r['mean_batch']:.1f}, KV utilisation {r['kv_util']:.0%}")
    print("target: >= 5,000 simulated requests per wall second")


if __name__ == "__main__":
    main()
