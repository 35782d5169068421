"""Long runs: peak memory and speed of 100k- and 1M-request simulations, side by side.

Run: ``python -m benchmarks.long_run`` (about 10 minutes on 2 cores; ``--sizes 100000,1000000`` to choose,
``--no-reference`` for the windowed runs only).

Each size runs in a fresh child process (so one run's peak cannot hide in another's): Llama-2-7B on one
A100-80GB with the shipped hybrid predictor (lookup tables built before timing), Poisson arrivals at
``--rate`` requests/s (one the engine sustains, so queues stay short), prompts of 128 and outputs of 32
tokens, ``record_iterations=False`` (no per-iteration log) and every request's row streamed to a temporary
Parquet file (``stream_requests_to``). Each size runs twice:

* **windowed**: the workload is a :class:`scheduler.workload_stream.StreamedWorkload`, generated a chunk at a
  time and fed through a window of engine state (:mod:`scheduler.engine_window`); memory should not grow with
  the number of requests;
* **whole workload** (the reference, the previous engine path): the workload's arrays are built up front and
  the engine keeps a row per request (a few hundred bytes each).

The child reports

* its resident memory before the workload exists (``base``: interpreter, libraries, predictor tables),
* the peak resident memory of the process (``VmHWM`` from ``/proc/self/status``; not ``ru_maxrss``, which on
  Linux carries the parent's resident size across ``execve``, so a child of a large parent reported that),
* wall time and simulated requests per wall second, and the size of the Parquet output.

The parent prints every run, and per mode the ratio of the largest run's peak to the smallest's and the
marginal bytes per request between them, ``(peak_1M − peak_100k) / 900,000``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODEL, GPU = "llama-2-7b", "a100-80gb"
PROMPT, OUTPUT = 128, 32


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (0 where /proc is unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peak_kib() -> int:
    """Peak resident memory of this process image, KiB: ``VmHWM``. ``ru_maxrss`` only where /proc is missing:
    on Linux it survives ``execve``, so a child started from a large parent reports the parent's RSS (the copy it
    was forked as) when that is larger than its own peak."""
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # both KiB on Linux


class _Sampler(threading.Thread):
    """Samples VmRSS every 50 ms (the peak is VmHWM anyway; the samples show when it is reached)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.wait(0.05):
            self.samples.append((time.perf_counter() - self.t0, _status_kib("VmRSS")))


def child(n: int, rate: float, windowed: bool) -> dict:
    from predictor import Predictor
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.workload import build_workload
    from scheduler.workload_stream import stream_workload

    predictor = Predictor.load()
    sim = Simulator(predictor, MODEL, GPU, 1, "fp16", EngineConfig())
    sim.run(build_workload("poisson", 64, rate=rate, prompt_len=PROMPT, output_len=OUTPUT, seed=1),
            record_iterations=False)  # warm up: tables built, code paths loaded
    base_kib = _status_kib("VmRSS")
    sampler = _Sampler()
    sampler.start()
    make = stream_workload if windowed else build_workload
    workload = make("poisson", n, rate=rate, prompt_len=PROMPT, output_len=OUTPUT, seed=0)
    workload_kib = _status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "requests.parquet"
        t = time.perf_counter()
        result = sim.run(workload, record_iterations=False, stream_requests_to=out)
        wall = time.perf_counter() - t
        summary = result.summary()
        parquet_bytes = out.stat().st_size
    sampler.stop.set()
    sampler.join()
    peak_kib = _peak_kib()
    at_peak = max(sampler.samples, key=lambda s: s[1]) if sampler.samples else (0.0, 0)
    return {
        "requests": n, "windowed": windowed, "rate": rate, "finished": summary["finished"], "partial": summary["partial"],
        "wall_s": wall, "requests_per_wall_s": n / wall, "simulated_s": summary["makespan_s"],
        "mean_batch": summary.get("batch_size", {}).get("mean"), "iterations": summary["iterations"],
        "base_rss_mib": base_kib / 1024, "after_workload_rss_mib": workload_kib / 1024,
        "peak_rss_mib": peak_kib / 1024, "peak_sampled_at_s": at_peak[0],
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "growth_bytes_per_request": (peak_kib - base_kib) * 1024 / n, "parquet_mib": parquet_bytes / 2**20,
        "ttft_p50_ms": summary["ttft_ms"]["p50"], "tpot_p50_ms": summary["tpot_ms"]["p50"],
    }


def _child(n: int, rate: float, windowed: bool) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "benchmarks.long_run", "--child", str(n), "--rate", str(rate)]
    return subprocess.run(argv + (["--windowed"] if windowed else []), capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          check=False)


def run_sizes(sizes: list[int], rate: float, windowed: bool = True) -> list[dict]:
    """One fresh child process per size, after a small throwaway child that fills the lookup-table cache (a
    child that had to build the tables would count that transient in its peak, which is the process's)."""
    _child(1000, rate, windowed)
    rows = []
    for n in sizes:
        proc = _child(n, rate, windowed)
        if proc.returncode != 0:
            raise SystemExit(f"child run of {n:,} requests failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def _ratio(rows: list[dict]) -> str:
    a, b = rows[0], rows[-1]
    marginal = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20 / (b["requests"] - a["requests"])
    return (f"peak RSS {b['requests']:,} / {a['requests']:,} requests: {b['peak_rss_mib'] / a['peak_rss_mib']:.2f} "
            f"(marginal {marginal:.0f} bytes per request)")


def report(rows: list[dict]) -> str:
    lines = [(f"{MODEL} on {GPU}, hybrid predictor, Poisson {rows[0]['rate']:g} req/s, {PROMPT} in / {OUTPUT} out "
              f"tokens, record_iterations=False, requests streamed to Parquet"), "",
             ("| run | requests | finished | wall (s) | requests/s (wall) | simulated (s) | base RSS (MiB) "
              "| peak RSS (MiB) | growth (bytes/request) | Parquet (MiB) |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'windowed' if r['windowed'] else 'whole workload'} | {r['requests']:,} | {r['finished']:,} | "
                     f"{r['wall_s']:.1f} | {r['requests_per_wall_s']:,.0f} | {r['simulated_s']:,.0f} | "
                     f"{r['base_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['growth_bytes_per_request']:.0f} | "
                     f"{r['parquet_mib']:.1f} |")
    lines.append("")
    for windowed, label in ((True, "windowed (streamed workload)"), (False, "whole workload (reference)")):
        runs = [r for r in rows if r["windowed"] == windowed]
        if len(runs) >= 2:
            lines.append(f"{label}: {_ratio(runs)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated request counts")
    parser.add_argument("--rate", type=float, default=40.0, help="Poisson arrival rate, requests/s")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--windowed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference runs that hold the whole workload (the previous engine path)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.rate, args.windowed)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = run_sizes(sizes, args.rate, windowed=True)
    if not args.no_reference:
        rows += run_sizes(sizes, args.rate, windowed=False)
    print(report(rows))
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
