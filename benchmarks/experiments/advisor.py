"""Worked examples of ``inference-sim advise``; writes ``docs/advisor.md``.

Three setups — (a) memory-bound small-batch decode, (b) compute-bound long prompts, (c) TP-communication-bound
— each advised with :func:`scheduler.advisor.advise`, then the top recommendation is re-simulated with a fresh
seed (:func:`scheduler.advisor.recheck`) to compare the predicted and the delivered gain.

Run: ``python benchmarks/experiments/advisor.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import time
from pathlib import Path

from predictor import Predictor
from predictor.atomic import atomic_write
from scheduler.advisor import Scenario, WorkloadSpec, advise, recheck
from scheduler.engine import EngineConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "advisor.md"
FRESH_SEED = 1

EXAMPLES = [
    ("(a) Memory-bound: small-batch decode",
     "llama-2-7b on one A100-80GB, at most 8 running sequences, 300 offline requests of 128 prompt tokens with "
     "output lengths sampled from Llama-2-7b-chat's measured distribution (the seed draws the lengths).",
     "--model llama-2-7b --gpu a100-80gb --workload offline --num-requests 300 --prompt-len 128 "
     "--output-dist Llama-2-7b-chat-hf --max-num-seqs 8",
     Scenario("llama-2-7b", "a100-80gb", config=EngineConfig(max_num_seqs=8)),
     WorkloadSpec("offline", 300, prompt_len=128, output_dist="Llama-2-7b-chat-hf")),
    ("(b) Compute-bound: long prompts, short outputs",
     "llama-2-7b on one A100-80GB, 300 Poisson requests at 20 requests/s of 3,500 prompt tokens and 2 output tokens "
     "(the seed draws the arrival times). The offered prefill load is several times the GPU's capacity (about 4 "
     "prompts/s), so every candidate runs saturated and throughput measures capacity.",
     "--model llama-2-7b --gpu a100-80gb --workload poisson --rate 20 --num-requests 300 --prompt-len 3500 "
     "--output-len 2",
     Scenario("llama-2-7b", "a100-80gb"),
     WorkloadSpec("poisson", 300, rate=20.0, prompt_len=3500, output_len=2)),
    ("(c) Network-bound: TP 4 over PCIe",
     "llama-2-7b on four L40S GPUs at TP 4 (no NVLink: 32 GB/s per direction between GPUs), 300 Poisson requests "
     "at 4 requests/s of 512 prompt and 128 output tokens (the seed draws the arrival times).",
     "--model llama-2-7b --gpu l40s --tp 4 --workload poisson --rate 4 --num-requests 300 --prompt-len 512 "
     "--output-len 128",
     Scenario("llama-2-7b", "l40s", tp=4),
     WorkloadSpec("poisson", 300, rate=4.0, prompt_len=512, output_len=128)),
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = "|".join("---" if i < 2 else "---:" for i in range(len(header)))
    return ["| " + " | ".join(header) + " |", f"|{align}|", *("| " + " | ".join(r) + " |" for r in rows)]


def _pct(x: float) -> str:
    return "—" if x != x else f"{x:+.1%}"


def bottleneck_lines(report: dict) -> list[str]:
    rows = []
    for phase, b in report["bottlenecks"].items():
        e = b["evidence"]
        rows.append([phase, f"**{b['bottleneck']}**", f"{e['mfu']:.1%}", f"{e['mbu']:.1%}",
                     *(f"{e[f'{k}_share']:.0%}" for k in ("compute", "memory", "network", "overhead")),
                     f"{e['roofline_distance']:.2f}"])
    return _table(["phase", "bottleneck", "MFU", "MBU", "compute share", "memory share", "network share",
                   "overhead share", "wall ÷ roofline time"], rows)


def candidate_lines(report: dict, top: int = 5) -> list[str]:
    b = report["baseline"]
    rows = [["—", "baseline", "", str(b["gpus"]), f"{b['output_tokens_per_s']:.0f}",
             *(f"{b[k]:.1f}" for k in ("ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_p90_ms")), ""]]
    for i, row in enumerate(report["candidates"][:top], 1):
        m, r = row["metrics"], row["relative"]
        rows.append([str(i), f"{row['name']}: {row['change']}", _pct(row["gain"]), str(row["gpus"]),
                     f"{m['output_tokens_per_s']:.0f} ({_pct(r['output_tokens_per_s'])})",
                     *(f"{m[k]:.1f} ({_pct(r[k])})" for k in ("ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_p90_ms")),
                     row["effect"]])
    return _table(["#", "candidate", f"{report['objective']} gain", "GPUs", "output tokens/s", "TTFT p50 ms",
                   "TTFT p90 ms", "TPOT p50 ms", "TPOT p90 ms", "effect"], rows)


def example(p, title: str, text: str, args: str, base: Scenario, spec: WorkloadSpec) -> tuple[list[str], dict]:
    report = advise(p, base, spec)
    top = report["candidates"][0]
    check = recheck(p, base, spec, report, seed=FRESH_SEED)
    # an analytic top recommendation cannot be re-simulated; the best simulated one is checked as well
    simulated = next(r for r in report["candidates"] if r["effect"] == "simulated")
    sim_check = (recheck(p, base, spec, report, seed=FRESH_SEED, name=simulated["name"])
                 if top["effect"] == "analytic" else None)
    lines = [f"## {title}", "", text, "", "```", f"inference-sim advise {args}", "```", "",
             "Bottleneck per phase (baseline; shares are of the phase's wall time):", "", *bottleneck_lines(report), ""]
    lines += [f"* **{phase}**: {b['explanation']}." for phase, b in report["bottlenecks"].items()] + [""]
    if report["baseline"]["arrival_limited"]:
        lines += ["The baseline keeps up with the arrivals, so its throughput is set by the arrival rate.", ""]
    lines += [f"Top 5 candidates of {len(report['candidates'])} (ranked by tokens/s per GPU; relative change vs the "
              "baseline in parentheses):", "", *candidate_lines(report), ""]
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{s['name']} ({s['reason']})" for s in report["skipped"]) + ".", ""]
    lines += [f"Risks of the top recommendation ({top['name']}): " + "; ".join(top["risks"]) + ".", "",
              f"**Fresh seed ({FRESH_SEED}).** Predicted gain ratio {check['predicted_ratio']:.3f}, delivered "
              f"{check['delivered_ratio']:.3f}: relative difference {check['relative_difference']:.1%} — "
              f"{'agrees' if check['agree_within_5pct'] else 'does not agree'} within 5%"
              + (" (analytic: this checks the workload's seed noise only)." if top["effect"] == "analytic" else "."), ""]
    if sim_check is not None:
        lines += [f"**Top simulated recommendation ({simulated['name']}), fresh seed.** Predicted gain ratio "
                  f"{sim_check['predicted_ratio']:.3f}, delivered {sim_check['delivered_ratio']:.3f}: relative "
                  f"difference {sim_check['relative_difference']:.1%} — "
                  f"{'agrees' if sim_check['agree_within_5pct'] else 'does not agree'} within 5%.", ""]
        return lines, {"title": title, "top": f"{top['name']} (analytic); top simulated: {simulated['name']}",
                       **sim_check}
    return lines, {"title": title, "top": top["name"], **check}


def main() -> None:
    t0 = time.time()
    p = Predictor.load()
    body, checks = [], []
    for ex in EXAMPLES:
        lines, check = example(p, *ex)
        body += lines
        checks.append(check)
    summary = _table(["example", "top recommendation", "predicted ratio", "delivered ratio (fresh seed)",
                      "relative difference", "within 5%"],
                     [[c["title"], c["top"], f"{c['predicted_ratio']:.3f}", f"{c['delivered_ratio']:.3f}",
                       f"{c['relative_difference']:.1%}", "yes" if c["agree_within_5pct"] else "**no**"] for c in checks])
    head = [
        "# Optimisation advisor (`inference-sim advise`)", "",
        "`inference-sim advise` simulates a baseline serving setup, names the bottleneck of the prefill and the decode "
        "phase with its evidence, then re-simulates a list of candidate changes on the same requests (same seed) and "
        "ranks them. Logic: `scheduler/advisor.py`; command: `inference_sim/commands/advise.py`. This page is "
        "generated by `benchmarks/experiments/advisor.py`.", "",
        "Every candidate runs on the baseline's engine profile (`--framework`, default `vllm`: the step costs "
        "fitted on measured serving runs, as `inference-sim simulate` uses them; `legacy`: the Vidur-era overhead "
        "fit). The examples on this page call the Python API without a profile, so they run the predictor's own "
        "times (the legacy engine: its CPU overhead is, for instance, the decode bottleneck of example (c)).", "",
        "## How the bottleneck is named", "",
        "From the run's efficiency report (`SimResult.summary()['efficiency']`, definitions in "
        "`predictor/efficiency.py`), per phase: the time the phase's FLOPs would take at the tensor-core peak "
        "(compute share), its HBM bytes at full bandwidth (memory share), its TP collectives at the link bandwidth "
        "(network share) and the non-kernel CPU time (overhead share), each divided by the phase's simulated wall "
        "time. The largest share is the bottleneck. Evidence shown with it: MFU (attained FLOP/s ÷ peak), MBU "
        "(attained bytes/s ÷ HBM bandwidth) and the wall time ÷ roofline time. Shares need not add up to 1: each op is "
        "bound by one resource, and the predictor's kernels run slower than their roofline.", "",
        "## Candidates and ranking", "",
        "Each candidate changes one thing: weight-only quantisation (`w8a16`, `w4a16`), W8A8 (`fp8` only on GPUs with "
        "fp8 tensor cores, `int8`), an 8-bit KV cache, `max_num_seqs` × 2, `max_num_batched_tokens` × 2 and ÷ 2, a "
        "per-sequence KV budget of half the mean context, TP ÷ 2 (alone, or on 2 replicas using the same GPUs), TP × 2, "
        "2 replicas behind a round-robin router (a perfect router: each replica serves every other request), "
        "prefill/decode disaggregation (1 prefill + 1 decode instance, `scheduler.techniques.cluster`), and "
        "speculative decoding with draft heads (γ = 4, acceptance 0.8 assumed). The engine has no speculation, so "
        "that one is **analytic**: the per-step speed-up `s` from `scheduler.techniques.speculative` at the "
        "baseline's mean batch and context divides TPOT; TTFT is unchanged; the makespan becomes max(arrival span, "
        "makespan × (1 − d + d / s)) with `d` the decode share of the engine's busy time.", "",
        "Candidates the predictor or the memory model rejects (model does not fit, TP does not divide the heads, a "
        "precision the GPU lacks) are listed as skipped with the reason. The default objective is **tokens/s per GPU** "
        "relative to the baseline: gain = (tokens/s ÷ GPUs) / (baseline tokens/s ÷ baseline GPUs) − 1 "
        "(`--objective throughput | ttft | tpot` rank by tokens/s or by the p90 latency instead). Accuracy effects of "
        "quantisation and KV eviction are not modelled; each candidate states its risks.", "",
        "## Does the prediction hold on a fresh seed?", "",
        f"For each example the top recommendation and the baseline are simulated again with seed {FRESH_SEED} (new "
        "arrival times or output lengths). **Predicted ratio** = the objective's ratio candidate ÷ baseline at seed 0 "
        "(gain + 1, e.g. 1.40 = 40% more tokens/s per GPU); **delivered ratio** = the same ratio at the fresh seed. "
        "They agree within 5% when |delivered ratio ÷ predicted ratio − 1| ≤ 0.05.", "",
        *summary, "",
    ]
    tail = ["## Assumptions and limits", "",
            "* Effects are predictions of the simulator and the predictor on one workload, not measurements.",
            "* Under an open-loop workload that the baseline serves without queueing, throughput follows the arrival "
            "rate; then tokens/s per GPU rewards using fewer GPUs, and the latency objectives are more informative.",
            "* Speculative decoding is analytic (see above); its acceptance rate is an input. When it is the top "
            "recommendation, the fresh-seed check tests only the workload's seed noise, not the analytic model.",
            "* Near capacity the fresh-seed check is fragile: an earlier version of example (b) at 5 requests/s (just "
            "above capacity) missed the 5% agreement, because int8 moved the engine from saturated to "
            "arrival-limited, where throughput depends on the seed's arrival span. At 20 requests/s every candidate "
            "stays saturated.",
            "* More replicas assume a perfect router; disaggregation copies KV over the GPU's own link.",
            ""]
    atomic_write(DOC, "\n".join(head + body + tail))
    print(f"wrote {DOC} in {time.time() - t0:.0f} s (the time stays out of the doc, which regenerates byte for byte)")


if __name__ == "__main__":
    main()
