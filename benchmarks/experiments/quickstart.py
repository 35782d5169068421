"""The first five minutes: writes ``docs/quickstart.md`` and its ``docs/quickstart_*.png`` by running the real
commands (``python -m inference_sim.cli …``, the same code as the ``inference-sim`` entry point).

Run: ``python -m benchmarks.experiments.quickstart`` from the repository root (about 3 minutes on 2 cores).
Each command's output goes to a temporary folder; the PNGs are copied into ``docs/`` (atomically) and each
command's printed output is quoted, shortened, in the page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predictor.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MAX_PNG_BYTES = 300_000


def run(args: list[str], *, lines: int | None = None) -> tuple[str, float]:
    """Run ``inference-sim ARGS`` from the repository root; return (output, shortened, and wall seconds)."""
    env = dict(os.environ, COLUMNS="110", NO_COLOR="1", TERM="dumb")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inference_sim.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"inference-sim {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    text = done.stdout.rstrip("\n").splitlines()
    if lines is not None and len(text) > lines:
        text = text[:lines] + [f"… ({len(done.stdout.splitlines()) - lines} more lines)"]
    return "\n".join(text), wall


def copy_png(src: Path, name: str) -> str:
    data = src.read_bytes()
    if len(data) > MAX_PNG_BYTES:
        raise RuntimeError(f"{src} is {len(data):,} bytes, more than the {MAX_PNG_BYTES:,} allowed in docs/")
    atomic_write(DOCS / name, data)
    return name


def main() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="quickstart-"))
    plan_out, plan_s = run(["plan", "examples/chain_summary.yaml", "--gantt", str(tmp / "plan.png")])
    roof_out, roof_s = run(["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--batch-size", "8",
                            "--input-len", "1024", "--plot", str(tmp / "roofline.png")], lines=12)
    est_out, est_s = run(["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--batch-size", "16",
                          "--input-len", "512", "--output-len", "128"])
    sim_out, sim_s = run(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "poisson", "--rate",
                          "2", "--num-requests", "1000", "--slo-ttft-ms", "1000", "--slo-tpot-ms", "100", "--out",
                          str(tmp / "sim_out")])
    advise_out, advise_s = run(["advise", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "poisson",
                                "--rate", "4", "--num-requests", "300", "--top", "5"], lines=40)
    sweep_out, sweep_s = run(["sweep", "examples/sweep.yaml", "--n-jobs", "2", "--out", str(tmp / "sweep_out")], lines=14)
    pngs = {
        "plan": copy_png(tmp / "plan.png", "quickstart_plan.png"),
        "roofline": copy_png(tmp / "roofline.png", "quickstart_roofline.png"),
        "latency": copy_png(tmp / "sim_out" / "latency_cdf.png", "quickstart_simulate_latency.png"),
        "batch": copy_png(tmp / "sim_out" / "batch_kv_over_time.png", "quickstart_simulate_batch.png"),
        "sweep": copy_png(tmp / "sweep_out" / "pareto.png", "quickstart_sweep.png"),
    }

    def block(text: str) -> list[str]:
        return ["```text", text.replace(str(tmp) + "/", ""), "```"]

    lines = [
        "# Quickstart: the first five minutes",
        "",
        "Seven commands, from install to a capacity plan. Every output and picture below was produced by these exact",
        "commands (`python -m benchmarks.experiments.quickstart` reruns them and rewrites this page); wall times are",
        "from a 2-core machine with the predictor's lookup tables already in the on-disk cache (a first run builds",
        "them: about a second per model × GPU × TP × precision). Every command takes `--json` for machine-readable",
        "output and `--help` for its options; bad input is one `error:` line and exit code 2.",
        "",
        "## 1. Install (Python 3.11)",
        "",
        "```bash",
        "pip install -e .            # add \".[test]\" and run `pytest` for the test suite",
        "```",
        "",
        f"## 2. Plan a multi-LLM job ({plan_s:.0f} s)",
        "",
        "A Llama-2-7B summariser feeding three Llama-2-70B evaluators on 8× A100-80GB: which models run when, on",
        "which GPUs, with what tensor parallelism — judged by simulating every candidate plan on sampled output",
        "lengths. More in [planner.md](planner.md).",
        "",
        "```bash",
        "inference-sim plan examples/chain_summary.yaml --gantt plan.png",
        "```",
        "",
        *block(plan_out),
        "",
        f"![Gantt chart of the chosen plan]({pngs['plan']})",
        "",
        f"## 3. Roofline: what one iteration ideally costs ({roof_s:.0f} s)",
        "",
        "Every op of a prefill iteration and a decode step with its FLOPs, bytes, arithmetic intensity, bound and",
        "ideal time, plus the memory plan; `--plot` draws the roofline chart.",
        "",
        "```bash",
        "inference-sim roofline --model llama-2-7b --gpu a100-80gb --batch-size 8 --input-len 1024 --plot roofline.png",
        "```",
        "",
        *block(roof_out),
        "",
        f"![roofline chart]({pngs['roofline']})",
        "",
        f"## 4. Estimate a static batch ({est_s:.0f} s)",
        "",
        "TTFT, TPOT, end-to-end latency and throughput from the hybrid predictor (roofline × learned residual +",
        "CPU overheads) beside the roofline ideal. Accuracy: [accuracy.md](accuracy.md).",
        "",
        "```bash",
        "inference-sim estimate --model llama-2-7b --gpu a100-80gb --batch-size 16 --input-len 512 --output-len 128",
        "```",
        "",
        *block(est_out),
        "",
        f"## 5. Simulate a serving engine ({sim_s:.0f} s)",
        "",
        "A vLLM-like engine (continuous batching, paged KV cache, chunked prefill, preemption) serving 1,000 Poisson",
        "requests at 2 requests/s; `--out` writes the per-request table, the summary, a Chrome trace and plots.",
        "More in [simulator.md](simulator.md).",
        "",
        "```bash",
        "inference-sim simulate --model llama-2-7b --gpu a100-80gb --workload poisson --rate 2 --num-requests 1000 \\",
        "    --slo-ttft-ms 1000 --slo-tpot-ms 100 --out sim_out/",
        "```",
        "",
        *block(sim_out),
        "",
        f"![latency CDFs]({pngs['latency']})",
        "",
        f"![batch size and KV-cache use over time]({pngs['batch']})",
        "",
        f"## 6. Ask why it is slow and what would help ({advise_s:.0f} s)",
        "",
        "The bottleneck of each phase with its evidence (MFU, MBU, shares of the wall time), then candidate changes",
        "simulated on the same requests and ranked by tokens/s per GPU, with their effect on TTFT and TPOT, their",
        "cost in GPUs and their risks. More in [advisor.md](advisor.md).",
        "",
        "```bash",
        "inference-sim advise --model llama-2-7b --gpu a100-80gb --workload poisson --rate 4 --num-requests 300 --top 5",
        "```",
        "",
        *block(advise_out),
        "",
        f"## 7. Plan capacity: sweep configurations against an SLO ({sweep_s:.0f} s)",
        "",
        "320 configurations of Llama-3-8B (5 GPU kinds × tp 1/2 × fp16/w8a16 × max_num_seqs × chunk size × 4",
        "arrival rates), each simulated and priced from `data/gpu_prices.yaml` (indicative list prices: edit them):",
        "the cheapest configuration meeting TTFT ≤ 1 s and TPOT ≤ 100 ms for 90% of requests, and the cost/latency",
        "Pareto front. `--search` finds each configuration's highest sustainable rate instead; `--dask local` or",
        "`--dask tcp://host:8786` runs it on a Dask cluster. More in [capacity.md](capacity.md).",
        "",
        "```bash",
        "inference-sim sweep examples/sweep.yaml --n-jobs 2 --out sweep_out/",
        "```",
        "",
        *block(sweep_out),
        "",
        f"![cost per million output tokens vs p90 TTFT]({pngs['sweep']})",
        "",
        "## Next",
        "",
        "* Train the residual model yourself: `inference-sim train` (`--quick` for a 15 s smoke run).",
        "* Your own GPUs: `--gpu-file my_gpus.yaml`; your own models: `--model path/to/config.json`.",
        "* Python: `Predictor.load()`, `Simulator`, `Planner`, `scheduler.sweep.run_sweep` — see the docs above.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write(DOCS / "quickstart.md", text)
    return text


if __name__ == "__main__":
    print(main())
