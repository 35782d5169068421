"""Benchmark: roofline of every catalogue model × GPU × {prefill, decode} in one vectorised pass.

Run: ``python benchmarks/roofline_grid.py``. Prints the wall time of the vectorised pass next to a
per-combination loop over the same work (the ratio is measured in this run, on this machine).
"""

from __future__ import annotations

import time

from predictor.analysis import batch_roofline, roofline_grid
from predictor.batch import BatchShape, decode_batch, prefill_batch
from predictor.gpus import gpu_names
from predictor.models import model_names


def main() -> None:
    models, gpus = model_names(), gpu_names()
    batch = BatchShape.concat([prefill_batch(8, 1024), decode_batch(8, 1024)])
    roofline_grid(models[:1], gpus[:1], batch)  # warm-up (imports, catalogue caches)
    t0 = time.perf_counter()
    grid = roofline_grid(models, gpus, batch)
    vectorised_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for model in models:
        for gpu in gpus:
            batch_roofline(model, gpu, batch)
    loop_s = time.perf_counter() - t0
    print(f"combinations: {len(models)} models x {len(gpus)} GPUs x 2 phases = {len(grid)} iterations")
    print(f"vectorised pass: {vectorised_s * 1e3:.1f} ms (target < 1000 ms)")
    print(f"per-(model, GPU) loop: {loop_s * 1e3:.1f} ms  -> vectorised is {loop_s / vectorised_s:.1f}x faster")


if __name__ == "__main__":
    main()
