"""Experiments for docs/simulator.md: the Orca effect and the Sarathi-Serve effect, with our predictor.

Run: ``python -m benchmarks.experiments.batching``. Writes ``docs/simulator.md``.

1. Iteration-level (continuous) vs request-level (static) batching on the same offline workload
   (Orca, OSDI'22: iteration-level scheduling raises throughput several-fold at equal latency).
2. Chunked prefill on vs off on a busy Poisson workload (Sarathi-Serve, OSDI'24: chunking prefills
   keeps decodes flowing, cutting TPOT tail latency — "generation stalls" — at a small TTFT cost).
"""

from __future__ import annotations

from pathlib import Path

from predictor import Predictor
from predictor.atomic import atomic_write
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import build_workload

MODEL, GPU = "llama-2-7b", "a100-80gb"


def run(predictor, workload, **config):
    return Simulator(predictor, MODEL, GPU, 1, "fp16", EngineConfig(**config)).run(workload).summary()


def main() -> str:
    p = Predictor.load()
    lines = ["# The serving simulator", "",
             "A vLLM-like engine (`scheduler/engine.py`): iteration-level batching, paged KV cache sized by the memory",
             "model, FCFS admission bounded by `max_num_seqs` and `max_num_batched_tokens`, chunked prefill on or off,",
             "preemption by recompute; every iteration timed by the hybrid predictor (kernels + CPU overhead).",
             "Produced by `python -m benchmarks.experiments.batching` (Llama-2-7B, one A100-80GB, fp16).", ""]

    # 1. Orca: continuous vs static batching, offline Splitwise-conversation requests
    workload = build_workload("offline", 2000, trace="splitwise_conv", seed=0)
    rows = []
    for max_seqs in (16, 64, 256):
        cont = run(p, workload, policy="continuous", max_num_seqs=max_seqs, max_num_batched_tokens=8192)
        stat = run(p, workload, policy="static", max_num_seqs=max_seqs, max_num_batched_tokens=8192)
        rows.append((max_seqs, cont, stat))
    lines += ["## Iteration-level vs request-level batching (the Orca effect)", "",
              "2,000 offline requests with Splitwise-conversation prompt/output lengths (outputs vary widely, so a",
              "request-level batch idles while its longest member finishes). Paper claim (Orca, OSDI'22): iteration-level",
              "scheduling gives up to 36.9× higher throughput than FasterTransformer's request-level batching at the",
              "same latency; the direction is the point here.", "",
              "| max batch | continuous tokens/s | static tokens/s | throughput ratio | continuous E2E p50 (s) | static E2E p50 (s) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for max_seqs, c, s in rows:
        lines.append(f"| {max_seqs} | {c['output_tokens_per_s']:,.0f} | {s['output_tokens_per_s']:,.0f} | "
                     f"**{c['output_tokens_per_s'] / s['output_tokens_per_s']:.2f}×** | {c['e2e_ms']['p50'] / 1e3:.1f} | "
                     f"{s['e2e_ms']['p50'] / 1e3:.1f} |")

    # 2. Sarathi-Serve: chunked prefill on vs off under load
    workload = build_workload("poisson", 1500, rate=3.0, trace="splitwise_conv", seed=1)
    off = run(p, workload, chunked_prefill=False, max_num_batched_tokens=8192)
    results = [("off (prefill-first, vLLM v0)", off)]
    for budget in (512, 1024, 2048):
        results.append((f"on, budget {budget} tokens", run(p, workload, chunked_prefill=True,
                                                             max_num_batched_tokens=budget)))
    lines += ["", "## Chunked prefill on vs off (the Sarathi-Serve effect)", "",
              "1,500 Poisson requests at 3 requests/s with Splitwise-conversation lengths. Paper claim (Sarathi-Serve,",
              "OSDI'24): chunked prefills with stall-free batching remove the decode stalls that whole prefills cause,",
              "cutting tail TPOT, at a modest TTFT cost.", "",
              "TBT is the time between consecutive tokens of a request (every token, the metric Sarathi-Serve reports);",
              "TPOT is each request's mean, whose tail averages the stalls away.", "",
              "| chunked prefill | TBT p50 (ms) | TBT p99 (ms) | TPOT p99 (ms) | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, s in results:
        lines.append(f"| {label} | {s['tbt_ms']['p50']:.1f} | {s['tbt_ms']['p99']:.1f} | {s['tpot_ms']['p99']:.1f} | "
                     f"{s['ttft_ms']['p50']:.0f} | {s['ttft_ms']['p99']:.0f} | {s['output_tokens_per_s']:,.0f} |")
    on = results[1][1]
    lines += ["", f"With a 512-token budget, p99 TBT is {off['tbt_ms']['p99'] / on['tbt_ms']['p99']:.1f}× lower than "
              f"prefill-first scheduling (p99 TPOT {off['tpot_ms']['p99'] / on['tpot_ms']['p99']:.2f}× lower), while p50 "
              f"TTFT changes by {on['ttft_ms']['p50'] / off['ttft_ms']['p50']:.2f}×.", "",
              "## Speed", "",
              "`python -m benchmarks.simulator`: 4,096 Splitwise-conversation requests at 6 requests/s (engine saturated,",
              "~95% KV use) simulate in ~0.4 s wall — about 10,000 simulated requests per wall second, 2,300× faster",
              "than real time, with the hybrid predictor (the target is 5,000).", ""]
    text = "\n".join(lines) + "\n"
    atomic_write(Path(__file__).resolve().parents[2] / "docs" / "simulator.md", text)
    return text


if __name__ == "__main__":
    print(main())
