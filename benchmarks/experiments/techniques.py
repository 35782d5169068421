"""Experiments for docs/techniques.md: one section per serving technique, each paper's claim beside our number.

Run: ``python -m benchmarks.experiments.techniques`` (a few minutes on 2 cores). Writes ``docs/techniques.md``.
``python -m benchmarks.experiments.techniques paged spec`` runs only the named sections and prints them
(the document is written only when every section runs).

Sections: ``paged`` (PagedAttention vs contiguous reservation), ``disagg`` (DistServe), ``spec`` (speculative
decoding: MEDUSA, EAGLE, MagicDec), ``kv`` (KV quantisation and per-sequence budgets: Oaken, ALISA, MorphKV),
``migration`` (Llumnix), ``spot`` (SpotServe), ``roofline`` (roofline headroom), ``attention``
(FlashAttention 1/2/3, FlashInfer). Every simulation uses the shipped hybrid predictor.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from predictor import Predictor
from predictor.atomic import atomic_write
from scheduler.engine import EngineConfig, Simulator
from scheduler.techniques.analysis import (
    attention_efficiency,
    attention_io,
    roofline_headroom,
)
from scheduler.techniques.cluster import Cluster, Failure, InstanceSpec, replicas
from scheduler.techniques.speculative import (
    SpeculativeSetup,
    crossover_batch,
    speedup_table,
)
from scheduler.workload import Workload, build_workload

DOC = Path(__file__).resolve().parents[2] / "docs" / "techniques.md"


def fit_context(wl: Workload, max_len: int = 4096) -> Workload:
    """Drop requests whose prompt + output exceed ``max_len`` (Llama-2's context) so none is rejected."""
    keep = wl.prompt_tokens + wl.output_tokens <= max_len
    return Workload(wl.arrival_s[keep], wl.prompt_tokens[keep], wl.output_tokens[keep], wl.name)


def goodput(rates, attainments, target: float = 0.9) -> tuple[float, bool]:
    """Highest request rate whose SLO attainment is still ≥ ``target`` (linear between swept rates).

    Returns (rate, capped): ``capped`` when attainment never fell below the target in the sweep.
    """
    prev_r, prev_a = 0.0, 1.0
    for r, a in zip(rates, attainments, strict=True):
        if a < target:
            if prev_a < target:
                return 0.0, False
            return prev_r + (prev_a - target) / (prev_a - a) * (r - prev_r), False
        prev_r, prev_a = r, a
    return float(rates[-1]), True


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "|".join(["---"] + ["---:"] * (len(header) - 1))
    return ["| " + " | ".join(header) + " |", "|" + align + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


# --- 1. PagedAttention ---------------------------------------------------------------------------------

def section_paged(p) -> list[str]:
    model, gpu = "llama-2-13b", "a100-40gb"
    wl = fit_context(build_workload("offline", 1000, trace="splitwise_conv", seed=0))
    rows, results = [], {}
    for kind, label in (("paged", "paged (PagedAttention, 16-token blocks)"),
                        ("contiguous_oracle", "contiguous, prompt + true output (oracle)"),
                        ("contiguous_pow2", "contiguous, prompt + output rounded up to 2^k"),
                        ("contiguous", "contiguous, max_model_len = 4,096 per request")):
        s = Simulator(p, model, gpu, 1, "fp16", EngineConfig(kv_allocation=kind, max_model_len=4096,
                                                             max_num_seqs=256)).run(wl, record_iterations=False).summary()
        results[kind] = s
        rows.append([label, f"{s['kv_waste']['mean']:.1%}", f"{s['kv_waste']['at_peak']:.1%}",
                     f"{s['batch_size']['max']}", f"{s['batch_size']['mean']:.1f}", f"{s['output_tokens_per_s']:,.0f}",
                     f"{s['output_tokens_per_s'] / results['paged']['output_tokens_per_s']:.2f}×"])
    paged, worst = results["paged"], results["contiguous"]
    return ["## 1. PagedAttention vs contiguous KV reservation (vLLM)", "",
            f"{len(wl):,} offline requests with Splitwise-conversation lengths (prompt + output ≤ 4,096), Llama-2-13B on",
            "one A100-40GB, fp16 (the vLLM paper's OPT-13B on A100-40GB setting, with a Llama model). Engine option",
            "`EngineConfig(kv_allocation=...)`: a contiguous allocation reserves its slots when the request is admitted;",
            "waste = reserved token slots holding no token (time-weighted over the run, and at the moment the most",
            "blocks were reserved). Only internal waste is modelled — the external fragmentation of a real contiguous",
            "allocator is not, which flatters the contiguous rows.", "",
            "**Paper (vLLM / PagedAttention, SOSP'23):** in earlier systems only about 20–40% of the KV-cache memory",
            "holds actual token states (60–80% wasted by reservation and fragmentation); paging in small blocks cuts",
            "the waste to under 4% (the last, partly filled block of each sequence), which lets far more requests",
            "batch together and gives 2–4× the throughput of Orca/FasterTransformer at the same latency.", "",
            *table(["KV allocation", "waste (time-weighted)", "waste at peak", "max batch", "mean batch", "tokens/s",
                    "vs paged"], rows, "---|---:|---:|---:|---:|---:|---:"), "",
            f"**Ours:** paged waste {paged['kv_waste']['mean']:.1%} vs {worst['kv_waste']['mean']:.0%} for max-length "
            f"reservation; the largest batch grows from {worst['batch_size']['max']} to {paged['batch_size']['max']} and "
            f"throughput by {paged['output_tokens_per_s'] / worst['output_tokens_per_s']:.1f}×. Direction and size of "
            "the waste match the paper; the throughput gain depends on how memory-bound the model and GPU are.", ""]


# --- 2. DistServe --------------------------------------------------------------------------------------

def section_disagg(p) -> list[str]:
    model, gpu = "llama-3.1-8b", "a100-80gb"
    rates = np.arange(1.0, 16.01, 1.0)
    slos = [(1000.0, 20.0), (1000.0, 25.0), (2000.0, 40.0), (3000.0, 50.0)]
    configs = {
        "2 colocated (prefill-first, vLLM v0)": replicas(model, gpu, 2, config=EngineConfig(chunked_prefill=False,
                                                                                         max_num_batched_tokens=8192)),
        "2 colocated (chunked prefill, 512)": replicas(model, gpu, 2, config=EngineConfig(max_num_batched_tokens=512)),
        "1 prefill + 1 decode (disaggregated)": [
            InstanceSpec(model, gpu, role="prefill", config=EngineConfig(max_num_batched_tokens=8192)),
            InstanceSpec(model, gpu, role="decode")],
    }
    lines = ["## 2. Prefill/decode disaggregation (DistServe)", "",
             f"{model} on 2× {gpu}: two colocated replicas (requests dealt round-robin) against one prefill and one",
             "decode instance (`scheduler.techniques.cluster.Cluster` with instance roles). After its prefill a",
             "request's KV (prompt tokens × KV bytes per token on each GPU) is copied over the source GPU's NVLink",
             "(300 GB/s per direction for an A100; one copy at a time per link) and the request queues at the decode",
             "instance. Poisson arrivals of 1,000 requests per rate (1–16 requests/s) with Splitwise-code (long",
             "prompts, short outputs) and arXiv-summarisation lengths; goodput = highest rate at which ≥ 90% of",
             "requests meet both the TTFT and the TPOT SLO (linear between swept rates), per GPU.", "",
             "**Paper (DistServe, OSDI'24):** colocating prefill and decode couples their latencies (prefills stall",
             "decodes, decodes slow prefills); giving each phase its own GPUs lets each meet its own SLO, serving up to",
             "7.4× more requests (or 12.6× tighter SLOs) than colocated systems while ≥ 90% of requests meet their",
             "SLOs. The advantage is largest when SLOs are tight.", ""]
    headline = {}
    transfer_ms = []
    for trace in ("splitwise_code", "arxiv_summarization"):
        att = {name: [] for name in configs}
        for rate in rates:
            wl = fit_context(build_workload("poisson", 1000, rate=float(rate), trace=trace, seed=3), 8192)
            for name, specs in configs.items():
                res = Cluster(p, specs).run(wl)
                if res.handoffs:
                    transfer_ms.append(float(res.transfer_s.mean() * 1e3))
                att[name].append([res.result.summary(*slo)["slo"]["attainment"] for slo in slos])
        rows = []
        for i, (ttft, tpot) in enumerate(slos):
            row = [f"{trace}", f"{ttft / 1e3:g} s / {tpot:g} ms"]
            values = {}
            for name in configs:
                g, capped = goodput(rates, [a[i] for a in att[name]])
                values[name] = g
                row.append(f"{'≥ ' if capped else ''}{g / 2:.2f}")
            best_colo = max(v for n, v in values.items() if "colocated" in n)
            dis = values["1 prefill + 1 decode (disaggregated)"]
            row.append(f"**{dis / best_colo:.2f}×**" if best_colo > 0 else "—")
            rows.append(row)
            if i == 0:
                headline[trace] = dis / best_colo if best_colo > 0 else float("inf")
        lines += table(["trace", "SLO TTFT / TPOT", *[f"{n} req/s/GPU" for n in configs], "disagg ÷ best colocated"],
                       rows, "---|---|---:|---:|---:|---:") + [""]
    step = Simulator(p, model, gpu).bound.iteration_ms(0, 0, 0, 0, 1, 2000)
    lines += [f"**Ours:** with a tight TPOT SLO (20 ms: {20 / step:.1f}× an unloaded decode step) disaggregation serves "
              f"{headline['splitwise_code']:.1f}× the goodput of the better colocated setup on Splitwise-code lengths "
              f"and {headline['arxiv_summarization']:.1f}× on arXiv-summarisation lengths; with loose SLOs "
              "colocation with chunked prefill wins (both GPUs share the prefill work, and the decode instance alone must "
              "hold every running request's KV). KV copies took "
              f"{np.mean(transfer_ms):.1f} ms on average over NVLink (a 25 GB/s cross-node link would take ~12× longer, still"
              " small beside a prefill). Same direction as the paper, which also tunes the prefill:decode GPU ratio and",
              "parallelism per phase — with two GPUs only 1:1 is possible here.", ""]
    return lines


# --- 3. Speculative decoding -------------------------------------------------------------------------

def _pivot(tab, value="speedup", fits=True) -> tuple[list[str], list[list[str]]]:
    contexts = sorted(tab["context"].unique())
    rows = []
    for b in sorted(tab["batch"].unique()):
        row = [str(int(b))]
        for c in contexts:
            r = tab[(tab["batch"] == b) & (tab["context"] == c)].iloc[0]
            row.append(f"{r[value]:.2f}" if (r["fits"] or not fits) else f"({r[value]:.2f})")
        rows.append(row)
    return [f"context {int(c):,}" for c in contexts], rows


def section_spec(p) -> list[str]:
    batches = [1, 4, 16, 32, 64, 128, 256]
    lines = ["## 3. Speculative decoding (MEDUSA, EAGLE, MagicDec)", "",
             "Static analysis with the predictor (`scheduler.techniques.speculative`): a speculation step is γ draft",
             "decode steps plus one target iteration verifying γ + 1 tokens per sequence (a prefill-like chunk on the",
             "cached context, sampled at every position); it yields (1 − α^(γ+1)) / (1 − α) tokens per sequence for",
             "acceptance rate α. Speed-up = tokens per step × plain decode step ÷ speculation step. α is an input",
             "(0.8 here); tree verification and the draft's memory are not modelled. Times include the predictor's",
             "per-iteration CPU overhead unless marked *kernels only* (as with CUDA graphs). Values in parentheses: the",
             "batch does not fit the target's KV cache.", "",
             "**Papers:** MEDUSA (ICML'24) reports 2.2–3.6× faster decoding with extra decoding heads, EAGLE",
             "(ICML'24) 2.7–3.5× on LLaMA2-Chat 70B with a one-layer feature-level draft — both at batch size 1.",
             "Speculation gets worse as the batch grows, because verification of γ + 1 tokens per sequence turns",
             "compute-bound. MagicDec (2024) shows the bottleneck moves back to memory for long contexts (KV reads grow",
             "with batch × context), so with a draft whose KV is small and fixed (StreamingLLM-style self-speculation)",
             "the speed-up *grows* with batch size for long sequences (up to ~2× at batch 32–256 on 8 A100s).", ""]
    # (a) a small draft model for a large target, and draft heads
    for setup, title in ((SpeculativeSetup("llama-2-70b", "h100-sxm", 4, draft="llama-2-7b", include_overhead=False),
                          "Llama-2-70B (4× H100, TP4) drafted by Llama-2-7B (same GPUs, TP4), γ = 4, kernels only"),
                         (SpeculativeSetup("llama-2-70b", "h100-sxm", 4, draft="llama-2-7b"),
                          "the same with per-iteration CPU overhead"),
                         (SpeculativeSetup("llama-2-70b", "h100-sxm", 4, draft="heads", draft_cost_fraction=0.05,
                                           include_overhead=False),
                          "Llama-2-70B with MEDUSA/EAGLE-style draft heads (each draft step 5% of a target step), "
                          "γ = 4, kernels only")):
        tab = speedup_table(p, setup, batches, [512, 2048, 3584], gammas=(4,), alpha=0.8)
        header, rows = _pivot(tab)
        cross = crossover_batch(tab)
        lines += [f"**{title}** — speed-up by batch size:", "",
                  *table(["batch", *header], rows), "",
                  "Largest batch where speculation still pays: " + ", ".join(
                      f"context {c:,}: {b if b is not None else 'none'}" for c, b in cross.items()) + ".", ""]
    # (b) MagicDec: self-speculation with a StreamingLLM-style KV budget
    tabs = {}
    for overhead in (False, True):
        setup = SpeculativeSetup("llama-3.1-8b", "h100-sxm", 8, draft="self", draft_kv_budget=512,
                                 include_overhead=overhead)
        tab = speedup_table(p, setup, batches, [1024, 4096, 16384, 32768], gammas=(3,), alpha=0.8)
        tabs[overhead] = tab
        header, rows = _pivot(tab)
        lines += [f"**MagicDec setting: Llama-3.1-8B on 8× H100 (TP8), self-speculation with a 512-token draft KV, "
                  f"γ = 3{', kernels only' if not overhead else ', with CPU overhead'}** — speed-up by batch size:", "",
                  *table(["batch", *header], rows), ""]
    t = tabs[False]
    long_ = t[(t["context"] == 32768) & t["fits"]].sort_values("batch")
    short = t[t["context"] == 1024].sort_values("batch")
    lines += [f"**Ours:** a 7B draft for a 70B target pays at small batches (kernels only: "
              f"{speedup_table(p, SpeculativeSetup('llama-2-70b', 'h100-sxm', 4, draft='llama-2-7b', include_overhead=False), [1], [512], gammas=(4,)).iloc[0]['speedup']:.2f}× "
              "at batch 1) and stops paying once the batch reaches a few dozen sequences, earlier for longer contexts —"
              " the direction MEDUSA/EAGLE-style speculation is known for, with smaller batch-1 gains than the papers'"
              " (our α = 0.8 chain, no tree). With a fixed-size draft KV the trend reverses at long contexts: at 32k "
              f"tokens the speed-up rises from {long_['speedup'].iloc[0]:.2f}× at batch {int(long_['batch'].iloc[0])} to "
              f"{long_['speedup'].iloc[-1]:.2f}× at batch {int(long_['batch'].iloc[-1])}, while at 1k tokens it falls from "
              f"{short['speedup'].iloc[0]:.2f}× to {short['speedup'].iloc[-1]:.2f}× — MagicDec's bottleneck-aware"
              " crossover.", ""]
    return lines


# --- 4. KV-cache compression --------------------------------------------------------------------------

def section_kv(p) -> list[str]:
    model, gpu = "llama-2-7b", "a100-80gb"
    wl = fit_context(build_workload("offline", 2000, trace="splitwise_conv", seed=0))
    rows, base = [], None
    for dtype, label in (("fp16", "16-bit KV"), ("w16a16kv8", "8-bit KV"), ("w16a16kv4", "4-bit KV")):
        sim = Simulator(p, model, gpu, 1, dtype, EngineConfig(max_num_seqs=1024))
        s = sim.run(wl, record_iterations=False).summary()
        step = sim.bound.iteration_ms(0, 0, 0, 0, 64, 64 * 2048)
        base = base or (s, step)
        rows.append([label, f"{sim.num_blocks * 16:,}", f"{s['batch_size']['max']}", f"{s['batch_size']['mean']:.0f}",
                     f"{s['output_tokens_per_s']:,.0f}", f"{s['output_tokens_per_s'] / base[0]['output_tokens_per_s']:.2f}×",
                     f"{s['tpot_ms']['p50']:.1f}", f"{step:.1f}"])
    quant_rows, quant_gain = rows, float(rows[-1][5].rstrip("×"))
    quant_step = float(rows[0][7]) / float(rows[-1][7])
    wl = fit_context(build_workload("offline", 1000, trace="arxiv_summarization", seed=0))
    rows, base = [], None
    for budget in (None, 2048, 1024, 512):
        sim = Simulator(p, model, gpu, 1, "fp16", EngineConfig(max_num_seqs=1024, kv_budget_tokens=budget))
        s = sim.run(wl, record_iterations=False).summary()
        ctx = 3000 if budget is None else min(3000, budget)
        step = sim.bound.iteration_ms(0, 0, 0, 0, 64, 64 * ctx)
        base = base or s
        rows.append(["all tokens" if budget is None else f"{budget:,} tokens", f"{s['batch_size']['max']}",
                     f"{s['batch_size']['mean']:.0f}", f"{s['output_tokens_per_s']:,.0f}",
                     f"{s['output_tokens_per_s'] / base['output_tokens_per_s']:.2f}×", f"{s['tpot_ms']['p50']:.1f}",
                     f"{step:.1f}"])
    budget_gain = float(rows[-1][4].rstrip("×"))
    return ["## 4. KV-cache compression: quantisation and per-sequence token budgets (Oaken, ALISA, MorphKV)", "",
            "Llama-2-7B on one A100-80GB (multi-head attention: 0.5 MiB of fp16 KV per token, so memory bounds the",
            "batch). Quantisation is the `kv<bits>` part of the dtype (`w16a16kv8`, `w16a16kv4`): the memory model fits",
            "2× / 4× the tokens, and attention reads that many fewer bytes (dequantisation cost inside the kernel is not",
            "modelled). The budget is `EngineConfig(kv_budget_tokens=B)`: a sequence keeps at most B tokens of KV",
            "(memory and attention reads capped). **Accuracy effects are out of scope**: only memory and time are",
            "modelled.", "",
            "**Papers:** Oaken (ISCA'25) quantises the KV cache online to a few bits and reports up to ~1.6× the",
            "throughput of an A100 baseline with a small accuracy loss, because more requests fit in memory. ALISA",
            "(ISCA'24) keeps only the tokens that matter (sparse-window attention) and reports up to ~3× (vs FlexGen) and",
            "~1.9× (vs vLLM) throughput in memory-constrained serving. MorphKV (2025) keeps a constant-size per-sequence",
            "KV cache chosen from recent attention, cutting memory against earlier eviction schemes at similar accuracy.",
            "", f"KV quantisation — {2000:,}-request offline batch, Splitwise-conversation lengths "
            "(decode step: batch 64 at 2,048 tokens of context):", "",
            *table(["KV precision", "KV capacity (tokens)", "max batch", "mean batch", "tokens/s", "vs 16-bit",
                    "TPOT p50 (ms)", "decode step (ms)"], quant_rows, "---|---:|---:|---:|---:|---:|---:|---:"), "",
            "Per-sequence KV budget — 1,000-request offline batch, arXiv-summarisation lengths (long prompts); decode"
            " step: batch 64 at 3,000 tokens of context, capped at the budget:", "",
            *table(["KV kept per sequence", "max batch", "mean batch", "tokens/s", "vs all tokens", "TPOT p50 (ms)",
                    "decode step (ms)"], rows, "---|---:|---:|---:|---:|---:|---:"), "",
            f"**Ours:** 4-bit KV gives {quant_gain:.2f}× the throughput of 16-bit KV (memory → batch → throughput, as"
            f" Oaken argues), and a 512-token budget {budget_gain:.2f}× on long prompts — the papers' direction; their"
            " accuracy side is not simulated. Latency: at a fixed batch a decode step is faster because attention"
            f" reads fewer bytes ({quant_step:.1f}× at batch 64 with 4-bit KV), but the median TPOT of the offline runs"
            " rises because every step now carries a much larger batch — throughput is bought with per-token latency"
            " unless `max_num_seqs` caps the batch.", ""]


# --- 5. Llumnix --------------------------------------------------------------------------------------

def section_migration(p) -> list[str]:
    model, gpu = "llama-2-7b", "a100-80gb"
    rows, summary = [], {}
    for rate in (5.0, 6.0, 7.0, 8.0):
        for router in ("round_robin", "least_loaded"):
            for migration in (False, True):
                vals = []
                for seed in (7, 8, 9):
                    wl = fit_context(build_workload("gamma", 2000, rate=rate, cv=4.0, trace="arxiv_summarization",
                                                    seed=seed))
                    res = Cluster(p, replicas(model, gpu, 4), router=router, migration=migration).run(wl)
                    s = res.summary()
                    vals.append((s["ttft_ms"]["p50"], s["ttft_ms"]["p99"], s["e2e_ms"]["p99"], s["preemptions"],
                                 res.migrations, float(res.transfer_s.mean() * 1e3) if res.transfer_s.size else 0.0))
                v = np.mean(vals, axis=0)
                summary[(rate, router, migration)] = v
                rows.append([f"{rate:g}", router.replace("_", "-"), "on" if migration else "off", f"{v[0] / 1e3:.2f}",
                             f"{v[1] / 1e3:.1f}", f"{v[2] / 1e3:.0f}", f"{v[3]:.0f}", f"{v[4]:.0f}",
                             f"{v[5]:.1f}" if migration else "—"])
    rr_off, rr_on = summary[(8.0, "round_robin", False)], summary[(8.0, "round_robin", True)]
    ll_off, ll_on = summary[(8.0, "least_loaded", False)], summary[(8.0, "least_loaded", True)]
    return ["## 5. Live migration between instances (Llumnix)", "",
            f"4× {model} on {gpu} (one instance per GPU) behind a router; 2,000 requests with arXiv-summarisation lengths",
            "(heavy-tailed outputs: p99 ≈ 3,300 tokens) arriving in bursts (gamma inter-arrival times, CV 4); mean of",
            "3 seeds. With migration on, an instance whose queue head waits for KV memory (or that just preempted)",
            "moves its latest-arrived decoding request to the least-loaded instance, if that one's load (KV in use +",
            "queued prompts, as a fraction of its cache) is at least 10 points lower and it has the blocks; the request",
            "stops for the whole copy (tokens × 0.5 MiB over 300 GB/s NVLink) — Llumnix overlaps most of the copy with",
            "decoding, so this is conservative.", "",
            "**Paper (Llumnix, OSDI'24):** rescheduling running requests across instances by live migration (with a",
            "near-constant downtime of a few tens of ms) de-fragments memory, avoids preemptions and rebalances load,",
            "improving tail latencies by up to an order of magnitude over load-aware dispatch alone.", "",
            *table(["rate (req/s)", "dispatch", "migration", "TTFT p50 (s)", "TTFT p99 (s)", "E2E p99 (s)", "preemptions",
                    "migrations", "copy (ms)"], rows, "---:|---|---|---:|---:|---:|---:|---:|---:"), "",
            f"**Ours:** at 8 requests/s, migration cuts p99 TTFT {rr_off[1] / rr_on[1]:.1f}× under round-robin dispatch "
            f"({rr_off[1] / 1e3:.1f} → {rr_on[1] / 1e3:.1f} s) and {ll_off[1] / ll_on[1]:.2f}× under least-loaded dispatch"
            f" ({ll_off[1] / 1e3:.1f} → {ll_on[1] / 1e3:.1f} s), with fewer preemptions; the median TTFT can rise"
            " (a migrated request takes memory on its target that the target's own queue was waiting for), and"
            " migration only ever triggers once an instance runs out of KV memory. Same direction as the paper; the"
            " order-of-magnitude gain it reports over load-aware dispatch is not reached here — our dispatch already"
            " sees each instance's KV load, and our migration policy is simpler (one trigger, latest-arrival victim).", ""]


# --- 6. SpotServe ------------------------------------------------------------------------------------

def section_spot(p) -> list[str]:
    model, gpu = "llama-2-7b", "a100-80gb"
    scenarios = [("no preemption", [], "recompute"),
                 *[(f"rolling preemptions: {label}", [Failure(i % 4, 100.0 * (i + 1), 60.0) for i in range(4)], mode)
                   for mode, label in (("restart", "restart from scratch"), ("recompute", "recompute KV, keep tokens"),
                                       ("migrate", "migrate KV (SpotServe-style)"))],
                 *[(f"one instance lost for good: {label}", [Failure(0, 100.0, None)], mode)
                   for mode, label in (("restart", "restart from scratch"), ("recompute", "recompute KV, keep tokens"),
                                       ("migrate", "migrate KV (SpotServe-style)"))]]
    rows, out = [], {}
    for rate in (3.0, 4.0):
        workloads = [fit_context(build_workload("poisson", 2000, rate=rate, trace="arxiv_summarization", seed=seed))
                     for seed in (11, 12)]
        for label, failures, mode in scenarios:
            vals = []
            for wl in workloads:
                res = Cluster(p, replicas(model, gpu, 4), failures=failures, failure_mode=mode).run(wl)
                s = res.summary()
                assert s["finished"] == len(wl)
                e2e = res.result.columns["e2e_s"]
                hit = res.interrupted > 0
                vals.append((s["makespan_s"], s["ttft_ms"]["p99"] / 1e3, s["e2e_ms"]["mean"] / 1e3,
                             s["e2e_ms"]["p99"] / 1e3, hit.sum(), e2e[hit].mean() if hit.any() else np.nan,
                             np.quantile(e2e[hit], 0.99) if hit.any() else np.nan))
            v = np.mean(vals, axis=0)
            out[(rate, label)] = v
            rows.append([f"{rate:g}", label, f"{v[0]:.0f}", f"{v[1]:.2f}", f"{v[2]:.1f}", f"{v[3]:.1f}", f"{v[4]:.0f}",
                         "—" if np.isnan(v[5]) else f"{v[5]:.1f}", "—" if np.isnan(v[6]) else f"{v[6]:.0f}"])
    restart = out[(4.0, "rolling preemptions: restart from scratch")]
    migrate = out[(4.0, "rolling preemptions: migrate KV (SpotServe-style)")]
    recompute = out[(4.0, "rolling preemptions: recompute KV, keep tokens")]
    none = out[(4.0, "no preemption")]
    return ["## 6. Preemptible instances (SpotServe)", "",
            f"4× {model} on {gpu}, 2,000 Poisson requests with arXiv-summarisation lengths at 3 and 4 requests/s",
            "(below saturation; section 5's bursty load drives the same four instances into preemptions from 5 requests/s);",
            "mean of 2 seeds. *Rolling preemptions*: each",
            "instance in turn is preempted (at 100, 200, 300 and 400 s) and returns empty 60 s later (cloud",
            "re-acquisition plus this model's ~8 s measured load time); *lost for good*: instance 0 at 100 s, never",
            "back. The requests it was serving go to the survivors (`Cluster(failures=[Failure(i, t, restart_after_s)],",
            "failure_mode=...)`): *restart* loses their KV and generated tokens (the response is generated again),",
            "*recompute* keeps the streamed tokens and recomputes the KV, *migrate* copies the KV of decoding requests",
            "to a survivor with room within a 30 s notice (the rest recompute). Finished requests are never lost",
            "(every request finishes exactly once: checked here and in the tests). *Interrupted* = requests running",
            "on an instance when it was lost.", "",
            "**Paper (SpotServe, ASPLOS'24):** serving on preemptible instances, migrating inference context at",
            "preemption (instead of restarting requests) and re-planning the parallel configuration cut P99 latency by",
            "2.4–9.1× against the best baselines.", "",
            *table(["rate (req/s)", "scenario", "completion (s)", "TTFT p99 (s)", "E2E mean (s)", "E2E p99 (s)",
                    "interrupted", "their E2E mean (s)", "their E2E p99 (s)"], rows,
                   "---:|---|---:|---:|---:|---:|---:|---:|---:"), "",
            f"**Ours:** at 4 requests/s, rolling preemptions raise p99 E2E from {none[3]:.0f} s to {restart[3]:.0f} s when"
            f" interrupted requests restart from scratch and to {migrate[3]:.0f} s when their KV migrates; for the"
            f" interrupted requests themselves migration cuts the p99 E2E {restart[6] / migrate[6]:.1f}× (mean"
            f" {restart[5] / migrate[5]:.1f}×) against restarting — SpotServe's direction. Keeping the streamed tokens"
            f" and recomputing the KV does almost as well as migrating it here (their p99 {recompute[6]:.0f} s), because"
            " re-prefilling a 7B model's context takes well under a second; the difference grows with model size and"
            " context. Losing an instance for good costs more through the lost capacity than through the lost KV;"
            " SpotServe's re-planning of the surviving GPUs' parallelism is not modelled.", ""]


# --- 7. Roofline headroom ----------------------------------------------------------------------------

def section_roofline(p) -> list[str]:
    cases = [("llama-2-7b", "a100-80gb", 1, "fp16"), ("llama-2-7b", "h100-sxm", 1, "fp16"),
             ("llama-3.1-8b", "h100-sxm", 1, "fp16"), ("llama-3.1-8b", "h100-sxm", 1, "fp8"),
             ("llama-2-13b", "l40s", 1, "fp16"), ("mixtral-8x7b", "h100-sxm", 2, "fp16"),
             ("llama-2-70b", "h100-sxm", 4, "fp16"), ("llama-3.1-70b", "h200", 4, "fp16")]
    wl = build_workload("offline", 2000, prompt_len=1024, output_len=256)
    tab = roofline_headroom(p, cases, wl, EngineConfig(max_num_seqs=512, max_num_batched_tokens=8192))
    rows = [[f"{r.model}", f"{r.gpu}", f"{r.tp}", r.dtype, f"{r.bound_tokens_per_s_per_gpu:,.0f}",
             f"{r.simulated_tokens_per_s_per_gpu:,.0f}", f"{r.simulated_output_tokens_per_s_per_gpu:,.0f}",
             f"{r.fraction_of_bound:.0%}", f"{r.gap:.1f}×", f"{r.batch_mean:.0f}", f"{r.prefill_fraction_of_bound:.0%}"]
            for r in tab.itertuples()]
    return ["## 7. Roofline headroom: the compute bound on throughput", "",
            "Bound (course notes): a token costs 2 FLOPs per (active) parameter, so one GPU serves at most",
            "peak FLOP/s ÷ (2 × parameters) tokens per second — prefill and decode tokens alike, attention left out",
            "(so a true upper bound), independent of tensor parallelism. Simulated: 2,000 offline requests of 1,024",
            "prompt + 256 output tokens, `max_num_seqs` 512, 8,192-token iterations; tokens/s counts prompt + output",
            "tokens over the makespan, per GPU.", "",
            *table(["model", "GPU", "TP", "dtype", "bound tokens/s/GPU", "simulated tokens/s/GPU", "of which output",
                    "of bound", "gap", "mean batch", "prefill iteration, of bound"], rows,
                   "---|---|---:|---|---:|---:|---:|---:|---:|---:|---:"), "",
            f"**Ours:** served throughput reaches {tab['fraction_of_bound'].min():.0%}–{tab['fraction_of_bound'].max():.0%}"
            " of the compute bound. The gap is decode: each decode step reads all weights and the KV cache for only",
            "`batch` tokens, so it is memory-bound unless the batch is in the hundreds — and the KV cache caps the",
            "batch (Llama-2-7B/13B's multi-head attention much more than GQA models such as Llama-3.1). A prefill-only",
            f"iteration (8 prompts of 1,024 tokens) reaches {tab['prefill_fraction_of_bound'].min():.0%}–"
            f"{tab['prefill_fraction_of_bound'].max():.0%} of the bound: the learned kernel efficiency (GEMMs below peak,",
            "attention, elementwise ops and per-iteration CPU overhead) is the rest of the gap.", ""]


# --- 8. Attention kernels ----------------------------------------------------------------------------

def section_attention(p) -> list[str]:
    io = attention_io("llama-2-7b", "a100-80gb", [512, 1024, 2048, 4096, 8192, 16384, 32768])
    io_rows = [[f"{r.tokens:,}", f"{r.flash_ms:.2f}", r.flash_bound, f"{r.flash_gb:.1f}", f"{r.naive_ms:.2f}", r.naive_bound,
                f"{r.naive_gb:.1f}", f"{r.naive_over_flash:.1f}×"] for r in io.itertuples()]
    eff = attention_efficiency()
    eff = eff[eff["kv_bits"] == 16]
    kernel = {"a100-80gb": "FlashAttention-2", "l40s": "FlashAttention-2", "h100-sxm": "FlashAttention-3",
              "b200": "FlashInfer / TRT-LLM"}
    rows = []
    for r in eff.sort_values(["gpu", "framework"]).itertuples():
        guess = "FlashInfer (Sarathi-Serve)" if r.framework == "sarathi-serve" else kernel.get(r.gpu, "?")
        rows.append([r.gpu, r.framework, guess, f"{r.prefill_median:.2f}", f"{r.decode_median:.2f}",
                     f"{r.large_prefill_tflops:,.0f}", f"{r.large_prefill_peak_fraction:.0%}",
                     f"{r.large_prefill_peak_fraction_p90:.0%}", f"{r.prefill_rows:,} / {r.decode_rows:,}"])
    h100 = eff[eff["gpu"] == "h100-sxm"]
    a100 = eff[(eff["gpu"] == "a100-80gb") & (eff["framework"] != "sarathi-serve")]
    return ["## 8. Attention kernels (FlashAttention 1/2/3, FlashInfer)", "",
            "**IO model.** `build_ops(attention=\"flash\" | \"naive\")`: flash-style attention reads Q, K, V and writes",
            "O once; naive attention also writes and reads back the score and probability matrices (4 · heads · N²",
            "elements for N tokens). Roofline time of the prefill attention of one sequence, all 32 layers of",
            "Llama-2-7B on an A100-80GB, fp16:", "",
            *table(["tokens", "flash (ms)", "flash bound", "flash GB", "naive (ms)", "naive bound", "naive GB",
                    "naive ÷ flash"], io_rows, "---:|---:|---|---:|---:|---|---:|---:"), "",
            "**Measured efficiency.** Roofline ÷ measured time of every published attention kernel in the shipped",
            "profiles (1 = at the roofline), median per GPU and framework version (16-bit KV), and the median",
            "FLOP/s of large prefills (≥ 2,048 query tokens per sequence, where the FlashAttention papers report",
            "theirs). The tables name the framework, not the kernel: aiconfigurator lets vLLM pick its attention",
            "backend, which is FlashAttention-2 on Ampere and Ada, FlashAttention-3 on Hopper and FlashInfer/TRT-LLM",
            "kernels on Blackwell in recent vLLM — so the kernel column is our inference, not a label in the data.", "",
            *table(["GPU", "framework", "kernel (inferred)", "prefill median", "decode median", "large-prefill TFLOP/s",
                    "of 16-bit peak", "p90 of peak", "rows (prefill / decode)"], rows,
                   "---|---|---|---:|---:|---:|---:|---:|---:"), "",
            "**Papers:** FlashAttention (NeurIPS'22) tiles attention so the N² scores never reach HBM: 2–4× faster",
            "than standard attention and memory linear in N. FlashAttention-2 (2023) roughly doubles that by better",
            "work partitioning, reaching 50–73% of the A100's peak FLOP/s. FlashAttention-3 (2024) uses Hopper's",
            "asynchrony and FP8 for 1.5–2× over FlashAttention-2 on H100, up to ~740 TFLOP/s in FP16 (75% of peak).",
            "FlashInfer (MLSys'25) provides composable, JIT-compiled attention kernels for serving, with large",
            "inter-token-latency reductions over earlier serving kernels.", "",
            f"**Ours:** the IO model makes naive attention {io['naive_over_flash'].min():.1f}–"
            f"{io['naive_over_flash'].max():.1f}× slower than flash attention (memory-bound on the N² score traffic, while"
            " flash attention turns compute-bound from ~1k tokens) — the FlashAttention direction (the papers measure"
            " 2–4× end to end; the IO model has no kernel-launch or softmax costs). In the measurements, large prefills"
            f" reach a median {a100['large_prefill_peak_fraction'].max():.0%} of peak on the A100 (p90"
            f" {a100['large_prefill_peak_fraction_p90'].max():.0%}: FlashAttention-2's reported 50–73%) and"
            f" {h100['large_prefill_peak_fraction'].max():.0%} on the H100 (p90 {h100['large_prefill_peak_fraction_p90'].max():.0%},"
            f" {h100['large_prefill_tflops'].max() / a100['large_prefill_tflops'].max():.1f}× the A100's FLOP/s at the"
            " median, in line with FlashAttention-3's 1.5–2× over FlashAttention-2 on the same H100 on top of Hopper's"
            " 3× peak, but below its best 75%): the medians cover every head configuration swept, including few-head"
            " shapes that cannot fill the GPU. Decode attention runs far from its (memory) roofline at the median"
            " because most swept decode shapes are tiny.", ""]


SECTIONS = {"paged": section_paged, "disagg": section_disagg, "spec": section_spec, "kv": section_kv,
            "migration": section_migration, "spot": section_spot, "roofline": section_roofline,
            "attention": section_attention}


def main(argv: list[str] | None = None) -> str:
    names = list(argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    p = Predictor.load()
    lines = ["# What-if knobs for serving techniques", "",
             "Each section turns one published serving technique into an option of the simulator or the predictor,",
             "states the paper's headline claim in our words, and puts our number beside it. The point is the",
             "direction (and roughly the size) of each effect under our cost model, not a reproduction of the papers'",
             "testbeds. Produced by `python -m benchmarks.experiments.techniques` with the shipped hybrid predictor;",
             "checked by `tests/test_techniques.py` (one direction test per option on a small case).", "",
             "| technique | knob |", "|---|---|",
             "| PagedAttention (vLLM) | `EngineConfig(kv_allocation=\"paged\" \\| \"contiguous\" \\| \"contiguous_pow2\" \\| \"contiguous_oracle\")`; "
             "`--kv-allocation`; KV waste in every summary |",
             "| Disaggregation (DistServe) | `scheduler.techniques.cluster.Cluster` with `InstanceSpec(role=\"prefill\" \\| \"decode\")` |",
             "| Speculative decoding (MEDUSA, EAGLE, MagicDec) | `scheduler.techniques.speculative.speedup_table` |",
             "| KV quantisation (Oaken) | dtype `w16a16kv8` / `w16a16kv4` |",
             "| KV token budget (ALISA, MorphKV) | `EngineConfig(kv_budget_tokens=B)`; `--kv-budget-tokens` |",
             "| Live migration (Llumnix) | `Cluster(router=\"round_robin\" \\| \"least_loaded\", migration=True)` |",
             "| Preemptible instances (SpotServe) | `Cluster(failures=[Failure(i, t, restart_after_s)], failure_mode=...)` |",
             "| Roofline headroom | `scheduler.techniques.analysis.roofline_headroom` |",
             "| Attention kernels (FlashAttention, FlashInfer) | `analysis.attention_io`, `analysis.attention_efficiency` |",
             ""]
    timings = []
    for name in names:
        t = time.perf_counter()
        lines += SECTIONS[name](p)
        timings.append(f"{name} {time.perf_counter() - t:.0f} s")
        print(f"[{timings[-1]}]", file=sys.stderr)
    text = "\n".join(lines) + "\n"
    if names == list(SECTIONS):
        atomic_write(DOC, text)
    return text


if __name__ == "__main__":
    print(main())
