"""Capacity planning on the shipped example: writes ``docs/capacity.md`` with its plots.

Run: ``python -m benchmarks.experiments.capacity`` (about 5 minutes on 2 cores). It

1. runs ``examples/sweep.yaml`` (Llama-3-8B, 5 GPU kinds × tp 1/2 × fp16/w8a16 × max_num_seqs 64/256 × chunk
   512/2048 × 4 rates = 320 points) locally with 1 and 2 processes and on a 2-worker Dask LocalCluster
   (:mod:`benchmarks.sweep`), checks the three tables are identical and records the wall times;
2. reports the cheapest configuration meeting the SLO, the Pareto front and the cheapest configuration per
   rate, with the Pareto plot (``docs/capacity_pareto.png``);
3. runs the search mode (highest sustainable rate per configuration) and reports the cheapest configuration
   per unit of sustained load (``docs/capacity_search.png``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from benchmarks.sweep import time_backends
from predictor.atomic import atomic_write
from scheduler import sweep as sw

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SPEC = ROOT / "examples" / "sweep.yaml"
REPEAT = 2  # runs per backend; the lowest wall time is reported


def _cfg(r) -> str:
    return f"{r['gpu']} × {r['tp']}, {r['dtype']}, max_num_seqs {r['max_num_seqs']}, chunk {r['chunk']}"


def _merge_seqs(rows: list[dict]) -> list[dict]:
    """Join consecutive rows that differ only in max_num_seqs with identical results (\"64/256\")."""
    out: list[dict] = []
    keys = ("gpu", "tp", "dtype", "chunk", "rate", "cost_usd_per_million_output_tokens", "ttft_p90_ms", "tpot_p99_ms",
            "slo_attainment")
    for r in rows:
        if out and all(out[-1][k] == r[k] for k in keys):
            out[-1] = {**out[-1], "max_num_seqs": f"{out[-1]['max_num_seqs']}/{r['max_num_seqs']}"}
        else:
            out.append(dict(r))
    return out


def main() -> str:
    load_before = os.getloadavg()[0]
    timing = time_backends(SPEC, repeat=REPEAT)
    grid = timing["result"]
    grid.plot(DOCS / "capacity_pareto.png")
    summary = grid.summary()
    sweep = grid.sweep
    spec = sweep.spec
    search = sw.run_sweep(sweep, search=True, n_jobs=2)
    search.plot(DOCS / "capacity_search.png")
    s_summary = search.summary()
    load_after = os.getloadavg()[0]

    slo = spec.slo
    best = summary["cheapest"]
    lines = [
        "# Capacity planning: sweeps and SLO search",
        "",
        "`inference-sim sweep SPEC.yaml` simulates every configuration of a grid — GPU kind × tensor parallelism ×",
        "`max_num_seqs` × `max_num_batched_tokens` (the chunked-prefill token budget, \"chunk\") × arrival rate ×",
        "weight precision — with the serving-engine simulator, prices each one from a table of USD per GPU-hour, and",
        "reports the cheapest configuration that meets a latency SLO, the cost/latency Pareto front and a plot.",
        "`--search` instead finds, for each configuration, the highest request rate that still meets the SLO.",
        "It runs in-process, on local processes (`--n-jobs`) or on a Dask cluster (`--dask`), with identical results.",
        "Code: `scheduler/sweep.py` (Python API `load_sweep`, `run_sweep`), `inference_sim/commands/sweep.py`.",
        "",
        "```bash",
        "inference-sim sweep examples/sweep.yaml --n-jobs 2 --out sweep_out/          # grid: results.parquet/.csv, pareto.png",
        "inference-sim sweep examples/sweep.yaml --search --n-jobs 2 --out search_out/  # highest sustainable rate",
        "inference-sim sweep examples/sweep.yaml --dask local --json                   # 2-worker LocalCluster, JSON summary",
        "inference-sim sweep examples/sweep.yaml --dask tcp://scheduler-host:8786      # an existing Dask cluster",
        "```",
        "",
        "## The spec",
        "",
        "A YAML file validated field by field (a bad value is one `error:` line and exit code 2); see",
        "[`examples/sweep.yaml`](../examples/sweep.yaml). Relative paths resolve against the spec's folder.",
        "",
        "| field | meaning |",
        "|---|---|",
        "| `model` | catalogue name, Hugging Face id or `config.json` path |",
        "| `predictor` | `hybrid` (default: roofline × learned residual + CPU overheads) or `roofline`; `artifacts` picks another model |",
        "| `workload` | `kind` poisson / gamma (`cv`) / offline / trace, `num_requests`, `trace` (shipped name or CSV) or `prompt_len` / `output_len` / `output_dist`, `seed` |",
        "| `slo` | `ttft_ms`, `tpot_ms` (either or both) and `attainment`, the fraction of requests that must meet them (e.g. 0.9) |",
        "| `grid` | lists: `gpu`, `tp`, `dtype` (fp16, bf16, fp8, int8, w8a16, w4a16, w<b>a<b>[kv<b>]), `max_num_seqs`, `max_num_batched_tokens`, `rate` (requests/s; poisson and gamma only) |",
        "| `engine` | fixed knobs: `block_size`, `gpu_memory_utilization`, `chunked_prefill`, `policy` (`continuous`, "
        "`prefill_first` or `static`) |",
        "| `prices` | price table (default [`data/gpu_prices.yaml`](../data/gpu_prices.yaml)); `gpu_file` adds your own GPUs |",
        "| `pareto` | `ttft_p90` (default) or `tpot_p99`: the latency axis of the Pareto front |",
        "| `search` | `rel_tol`, `max_steps`, `lo_fraction`, `max_expand` of the rate search |",
        "",
        "**Prices.** `data/gpu_prices.yaml` holds *indicative* on-demand list prices (USD per GPU-hour, 2025–2026),",
        "not quotes: edit it, or point `prices:` at your own copy, with the prices of your contract before reading",
        "any cost out of a sweep. A configuration costs `tp × price` per hour (one model instance on `tp` GPUs).",
        "",
        "## What each point records",
        "",
        "Points that cannot run are **skipped** with the reason (`tp` that does not shard the model's heads, or weights",
        "plus workspace that leave no room for a KV block at that `max_num_batched_tokens` / `max_num_seqs`). Every other",
        "point is one simulation of the seeded workload (the same requests at every point; Poisson arrivals at every",
        "rate are one pattern compressed in time) and records: `gpu`, `tp`, `dtype`, `max_num_seqs`, `chunk`, `rate`,",
        "`gpus` (= tp), `cost_usd_per_hour`, `cost_usd_per_million_output_tokens` (= cost per hour / output tokens per",
        "hour), `output_tokens_per_s` and `requests_per_s` (over the run's makespan, first arrival to last finish),",
        "TTFT/TPOT/E2E p50/p90/p99 (ms), `slo_attainment` (requests meeting both targets over all requests: rejected",
        "ones count as misses), `goodput_requests_per_s`, `meets_slo` (attainment ≥ target), finished / rejected",
        "requests, preemptions, KV blocks, `status` (ok / skipped), `reason`, `pareto`, `cheapest` and `partial`.",
        "The table is written atomically as `results.parquet` and `results.csv` in `--out`, with `summary.json` and",
        "`pareto.png`.",
        "",
        "* **Pareto front** (`pareto` column): the simulated points that no other point beats on both cost per",
        "  million output tokens and p90 TTFT (`pareto: tpot_p99` for p99 TPOT) — both minimised; a point is off the",
        "  front when another costs no more and is no slower, and is strictly better on one.",
        "* **Cheapest meeting the SLO** (`cheapest` column): the lowest cost per million output tokens among points",
        "  with `meets_slo` (ties: lower latency, then fewer GPUs). `summary.json` also lists, for each rate, the",
        "  configuration meeting the SLO at the lowest USD per hour — the instance to buy for that load.",
        "* **Ctrl-C** (or SIGTERM) stops the sweep, writes the points finished so far with `partial` set (column and",
        "  JSON) into `OUT/partial/` — a complete earlier result in `OUT` stays as it was — and exits with code 130",
        "  (143). Files in `OUT` that the tool did not write are never replaced without `--force`.",
        "",
        f"## Example: {spec.model} chat traffic under TTFT ≤ {slo.ttft_ms:g} ms and TPOT ≤ {slo.tpot_ms:g} ms for "
        f"{slo.attainment:.0%} of requests",
        "",
        f"`examples/sweep.yaml`: {spec.workload.num_requests:,} Poisson requests per point with Splitwise-conversation",
        f"prompt/output lengths, on {', '.join(sweep.gpus)} × tp {'/'.join(map(str, spec.grid.tp))} × "
        f"{'/'.join(spec.grid.dtype)} × max_num_seqs {'/'.join(map(str, spec.grid.max_num_seqs))} × chunk "
        f"{'/'.join(map(str, spec.grid.max_num_batched_tokens))} × {'/'.join(f'{r:g}' for r in spec.grid.rate)} "
        f"requests/s: **{summary['points']} points**, {summary['simulated']} simulated, {summary['skipped']} skipped, "
        f"{summary['meeting_slo']} meeting the SLO; hybrid predictor, prices from `data/gpu_prices.yaml`.",
        "",
    ]
    if best is None:
        lines += ["**No configuration meets the SLO.**", ""]
    else:
        lines += [
            f"**Cheapest configuration meeting the SLO: {_cfg(best)} at {best['rate']:g} requests/s** — "
            f"${best['cost_usd_per_million_output_tokens']:.3f} per million output tokens (${best['cost_usd_per_hour']:.2f}"
            f" per hour), TTFT p90 {best['ttft_p90_ms']:.0f} ms, TPOT p99 {best['tpot_p99_ms']:.1f} ms, attainment "
            f"{best['slo_attainment']:.1%}, {best['output_tokens_per_s']:.0f} output tokens/s.",
            "",
        ]
    lines += [
        "![cost per million output tokens vs p90 TTFT](capacity_pareto.png)",
        "",
        "Filled markers meet the SLO, hollow ones miss it; the black staircase is the Pareto front, the star the",
        "cheapest point meeting the SLO. Cost per token falls with the rate (the instance is paid for by the hour)",
        "until the engine saturates and TTFT explodes.",
        "",
        "Pareto front (cheapest first; configurations that differ only in `max_num_seqs` and give identical",
        "results share a row):",
        "",
        "| configuration | rate (req/s) | USD/h | USD per M output tokens | TTFT p90 (ms) | TPOT p99 (ms) | attainment | meets SLO |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in _merge_seqs(summary["pareto"]):
        lines.append(f"| {_cfg(r)} | {r['rate']:g} | {r['cost_usd_per_hour']:.2f} | "
                     f"{r['cost_usd_per_million_output_tokens']:.3f} | {r['ttft_p90_ms']:,.0f} | {r['tpot_p99_ms']:.1f} | "
                     f"{r['slo_attainment']:.1%} | {'yes' if r['meets_slo'] else 'no'} |")
    lines += ["", "Cheapest instance meeting the SLO at each rate (lowest USD per hour):", "",
              "| rate (req/s) | configuration | USD/h | USD per M output tokens | TTFT p90 (ms) | TPOT p99 (ms) |",
              "|---:|---|---:|---:|---:|---:|"]
    for entry in summary["cheapest_per_rate"]:
        b = entry["best"]
        if b is None:
            lines.append(f"| {entry['rate']:g} | none meets the SLO | | | | |")
        else:
            lines.append(f"| {entry['rate']:g} | {_cfg(b)} | {b['cost_usd_per_hour']:.2f} | "
                         f"{b['cost_usd_per_million_output_tokens']:.3f} | {b['ttft_p90_ms']:,.0f} | {b['tpot_p99_ms']:.1f} |")

    p = spec.search
    sbest = s_summary["cheapest"]
    lines += [
        "",
        "## Search mode: the highest sustainable rate per configuration",
        "",
        "`--search` drops the rate axis and, for each configuration, finds the highest Poisson (or gamma) rate whose",
        "run of `num_requests` requests still meets the SLO:",
        "",
        "1. **Bounds from a quick throughput estimate.** One simulation with every request arriving at t = 0; while",
        "   requests still wait the engine runs its full batch, so the output tokens it generates until the last",
        "   request is first admitted, over that time and over the mean output length, give its saturated",
        "   throughput `C` (requests/s). The search checks `lo = lo_fraction × C` (if that misses the SLO the",
        "   configuration is *infeasible*: the SLO cannot be met at any load, e.g. TPOT on a slow GPU), then",
        "   `hi = C` (doubled, at most `max_expand` times, while it still meets).",
        f"2. **Geometric bisection**, one simulation per step, until `hi / lo − 1 ≤ rel_tol` ({p.rel_tol:g} here) or",
        f"   `max_steps` ({p.max_steps}) steps. The reported `max_rate_rps` is `lo`, a rate that was simulated and met",
        "   the SLO; `upper_rate_rps` was simulated and missed it, so the threshold lies within `rel_tol` above the",
        "   reported rate. With one seed the arrivals at every rate are one pattern compressed in time, so attainment",
        "   is close to monotone in the rate, which bisection assumes.",
        "3. `cost_usd_per_request = cost_usd_per_hour / (3600 × max_rate_rps)`; the cheapest configuration per unit of",
        "   sustained load has the lowest cost per request (`cheapest`). `load` is `max_rate_rps / C`.",
        "",
        "A finite run can meet a TTFT SLO a little above the engine's throughput, while the backlog it builds stays",
        "short; rates more than 10% above `C` are flagged in `reason` (raise `num_requests`). Results go to",
        "`search.parquet`, `search.csv`, `summary.json` and `search.png`.",
        "",
        f"On the example: {s_summary['configurations']} configurations, {s_summary['feasible']} meet the SLO at some rate, "
        f"{s_summary['infeasible']} never, {s_summary['skipped']} skipped; {search.wall_s:.0f} s with 2 processes, "
        f"{int(search.table['simulations'].sum()):,} simulations in all.",
        "",
    ]
    if sbest is not None:
        lines += [
            f"**Cheapest per unit of sustained load: {_cfg(sbest)}** — {sbest['max_rate_rps']:.2f} requests/s "
            f"(bracket {sbest['max_rate_rps']:.2f}–{sbest['upper_rate_rps']:.2f}) at ${sbest['cost_usd_per_hour']:.2f} per "
            f"hour = **${sbest['cost_usd_per_request'] * 1e3:.4f} per 1,000 requests** "
            f"(${sbest['cost_usd_per_million_output_tokens']:.3f} per million output tokens; TTFT p90 "
            f"{sbest['ttft_p90_ms']:.0f} ms, TPOT p99 {sbest['tpot_p99_ms']:.1f} ms at that rate).",
            "",
        ]
    lines += ["![highest sustainable rate vs cost per 1,000 requests](capacity_search.png)", "",
              "Ten cheapest per request:", "",
              "| configuration | max rate (req/s) | throughput estimate C | USD/h | USD per 1k requests | TTFT p90 (ms) | TPOT p99 (ms) | simulations |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    t = search.table[search.table["status"] == "ok"].sort_values("cost_usd_per_request", kind="stable").head(10)
    for r in t.to_dict("records"):
        lines.append(f"| {_cfg(r)} | {r['max_rate_rps']:.2f} | {r['capacity_rps']:.2f} | {r['cost_usd_per_hour']:.2f} | "
                     f"{r['cost_usd_per_request'] * 1e3:.4f} | {r['ttft_p90_ms']:,.0f} | {r['tpot_p99_ms']:.1f} | "
                     f"{r['simulations']} |")

    rows = timing["rows"]
    lines += [
        "",
        "## Execution and wall time",
        "",
        "Points run through joblib: in-process by default, on local worker processes with `--n-jobs N`, or on a",
        "Dask cluster with `--dask` through joblib's `dask` backend. Each worker process loads the predictor once",
        "(`functools.lru_cache`; iteration tables come from the on-disk cache, `~/.cache/inference-sim/tables`) and",
        "builds each point's workload from the seed, so a point's result does not depend on where it ran: the",
        "tables below are identical, value for value.",
        "",
        f"Measured with `benchmarks/sweep.py` (`python -m benchmarks.sweep --repeat {REPEAT}`, run by this script) on "
        f"the example's {timing['points']} points: {timing['cores']} CPU cores ({platform.machine()}, Python "
        f"{platform.python_version()}); load average {load_before:.1f} before and {load_after:.1f} after — the machine "
        "was shared with other jobs, so the times are indicative. Each backend ran "
        f"{REPEAT} times, interleaved; the table gives the lowest wall time (all runs in the last column). Each time "
        "covers the whole run: starting worker processes or the cluster, each worker loading the predictor and its",
        "tables, and all simulations.",
        "",
        "| backend | wall time (s) | points/s | speed-up | identical table | all runs (s) |",
        "|---|---:|---:|---:|:---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['wall_s']:.1f} | {r['points_per_s']:.2f} | {r['speedup']:.2f}× | "
                     f"{'yes' if r['identical'] else 'NO'} | {', '.join(f'{w:.1f}' for w in r['walls_s'])} |")
    lines += [
        "",
        f"Here two worker processes ran {rows[1]['speedup']:.2f}× and the LocalCluster {rows[2]['speedup']:.2f}× as fast "
        "as one process. The gain is bounded by the cores: every worker process loads the predictor (about 1.5 s)",
        "and its iteration tables, and the parent process (and, for Dask, the scheduler and the nannies) share the",
        "same cores. On a cluster with more cores the points spread over all its worker threads.",
        "",
        "## Running on an existing Dask cluster",
        "",
        "1. Install the same version of this package (and its data: run from a checkout, `pip install -e .`) on the",
        "   machine that runs `inference-sim sweep` and on every worker; the shipped `artifacts/` and `data/` are",
        "   read there. Trace CSV files named in the spec must be readable at the same absolute path on the",
        "   workers (shipped traces always are).",
        "2. Start a scheduler and workers (one thread per worker process: a simulation is single-threaded Python):",
        "",
        "   ```bash",
        "   dask scheduler --host 0.0.0.0 --port 8786                                   # on the scheduler host",
        "   dask worker tcp://scheduler-host:8786 --nworkers 16 --nthreads 1 --memory-limit 4GiB   # on each worker host",
        "   ```",
        "",
        "3. Point the sweep at it: `inference-sim sweep examples/sweep.yaml --dask tcp://scheduler-host:8786`. The",
        "   command checks the address answers (one-line error otherwise), connects a `distributed.Client`, and runs",
        "   the points through `joblib.parallel_backend(\"dask\")`; results come back to the calling machine, which",
        "   writes the table and plot. Each worker builds the iteration tables it lacks once (about a second per",
        "   model × GPU × TP × precision) and caches them on its own disk (`INFERENCE_SIM_CACHE_DIR` to move it).",
        "",
        "`--dask local` starts a 2-worker `LocalCluster` bound to 127.0.0.1 (one process and one thread per worker,",
        "its dashboard on 127.0.0.1 too, on a free port; `--n-jobs N` sets the number of workers) and closes it at the end; Ctrl-C",
        "reaches only the calling process, which stops, writes the partial table and closes the cluster. From",
        "Python, pass a",
        "`distributed.Client` you own: `run_sweep(load_sweep(\"examples/sweep.yaml\"), dask=client)`.",
        "",
        "## Caveats",
        "",
        "* One model instance per configuration: a load above one instance's sustainable rate needs replicas",
        "  (divide the load by `max_rate_rps` from the search).",
        "* Each point is a finite run (`num_requests`). Short runs flatter overloaded configurations (the backlog",
        "  never grows long) and under-state throughput (the drain at the end counts in the makespan); the example",
        "  uses 1,000 requests per point, with which overloaded rates miss the TTFT SLO.",
        "* Prices are indicative and per GPU whatever the instance size; multi-GPU instances are often priced",
        "  differently per GPU. Edit `data/gpu_prices.yaml`.",
        "* The latencies are the simulator's and the predictor's: see [simulator.md](simulator.md) and",
        "  [accuracy.md](accuracy.md) for how far to trust them.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write(DOCS / "capacity.md", text)
    return text


if __name__ == "__main__":
    print(main())
