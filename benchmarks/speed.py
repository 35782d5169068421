"""Speed figures of issue 19, each beside a reference measured in the same run.

Run: ``python -m benchmarks.speed`` (about a minute on 2 cores); ``--plans`` adds ``inference-sim plan`` on every
shipped example, once as is and once beside two CPU-burning processes (the chosen plans must be equal);
``--memory`` adds the 100k- vs 1M-request peak-memory runs of :mod:`benchmarks.long_run` (several minutes).

Whole-command figures run the ``inference-sim`` entry point in a fresh interpreter (median of ``--repeats``
runs, wall clock), with the interpreter's own start-up (``python -c pass``) measured beside them. In-process
figures use the shipped hybrid predictor beside the roofline-only one (no LightGBM at all). The predictor's
lookup tables are cached on disk: whole-command figures are for a warm cache (each command is run once before
timing), and the cold build is reported separately.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL, GPU = "llama-2-7b", "a100-80gb"
SIM_REQUESTS, SIM_RATE = 4096, 6.0
SIMULATE = ["simulate", "--model", MODEL, "--gpu", GPU, "--workload", "poisson", "--rate", str(SIM_RATE), "--trace",
            "splitwise_conv", "--num-requests", str(SIM_REQUESTS), "--json"]
EXAMPLES = ("chain_summary", "colocation", "ensemble_llm_blender", "routing_routerbench")
PACKAGES = ("inference_sim", "predictor", "features", "scheduler", "training")


class Timed:
    """Median wall and CPU (user + system, the command's own processes) seconds of a command, and its stdout."""

    def __init__(self, argv: list[str], repeats: int, env: dict | None = None):
        walls, cpus, self.out = [], [], ""
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                                  check=False)
            walls.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            self.out = proc.stdout
        self.wall_s, self.cpu_s = statistics.median(walls), statistics.median(cpus)

    def __str__(self) -> str:
        return f"{self.wall_s:.2f} s wall ({self.cpu_s:.2f} s CPU)"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inference_sim.cli", *args]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# --- figures ------------------------------------------------------------------------------------------
def startup(repeats: int) -> list[tuple[str, str, str]]:
    bare, typer_only = Timed(_python("pass"), repeats), Timed(_python("import typer"), repeats)
    ref = f"python -c pass: {bare}; python -c 'import typer': {typer_only}"
    return [("inference-sim --help", str(Timed(_cli("--help"), repeats)), ref),
            ("inference-sim simulate --help", str(Timed(_cli("simulate", "--help"), repeats)), ref)]


def loading(repeats: int) -> list[tuple[str, str, str]]:
    timed = ("import time; t, c = time.perf_counter(), time.process_time(); from predictor import Predictor; "
             "p = Predictor.{call}; {extra}print(time.perf_counter() - t, time.process_time() - c)")
    runs = {}
    for name, call, extra in (("lazy", "load()", ""), ("eager", "load()", "p._residual_booster(); "),
                              ("roofline", "roofline_only()", "")):
        values = [Timed(_python(timed.format(call=call, extra=extra)), 1).out.split() for _ in range(repeats)]
        wall, cpu = (statistics.median(float(v[i]) for v in values) for i in (0, 1))
        runs[name] = f"{wall:.2f} s wall ({cpu:.2f} s CPU)"
    return [("Predictor.load(), imports included", runs["lazy"],
             f"booster parsed at load (previous path): {runs['eager']}; roofline_only(): {runs['roofline']}")]


def tables() -> list[tuple[str, str, str]]:
    from predictor import Predictor
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from predictor.precision import parse_dtype
    from predictor.tables import IterationTables

    spec, gpu, fp16 = get_model(MODEL), get_gpu(GPU), parse_dtype("fp16")
    rows = {}
    for name, predictor in (("hybrid", Predictor.load()), ("roofline", Predictor.roofline_only())):
        t = time.perf_counter()
        table = IterationTables.build(predictor.predict_ops, spec, gpu, 1, fp16)
        build = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.npz"
            table.save(path)
            t = time.perf_counter()
            IterationTables.load(path)
            load = time.perf_counter() - t
        rows[name] = (build, load)
    (hb, hl), (rb, rl) = rows["hybrid"], rows["roofline"]
    return [("tables of one configuration, cold build", f"{hb:.2f} s", f"roofline-only: {rb:.2f} s"),
            ("tables, load from the checksummed cache", f"{hl * 1e3:.1f} ms", f"roofline-only: {rl * 1e3:.1f} ms")]


def prediction() -> list[tuple[str, str, str]]:
    from benchmarks.predictor import iterations_frame
    from predictor import Predictor

    decode = [1024 + i for i in range(32)]
    frame = iterations_frame(200_000)
    out = {}
    for name, predictor in (("hybrid", Predictor.load()), ("roofline", Predictor.roofline_only())):
        predictor.predict_iteration(MODEL, GPU, decode=[1])
        times = []
        cpu = time.process_time()
        for i in range(5000):
            t = time.perf_counter()
            predictor.predict_iteration(MODEL, GPU, 1, "fp16", prefill=[(256, i % 512)], decode=decode)
            times.append(time.perf_counter() - t)
        cpu_us = (time.process_time() - cpu) / len(times) * 1e6
        rates = []
        for _ in range(3):
            t = time.process_time()
            predictor.predict_iterations(frame)
            rates.append(len(frame) / (time.process_time() - t))
        out[name] = (f"{float(np.median(times)) * 1e6:.1f} µs p50 wall ({cpu_us:.1f} µs CPU mean)",
                     f"{max(rates) / 1e6:.2f} M rows per CPU s")
    return [("predict_iteration, 32 decodes + 1 prefill chunk", out["hybrid"][0], f"roofline-only: {out['roofline'][0]}"),
            ("predict_iterations, 200,000 rows", out["hybrid"][1], f"roofline-only: {out['roofline'][1]}")]


def simulation(repeats: int) -> list[tuple[str, str, str]]:
    bare = Timed(_python("pass"), repeats)
    for args in (SIMULATE, [*SIMULATE, "--roofline"]):
        Timed(_cli(*args), 1)  # warm the table cache
    hybrid = Timed(_cli(*SIMULATE), repeats)
    roof = Timed(_cli(*SIMULATE, "--roofline"), repeats)
    one = [*SIMULATE[:SIMULATE.index("--num-requests") + 1], "1", "--json"]
    fixed = Timed(_cli(*one), repeats)  # start-up, loading and reporting: what does not grow with the requests
    finished = json.loads(hybrid.out)["finished"]

    from predictor import Predictor
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.workload import build_workload

    sim = Simulator(Predictor.load(), MODEL, GPU, 1, "fp16", EngineConfig())
    wl = build_workload("poisson", SIM_REQUESTS, rate=SIM_RATE, trace="splitwise_conv", seed=0)
    t = time.perf_counter()
    sim.run(wl)
    engine = time.perf_counter() - t
    def rate(t: Timed) -> str:
        return (f"{SIM_REQUESTS / (t.wall_s - bare.wall_s):,.0f} per wall s "
                f"({SIM_REQUESTS / (t.cpu_s - bare.cpu_s):,.0f} per CPU s)")

    return [(f"simulate {SIM_REQUESTS:,} Splitwise-conv requests, whole command", str(hybrid),
             f"--roofline: {roof}; python -c pass: {bare}; {finished:,} finished"),
            ("  requests simulated beyond interpreter start", rate(hybrid),
             f"--roofline {rate(roof)}; engine loop alone, in process: {SIM_REQUESTS / engine:,.0f} per wall s"),
            ("  the same command with 1 request (fixed cost)", str(fixed),
             f"{SIM_REQUESTS:,} requests at 10,000 per wall s beyond interpreter start would take "
             f"{SIM_REQUESTS / 10_000 + bare.wall_s:.2f} s wall in all")]


def plans(examples: tuple[str, ...] = EXAMPLES) -> list[tuple[str, str, str]]:
    rows = []
    for name in examples:
        argv = _cli("plan", f"examples/{name}.yaml", "--json")
        Timed(_python(f"from predictor import Predictor; from scheduler.app import load_application; from "
                      f"scheduler.planner import Planner; Planner(load_application('examples/{name}.yaml'), "
                      f"Predictor.load())._prepare()"), 1)  # builds every table the plan needs (cache warm)
        quiet = Timed(argv, 1)
        burners = [subprocess.Popen(_python("while True: pass")) for _ in range(2)]
        try:
            loaded = Timed(argv, 1)
        finally:
            for proc in burners:
                proc.kill()
                proc.wait()
        a, b = json.loads(quiet.out), json.loads(loaded.out)
        same = a["chosen"]["stages"] == b["chosen"]["stages"] and a["chosen"]["makespan_s"] == b["chosen"]["makespan_s"]
        rows.append((f"plan {name}, whole command", str(quiet),
                     f"beside 2 CPU burners: {loaded}, same plan: {'yes' if same else 'NO'}; search "
                     f"{a['search_simulations']} simulations, stopped by {a['stopped_by'] or 'completion'}"))
    return rows


def memory() -> list[tuple[str, str, str]]:
    from benchmarks.long_run import run_sizes

    small, large = run_sizes([100_000, 1_000_000], 40.0, windowed=True)
    ref_small, ref_large = run_sizes([100_000, 1_000_000], 40.0, windowed=False)
    return [("peak RSS, 1M requests, windowed (MiB)", f"{large['peak_rss_mib']:.0f}",
             f"100k requests {small['peak_rss_mib']:.0f} MiB: ratio {large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
             f"(target <= 1.10); whole workload held (previous path): {ref_large['peak_rss_mib']:.0f} vs "
             f"{ref_small['peak_rss_mib']:.0f} MiB, ratio {ref_large['peak_rss_mib'] / ref_small['peak_rss_mib']:.2f}")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per whole-command figure (median)")
    parser.add_argument("--plans", action="store_true", help="also plan every shipped example (quiet and loaded)")
    parser.add_argument("--examples", default=",".join(EXAMPLES), help="comma-separated examples for --plans")
    parser.add_argument("--memory", action="store_true", help="also the 100k vs 1M-request peak memory")
    args = parser.parse_args(argv)
    from predictor.cpus import available_cpus

    examples = tuple(e for e in args.examples.split(",") if e)
    shown = (f"{' --plans' if args.plans else ''}"
             f"{' --examples ' + args.examples if args.plans and examples != EXAMPLES else ''}"
             f"{' --memory' if args.memory else ''}")
    # the project's bytecode is compiled first, as ``pip install`` does for installed packages (a session with
    # PYTHONDONTWRITEBYTECODE set would otherwise recompile every changed module in every timed command)
    compiled = all(compileall.compile_dir(ROOT / package, quiet=1) for package in PACKAGES)
    print(f"python -m benchmarks.speed{shown}: {available_cpus()} CPUs available, load average "
          f"{os.getloadavg()[0]:.1f}; project bytecode compiled first: {'yes' if compiled else 'NO'}")
    print("| figure | value | reference (same run) |\n|---|---|---|", flush=True)
    sections = [lambda: startup(args.repeats), lambda: loading(args.repeats), tables, prediction,
                lambda: simulation(args.repeats)]
    if args.plans:
        sections.append(lambda: plans(examples))
    if args.memory:
        sections.append(memory)
    for section in sections:  # rows printed as they come: a long run shows what it has measured so far
        for label, value, ref in section():
            print(f"| {label} | {value} | {ref} |", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
