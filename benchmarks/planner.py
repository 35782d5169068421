"""Benchmark: plan the 9-model LLM-Blender ensemble on 8× A100-80GB (target ≤ 10 s).

Run: ``python -m benchmarks.planner``. Times ``Planner.run`` (sampling, ranking, simulations, final
re-simulation on all K samples; baselines excluded) for the beam and greedy strategies:

* **cold** — an empty table cache: the predictor's lookup tables for every model architecture × TP degree are
  built first (they are cached on disk for later runs);
* **warm** — tables loaded from the on-disk cache by a fresh predictor, as any later run does.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from predictor import Predictor
from scheduler.app import load_application
from scheduler.planner import Planner

APP = Path(__file__).resolve().parents[1] / "examples" / "ensemble_llm_blender.yaml"


def run(strategy: str) -> str:
    app = load_application(APP)
    t = time.perf_counter()
    result = Planner(app, Predictor.load(), strategy=strategy).run(baselines=False)
    total = time.perf_counter() - t
    return (f"{strategy:6s} planning {total:6.2f} s (search {result.search_time_s:.2f} s), estimate {result.chosen.mean_s:.0f} s, "
            f"{result.evaluations} evaluations, {result.simulations} simulations")


def main() -> None:
    previous = os.environ.get("INFERENCE_SIM_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cold_cache:
        os.environ["INFERENCE_SIM_CACHE_DIR"] = cold_cache
        print("cold cache:", run("beam"))
        print("warm cache:", run("beam"))
        print("warm cache:", run("greedy"))
    if previous is None:
        os.environ.pop("INFERENCE_SIM_CACHE_DIR", None)
    else:
        os.environ["INFERENCE_SIM_CACHE_DIR"] = previous
    print("target: the 9-model ensemble planned in <= 10 s")


if __name__ == "__main__":
    main()
