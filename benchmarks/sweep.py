"""Benchmark the capacity-planning sweep: wall time locally (joblib, 1 and 2 processes) and on a 2-worker Dask
LocalCluster, side by side in one run, and a check that all three give the identical results table.

Run: ``python -m benchmarks.sweep [SPEC.yaml] [--repeat N]`` (default ``examples/sweep.yaml``: 320 points of
1,000 requests each). Each wall time covers the whole :func:`scheduler.sweep.run_sweep` call: starting the
worker processes or the cluster, each worker loading the predictor and its iteration tables (from the on-disk
cache), and every simulation; the in-process predictor cache is cleared before every run. With ``--repeat N``
the backends run N times, interleaved, and the lowest wall time of each is reported (the least disturbed by
other work on the machine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pandas.testing import assert_frame_equal

from scheduler import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = (("local, n_jobs=1", {"n_jobs": 1}), ("local, n_jobs=2", {"n_jobs": 2}),
            ("Dask LocalCluster, 2 workers x 1 thread", {"dask": "local"}))


def time_backends(spec_path: str | Path = ROOT / "examples" / "sweep.yaml", backends=BACKENDS, repeat: int = 1) -> dict:
    """Run the sweep ``repeat`` times per backend (backends interleaved); return ``{"points", "simulated",
    "cores", "rows", "result"}``.

    Each row holds the backend label, its best (lowest) wall time over the repeats (s), every wall time,
    points per second at the best time, the speed-up over the first backend and whether every table equals
    the first backend's first table exactly.
    """
    sweep = sw.load_sweep(spec_path)
    walls: dict[str, list[float]] = {label: [] for label, _ in backends}
    identical = {label: True for label, _ in backends}
    first = None
    for _ in range(repeat):
        for label, kwargs in backends:
            sw._predictor.cache_clear()  # every run loads its own predictor, in-process ones included
            sw._workload.cache_clear()
            start = time.perf_counter()
            result = sw.run_sweep(sweep, **kwargs)
            walls[label].append(time.perf_counter() - start)
            if first is None:
                first = result
                continue
            try:
                assert_frame_equal(first.table, result.table, check_exact=True)
            except AssertionError:
                identical[label] = False
    rows = []
    for label, _ in backends:
        best = min(walls[label])
        rows.append({"backend": label, "wall_s": best, "walls_s": walls[label], "points_per_s": len(first.table) / best,
                     "speedup": rows[0]["wall_s"] / best if rows else 1.0, "identical": identical[label]})
    return {"points": len(first.table), "simulated": int((first.table["status"] == "ok").sum()),
            "cores": os.cpu_count(), "rows": rows, "result": first}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "sweep.yaml"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per backend; the lowest wall time is reported")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    out = time_backends(args.spec, repeat=args.repeat)
    print(f"{args.spec}: {out['points']} points ({out['simulated']} simulated) on {out['cores']} CPU cores; "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'backend':42s} {'wall (s)':>9s} {'points/s':>9s} {'speed-up':>9s}  identical table   all runs (s)")
    for r in out["rows"]:
        print(f"{r['backend']:42s} {r['wall_s']:9.1f} {r['points_per_s']:9.2f} {r['speedup']:8.2f}x  "
              f"{'yes' if r['identical'] else 'NO':15s}  {', '.join(f'{w:.1f}' for w in r['walls_s'])}")


if __name__ == "__main__":
    main()
