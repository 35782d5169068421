"""Benchmark the serving simulator: simulated requests per wall second.

Run: ``python -m benchmarks.simulator``. 4,096 requests with Splitwise-conversation prompt and output
lengths, Poisson arrivals at a rate that keeps the engine busy, Llama-2-7B on one A100-80GB, hybrid
predictor (tables built before timing). Prints simulated requests per wall second (target ≥ 5,000) and
simulated time / wall time, for the hybrid and roofline-only predictors in the same run, and records them
with the machine's CPU count and load in ``benchmarks/results/simulator.json`` (the speed figure of
``docs/simulator.md`` comes from that record).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from predictor import Predictor
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import build_workload

N, RATE = 4096, 6.0
TARGET = 5000
RECORD = Path(__file__).resolve().parent / "results" / "simulator.json"


def bench(predictor: Predictor) -> dict:
    workload = build_workload("poisson", N, rate=RATE, trace="splitwise_conv", seed=0)
    sim = Simulator(predictor, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    t, cpu = time.perf_counter(), time.process_time()
    result = sim.run(workload)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu  # CPU time: meaningful on a shared machine
    s = result.summary()
    return {"wall_s": wall, "requests_per_wall_s": N / wall, "sim_over_wall": s["makespan_s"] / wall,
            "cpu_s": cpu, "requests_per_cpu_s": N / cpu,
            "iterations": s["iterations"], "mean_batch": s["batch_size"]["mean"], "kv_util": s["kv_utilization"]["mean"]}


def main() -> None:
    from predictor.atomic import atomic_write

    record = {"requests": N, "rate_rps": RATE, "model": "llama-2-7b", "gpu": "a100-80gb",
              "target_requests_per_wall_s": TARGET}
    for name, predictor in (("hybrid", Predictor.load()), ("roofline", Predictor.roofline_only())):
        r = bench(predictor)
        record[name] = r
        print(f"{name:9s} {N} requests in {r['wall_s']:.2f} s wall ({r['cpu_s']:.2f} s CPU): "
              f"{r['requests_per_wall_s']:,.0f} simulated requests/s ({r['requests_per_cpu_s']:,.0f} per CPU second), "
              f"simulated/wall time {r['sim_over_wall']:,.0f}x, {r['iterations']:,} iterations, mean batch "
              f"{r['mean_batch']:.1f}, KV utilisation {r['kv_util']:.0%}")
    print(f"target: >= {TARGET:,} simulated requests per wall second")
    record["machine"] = {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version(),
                         "load_1min": os.getloadavg()[0]}
    atomic_write(RECORD, json.dumps(record, indent=1) + "\n")
    print(f"recorded in {RECORD.relative_to(RECORD.parents[2])}")


if __name__ == "__main__":
    main()
