"""Optimisation advisor: the bottleneck of each phase and a ranked list of what-if changes, each re-simulated.

``advise`` simulates a baseline (model, GPU, TP, precision, engine knobs, workload) with
:class:`scheduler.engine.Simulator`, names the bottleneck of the prefill and the decode phase from the run's
efficiency report (:mod:`predictor.efficiency`: the largest of compute time at peak, HBM time at full
bandwidth, network time of the TP collectives and CPU overhead, as shares of the phase's wall time), then
simulates every candidate change on the *same* workload (same seed) and ranks them by an objective.

Candidates (each one change from the baseline; the existing what-if knobs are reused, see ``docs/techniques.md``)

* weight-only quantisation ``w8a16``, ``w4a16``; weight + activation quantisation ``fp8`` (only on GPUs with fp8
  tensor cores) and ``int8``; KV-cache quantisation ``kv8`` (the dtype's ``kv<bits>`` part);
* engine knobs: ``max_num_seqs`` × 2, ``max_num_batched_tokens`` × 2 and ÷ 2 (the chunk size), a per-sequence KV
  budget (``EngineConfig.kv_budget_tokens``, ALISA/MorphKV-style eviction);
* fewer or regrouped GPUs (TP ≥ 2): TP ÷ 2; TP ÷ 2 on 2 replicas (the same GPUs, fewer collectives);
* more GPUs: TP × 2; 2 replicas behind a round-robin router (each replica serves every other request, i.e.
  half the arrival rate: a perfect router); prefill/decode disaggregation (DistServe: 1 prefill + 1 decode
  instance, each at the baseline's TP, KV copied over the GPU link) — both with
  :class:`scheduler.techniques.cluster.Cluster`;
* speculative decoding with MEDUSA/EAGLE-style draft heads: **analytic**. The engine has no speculation, so
  the per-step speed-up ``s`` of :class:`scheduler.techniques.speculative.SpeculativeModel` at the baseline's
  mean batch and mean context is applied to the baseline: TPOT ÷ s, TTFT unchanged, makespan
  ``max(arrival span, makespan · (1 − d + d / s))`` with ``d`` the decode share of the engine's busy time.

Every candidate reports throughput (output tokens/s), TTFT and TPOT p50/p90 (absolute and relative to the
baseline), its cost in GPUs, and its risks stated as assumptions (accuracy effects of quantisation and KV
eviction are not modelled). A candidate the predictor or the memory model rejects (TP not dividing the heads,
weights not fitting, a precision the GPU lacks) is listed as skipped with the reason.

Objectives (``gain`` > 0 is better; the ranking sorts by it, descending)

* ``per-gpu`` (default): (tokens/s ÷ GPUs) / (baseline tokens/s ÷ baseline GPUs) − 1;
* ``throughput``: tokens/s / baseline tokens/s − 1;
* ``ttft``: baseline TTFT p90 / TTFT p90 − 1;  ``tpot``: baseline TPOT p90 / TPOT p90 − 1.

Under an open-loop workload (Poisson, gamma, trace) that the baseline serves without queueing, throughput is
set by the arrival rate, so no candidate can raise it; use an offline workload (or a higher rate) to measure
capacity, or the latency objectives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from predictor.efficiency import PHASES
from predictor.errors import InputError
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import Workload, build_workload

OBJECTIVES = ("per-gpu", "throughput", "ttft", "tpot")
EVIDENCE = ("mfu", "mbu", "compute_share", "memory_share", "network_share", "overhead_share", "roofline_distance",
            "kernel_distance", "attained_tflops", "attained_gbps", "time_ms")
METRICS = ("output_tokens_per_s", "ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_p90_ms")
SPEC_GAMMA = 4
SPEC_DRAFT_COST_FRACTION = 0.05


@dataclass(frozen=True)
class WorkloadSpec:
    """How to build the workload (see :func:`scheduler.workload.build_workload`); rebuilt per seed.

    ``kind`` is ``offline`` (a static batch: all requests at t = 0), ``poisson``, ``gamma`` or ``trace``;
    ``rate`` in requests/s; lengths in tokens.
    """

    kind: str = "poisson"
    num_requests: int | None = 300
    rate: float | None = None
    cv: float = 1.0
    trace: str | None = None
    prompt_len: int | None = None
    output_len: int | None = None
    output_dist: str | None = None
    seed: int = 0

    def build(self, seed: int | None = None) -> Workload:
        """The workload at ``seed`` (default: this spec's seed)."""
        return build_workload(self.kind, self.num_requests, rate=self.rate, cv=self.cv, trace=self.trace,
                              prompt_len=self.prompt_len, output_len=self.output_len, output_dist=self.output_dist,
                              seed=self.seed if seed is None else seed)


@dataclass(frozen=True)
class Scenario:
    """One serving setup: model, GPU, TP, precision and engine knobs, on one or more instances.

    ``replicas`` identical ``mixed`` instances behind a round-robin router, or (``disaggregated``) one prefill
    and one decode instance. GPUs = TP × instances. ``profile``: the serving framework's
    :class:`~scheduler.engine_profiles.EngineProfile` (the CLI's default is vLLM's, as for ``simulate``); None:
    the predictor's own times (its Vidur-era overhead fit).
    """

    model: str
    gpu: object
    tp: int = 1
    dtype: str = "fp16"
    config: EngineConfig = field(default_factory=EngineConfig)
    replicas: int = 1
    disaggregated: bool = False
    profile: object | None = None

    @property
    def gpus(self) -> int:
        from predictor.parallel import as_parallel

        return as_parallel(self.tp).gpus * (2 if self.disaggregated else self.replicas)


@dataclass(frozen=True)
class Candidate:
    """A change to the baseline: a scenario to simulate, optionally an analytic transform of its summary.

    ``analytic(summary, workload) -> summary`` is applied to the simulated summary (used where the engine has
    no such option); ``risks`` are the assumptions the prediction rests on.
    """

    name: str
    change: str
    scenario: Scenario
    risks: tuple[str, ...] = ()
    analytic: Callable[[dict, Workload], dict] | None = None


# --- running ---------------------------------------------------------------------------------------------

def simulate(predictor, scenario: Scenario, workload: Workload) -> dict:
    """Summary (:meth:`scheduler.metrics.SimResult.summary`) of ``scenario`` serving ``workload``.

    Raises :class:`~predictor.errors.InputError` when the setup is invalid (e.g. the model does not fit).
    """
    if scenario.replicas == 1 and not scenario.disaggregated:
        sim = Simulator(predictor, scenario.model, scenario.gpu, scenario.tp, scenario.dtype, scenario.config,
                        profile=scenario.profile)
        return sim.run(workload, record_iterations=False).summary()
    from scheduler.techniques.cluster import Cluster, InstanceSpec

    if scenario.disaggregated:
        specs = [InstanceSpec(scenario.model, scenario.gpu, scenario.tp, scenario.dtype, scenario.config, role,
                              scenario.profile) for role in ("prefill", "decode")]
    else:
        specs = [InstanceSpec(scenario.model, scenario.gpu, scenario.tp, scenario.dtype, scenario.config,
                              profile=scenario.profile)] * scenario.replicas
    return Cluster(predictor, specs, router="round_robin").run(workload).summary()


def headline(summary: dict) -> dict:
    """Throughput (output tokens/s), TTFT and TPOT p50/p90 (ms) and request counts of a summary."""
    return {"output_tokens_per_s": float(summary["output_tokens_per_s"]),
            "ttft_p50_ms": float(summary["ttft_ms"]["p50"]), "ttft_p90_ms": float(summary["ttft_ms"]["p90"]),
            "tpot_p50_ms": float(summary["tpot_ms"]["p50"]), "tpot_p90_ms": float(summary["tpot_ms"]["p90"]),
            "finished": int(summary["finished"]), "rejected": int(summary["rejected"])}


def _ratio(new: float, old: float) -> float:
    return new / old if old > 0 and math.isfinite(old) and math.isfinite(new) else float("nan")


def gain(objective: str, metrics: dict, gpus: int, base: dict, base_gpus: int) -> float:
    """The objective's gain over the baseline (> 0 is better; see the module docstring)."""
    if objective == "throughput":
        return _ratio(metrics["output_tokens_per_s"], base["output_tokens_per_s"]) - 1
    if objective == "per-gpu":
        return _ratio(metrics["output_tokens_per_s"] / gpus, base["output_tokens_per_s"] / base_gpus) - 1
    if objective in ("ttft", "tpot"):
        key = f"{objective}_p90_ms"
        return _ratio(base[key], metrics[key]) - 1
    raise InputError(f"--objective: unknown value {objective!r}; allowed: {', '.join(OBJECTIVES)}")


# --- bottleneck ------------------------------------------------------------------------------------------

def _explain(m: dict) -> str:
    shares = {b: m[f"{b}_share"] for b in ("compute", "memory", "network", "overhead")}
    top = m["bottleneck"]
    others = ", ".join(f"{b} {v:.0%}" for b, v in shares.items() if b != top)
    what = {"compute": "FLOPs at the tensor-core peak", "memory": "HBM bytes at full bandwidth",
            "network": "TP collectives at the link bandwidth", "overhead": "non-kernel CPU time"}[top]
    text = (f"{what} would fill {shares[top]:.0%} of the phase's wall time (vs {others}); "
            f"MFU {m['mfu']:.1%}, MBU {m['mbu']:.1%}, {m['roofline_distance']:.2f}× the roofline time")
    by_group = sorted(m.get("time_by_group", {}).items(), key=lambda kv: -kv[1])[:3]
    if by_group:
        text += "; predicted time spent in " + ", ".join(f"{g} {v:.0%}" for g, v in by_group)
    return text


def bottlenecks(efficiency: dict) -> dict:
    """Per phase present in ``efficiency`` (:func:`predictor.efficiency.report`): bottleneck, evidence, explanation."""
    out = {}
    for phase in PHASES:
        m = efficiency.get(phase)
        if not m or m.get("bottleneck", "none") == "none":
            continue
        out[phase] = {"bottleneck": m["bottleneck"], "evidence": {k: float(m[k]) for k in EVIDENCE},
                      "explanation": _explain(m)}
    return out


# --- candidates ------------------------------------------------------------------------------------------

def _with_dtype(base: Scenario, dtype) -> Scenario:
    return dataclasses.replace(base, dtype=dtype)


def _with_config(base: Scenario, **changes) -> Scenario:
    return dataclasses.replace(base, config=dataclasses.replace(base.config, **changes))


ACCURACY = "accuracy is not modelled"


def _precision_candidates(base: Scenario, gpu_spec) -> tuple[list[Candidate], list[dict]]:
    from predictor.precision import Precision, parse_dtype

    prec = parse_dtype(base.dtype)
    kv = prec.kv_bits
    out, skipped = [], []
    for bits in (8, 4):
        name = f"w{bits}a16"
        if prec.weight_element_bits <= bits:  # element bits: block scales (nvfp4's 4.5) do not count
            skipped.append({"name": name, "reason": f"weights are already {prec.weight_element_bits}-bit"})
            continue
        out.append(Candidate(name, f"weight-only {bits}-bit quantisation (dtype w{bits}a16kv{kv})",
                             _with_dtype(base, Precision(bits, 16, kv, "fp16")),
                             (f"{ACCURACY}: weight-only {bits}-bit quantisation (GPTQ/AWQ-style) typically costs a small "
                              "perplexity increase, larger for 4-bit and small models — validate on your task",
                              "assumes a fused dequantising kernel (Marlin-like) at the predicted speed")))
    for compute in ("fp8", "int8"):
        if prec.act_bits <= 8:
            skipped.append({"name": compute, "reason": f"activations are already {prec.act_bits}-bit"})
            continue
        if getattr(gpu_spec.peak_tflops, compute) is None:
            skipped.append({"name": compute, "reason": f"{gpu_spec.name} has no {compute} tensor cores"})
            continue
        out.append(Candidate(compute, f"{compute} weights and activations (W8A8, {compute} tensor cores, kv{kv})",
                             _with_dtype(base, Precision(8, 8, kv, compute)),
                             (f"{ACCURACY}: W8A8 {compute} is usually close to fp16 for large models but activation "
                              "outliers can hurt small ones (SmoothQuant-style calibration assumed)",)))
    if kv <= 8:
        skipped.append({"name": "kv8", "reason": f"KV cache is already {kv}-bit"})
    else:
        out.append(Candidate("kv8", "8-bit KV cache (more sequences fit; fewer KV bytes per decode step)",
                             _with_dtype(base, dataclasses.replace(prec, kv_bits=8)),
                             (f"{ACCURACY}: 8-bit KV (fp8/int8) is usually near-lossless, but check long-context tasks",)))
    return out, skipped


def _engine_candidates(base: Scenario, workload: Workload) -> tuple[list[Candidate], list[dict]]:
    c = base.config
    out = [Candidate("max_num_seqs×2", f"max_num_seqs {c.max_num_seqs} → {2 * c.max_num_seqs}",
                     _with_config(base, max_num_seqs=2 * c.max_num_seqs),
                     ("larger batches raise TPOT; only helps when the batch limit (not KV memory) binds",)),
           Candidate("chunk×2", f"max_num_batched_tokens {c.max_num_batched_tokens} → {2 * c.max_num_batched_tokens}",
                     _with_config(base, max_num_batched_tokens=2 * c.max_num_batched_tokens),
                     ("longer prefill chunks stall co-scheduled decodes: TPOT tail grows",))]
    skipped = []
    half = c.max_num_batched_tokens // 2
    if half < 1 or (not c.chunked_prefill and half < int(workload.prompt_tokens.max())):
        skipped.append({"name": "chunk÷2", "reason": "without chunked prefill the token budget must hold a whole prompt"})
    else:
        out.append(Candidate("chunk÷2", f"max_num_batched_tokens {c.max_num_batched_tokens} → {half}",
                             _with_config(base, max_num_batched_tokens=half),
                             ("shorter chunks lower the TPOT tail but add iterations (overhead) and raise TTFT",)))
    context = workload.prompt_tokens + workload.output_tokens
    budget = max(64, int(np.mean(context)) // 2 // c.block_size * c.block_size)
    if c.kv_budget_tokens is not None and c.kv_budget_tokens <= budget:
        skipped.append({"name": "kv-budget", "reason": f"a KV budget of {c.kv_budget_tokens} tokens is already set"})
    elif budget >= int(context.max()):
        skipped.append({"name": "kv-budget", "reason": f"sequences ({int(context.max())} tokens at most) are too short "
                                                       "for a KV budget to save anything"})
    else:
        out.append(Candidate("kv-budget", f"keep at most {budget} KV tokens per sequence (half the mean context)",
                             _with_config(base, kv_budget_tokens=budget),
                             (f"{ACCURACY}: KV eviction drops tokens (ALISA/MorphKV/StreamingLLM-style); quality loss "
                              "depends on the task and grows as the budget shrinks",)))
    return out, skipped


def _layout_candidates(base: Scenario) -> list[Candidate]:
    """MoE models: expert parallelism, and attention data parallelism with EP, on the same GPUs."""
    from predictor.models import get_model
    from predictor.parallel import ParallelConfig, as_parallel

    par = as_parallel(base.tp)
    model = get_model(base.model)
    if not model.is_moe or par.stage_gpus < 2:
        return []
    out = []
    gpus = par.stage_gpus
    for name, layout, change in (
            ("ep", ParallelConfig(tp=par.tp, pp=par.pp, dp_attention=par.dp_attention, ep=gpus),
             f"experts spread over the {gpus} GPUs (EP {gpus}) instead of split within each expert"),
            ("dp-attention + ep", ParallelConfig(tp=1, pp=par.pp, dp_attention=gpus, ep=gpus),
             f"attention data-parallel over {gpus} replicas, experts over EP {gpus} (all-to-all dispatch)")):
        if layout == par:
            continue
        try:
            model.check_parallel(layout)
        except InputError:
            continue
        out.append(Candidate(name, change, dataclasses.replace(base, tp=layout),
                             ("balanced expert routing assumed (a hot expert slows its rank)",
                              "all-to-all cost from link bandwidth; attention-DP replicas share requests evenly")))
    return out


def _scale_candidates(base: Scenario) -> list[Candidate]:
    if not isinstance(base.tp, int):
        return _layout_candidates(base) + [
            Candidate("2 replicas", "2 instances of this layout, requests dealt round-robin",
                      dataclasses.replace(base, replicas=2 * base.replicas),
                      (f"cost ×2 ({2 * base.gpus} GPUs)", "a perfect router: each replica gets every other request"))]
    fewer = []
    if base.tp % 2 == 0:
        half = dataclasses.replace(base, tp=base.tp // 2)
        fewer = [Candidate("tp÷2", f"tensor parallelism {base.tp} → {base.tp // 2} (half the GPUs)", half,
                           ("less KV memory per instance: fewer concurrent sequences",)),
                 Candidate("tp÷2 ×2 replicas", f"2 instances at TP {base.tp // 2} (same GPUs), requests dealt round-robin",
                           dataclasses.replace(half, replicas=2 * base.replicas),
                           ("a perfect router: each replica gets every other request (half the arrival rate)",
                            "each request runs on fewer GPUs: higher per-request latency when compute-bound"))]
    return fewer + _layout_candidates(base) + [
        Candidate("tp×2", f"tensor parallelism {base.tp} → {2 * base.tp}", dataclasses.replace(base, tp=2 * base.tp),
                  (f"cost ×2 ({2 * base.gpus} GPUs); assumes the GPUs share a fast intra-node link",)),
        Candidate("2 replicas", f"2 instances at TP {base.tp}, requests dealt round-robin",
                  dataclasses.replace(base, replicas=2 * base.replicas),
                  (f"cost ×2 ({2 * base.gpus} GPUs)", "a perfect router: each replica gets every other request "
                                                       "(half the arrival rate)")),
        Candidate("disaggregate", f"prefill/decode disaggregation: 1 prefill + 1 decode instance at TP {base.tp}",
                  dataclasses.replace(base, disaggregated=True),
                  (f"cost ×2 ({2 * base.gpus} GPUs)", "KV copied over the GPU link (intra-node NVLink-class "
                   "bandwidth assumed); the decode instance alone holds every running request's KV")),
    ]


def _speculative_candidate(predictor, base: Scenario, summary: dict, workload: Workload,
                           alpha: float) -> tuple[list[Candidate], list[dict]]:
    """MEDUSA/EAGLE-style draft heads, applied analytically (see the module docstring)."""
    from scheduler.techniques.speculative import SpeculativeModel, SpeculativeSetup

    decode = summary.get("efficiency", {}).get("decode")
    if not decode or decode.get("time_ms", 0.0) <= 0:
        return [], [{"name": "speculative", "reason": "the workload has no decode phase"}]
    batch = max(1, int(round(summary.get("batch_size", {}).get("mean", 1.0))))
    context = int(np.mean(workload.prompt_tokens + workload.output_tokens / 2))
    setup = SpeculativeSetup(base.model, base.gpu, base.tp, base.dtype, draft="heads",
                             draft_cost_fraction=SPEC_DRAFT_COST_FRACTION)
    point = SpeculativeModel(predictor, setup).point(batch, context, SPEC_GAMMA, alpha)
    speedup = float(point["speedup"])
    decode_share = decode["time_ms"] / summary["efficiency"]["overall"]["time_ms"]
    span_s = float(workload.arrival_s.max() - workload.arrival_s.min())

    def apply(s: dict, wl: Workload) -> dict:
        out = dict(s)
        makespan = max(span_s, s["makespan_s"] * (1 - decode_share + decode_share / speedup))
        out["output_tokens_per_s"] = s["output_tokens_per_s"] * s["makespan_s"] / makespan if makespan > 0 else s[
            "output_tokens_per_s"]
        out["tpot_ms"] = {k: v / speedup for k, v in s["tpot_ms"].items()}
        return out

    return [Candidate("speculative", f"speculative decoding, draft heads (γ = {SPEC_GAMMA}, acceptance {alpha:g}): "
                                     f"{speedup:.2f}× per decode step at batch {batch}, context {context} (analytic)",
                      base,
                      (f"acceptance rate {alpha:g} is an assumption (task-dependent); a draft step costs "
                       f"{SPEC_DRAFT_COST_FRACTION:.0%} of a target step; output is unchanged (lossless) by construction",
                       "analytic: per-step speed-up at the mean batch and context applied to the baseline run; "
                       "draft memory and batching dynamics not simulated"), apply)], []


def candidates(predictor, base: Scenario, summary: dict, workload: Workload,
               spec_acceptance: float = 0.8) -> tuple[list[Candidate], list[dict]]:
    """Every candidate change for ``base`` and the ones skipped before simulation (``{name, reason}``)."""
    from predictor import get_gpu

    gpu_spec = get_gpu(base.gpu) if isinstance(base.gpu, str) else base.gpu
    found, skipped = [], []
    for cands, skips in (_precision_candidates(base, gpu_spec), _engine_candidates(base, workload),
                         (_scale_candidates(base), []),
                         _speculative_candidate(predictor, base, summary, workload, spec_acceptance)):
        found += cands
        skipped += skips
    return found, skipped


def evaluate(predictor, candidate: Candidate, workload: Workload, base_summary: dict | None = None) -> dict:
    """Headline metrics of ``candidate`` on ``workload`` (analytic candidates start from ``base_summary``)."""
    if candidate.analytic is not None:
        summary = base_summary if base_summary is not None else simulate(predictor, candidate.scenario, workload)
        summary = candidate.analytic(summary, workload)
    else:
        summary = simulate(predictor, candidate.scenario, workload)
    return headline(summary)


def _row(candidate: Candidate, metrics: dict, base: dict, base_gpus: int, objective: str) -> dict:
    relative = {k: _ratio(metrics[k], base[k]) - 1 for k in METRICS}
    notes = []
    if metrics["finished"] < base["finished"]:
        notes.append(f"{base['finished'] - metrics['finished']} fewer requests finished than the baseline")
    return {"name": candidate.name, "change": candidate.change, "effect": "analytic" if candidate.analytic else "simulated",
            "gpus": candidate.scenario.gpus, "gpus_vs_baseline": candidate.scenario.gpus / base_gpus,
            "metrics": metrics, "relative": relative,
            "gain": gain(objective, metrics, candidate.scenario.gpus, base, base_gpus),
            "risks": list(candidate.risks) + notes,
            "scenario": {"tp": _layout_json(candidate.scenario.tp), "dtype": str(_dtype_label(candidate.scenario.dtype)),
                         "replicas": candidate.scenario.replicas, "disaggregated": candidate.scenario.disaggregated,
                         "config": candidate.scenario.config.to_dict()}}


def _layout_json(tp):
    """An int TP degree as is; a parallel config as its fields."""
    return tp if isinstance(tp, int) else tp.to_dict()


def _dtype_label(dtype) -> str:
    from predictor.precision import parse_dtype

    return parse_dtype(dtype).label


def _sort_key(row: dict) -> float:
    g = row["gain"]
    return -g if math.isfinite(g) else math.inf


def advise(predictor, base: Scenario, workload_spec: WorkloadSpec, objective: str = "per-gpu",
           spec_acceptance: float = 0.8, progress: Callable[[int, int], None] | None = None) -> dict:
    """Baseline bottlenecks and candidate changes ranked by ``objective`` (see the module docstring).

    Parameters
    ----------
    predictor : predictor.Predictor
    base : Scenario
        The baseline setup (one instance).
    workload_spec : WorkloadSpec
        Every candidate serves the same workload (same seed).
    objective : {"per-gpu", "throughput", "ttft", "tpot"}
    spec_acceptance : float
        Per-token acceptance probability assumed for speculative decoding (0–1).
    progress : callable, optional
        ``progress(done, total)`` after each simulation.

    Returns
    -------
    dict
        ``setup``, ``workload``, ``objective``, ``baseline`` (headline metrics, GPUs, and ``arrival_limited``: the
        baseline's throughput is ≥ 90% of the offered output tokens/s, so no change can raise it much), ``bottlenecks``
        (per phase: bottleneck, evidence, explanation), ``candidates`` (ranked, best first: metrics, relative
        change, gain, GPUs, risks, effect ``simulated`` or ``analytic``), ``skipped`` (``{name, reason}``) and
        ``assumptions``.

    Examples
    --------
    >>> from predictor import Predictor
    >>> report = advise(Predictor.load(), Scenario("llama-2-7b", "a100-80gb"),
    ...                 WorkloadSpec("offline", 8, prompt_len=128, output_len=256))  # doctest: +SKIP
    >>> report["bottlenecks"]["decode"]["bottleneck"]  # doctest: +SKIP
    'memory'
    """
    if objective not in OBJECTIVES:
        raise InputError(f"--objective: unknown value {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if not 0 <= spec_acceptance < 1:
        raise InputError(f"--spec-acceptance: must be in [0, 1), got {spec_acceptance!r}")
    workload = workload_spec.build()
    summary = simulate(predictor, base, workload)
    base_metrics = headline(summary)
    found, skipped = candidates(predictor, base, summary, workload, spec_acceptance)
    rows = []
    for i, cand in enumerate(found):
        try:
            metrics = evaluate(predictor, cand, workload, summary)
        except InputError as exc:
            skipped.append({"name": cand.name, "reason": " ".join(str(exc).split())})
        else:
            rows.append(_row(cand, metrics, base_metrics, base.gpus, objective))
        if progress is not None:
            progress(i + 1, len(found))
    rows.sort(key=_sort_key)
    gpu_name = base.gpu if isinstance(base.gpu, str) else base.gpu.name
    span_s = float(workload.arrival_s.max() - workload.arrival_s.min())
    offered = float(workload.output_tokens.sum()) / span_s if span_s > 0 else math.inf
    return {
        "setup": {"model": base.model, "gpu": gpu_name, "tp": _layout_json(base.tp), "dtype": _dtype_label(base.dtype),
                  "gpus": base.gpus, "config": base.config.to_dict(),
                  "framework": base.profile.framework if base.profile is not None else "legacy"},
        "workload": dataclasses.asdict(workload_spec) | {"requests": len(workload)},
        "objective": objective,
        "baseline": base_metrics | {"gpus": base.gpus, "makespan_s": float(summary["makespan_s"]),
                                    "batch_size_mean": float(summary.get("batch_size", {}).get("mean", float("nan"))),
                                    "arrival_limited": bool(base_metrics["output_tokens_per_s"] >= 0.9 * offered)},
        "bottlenecks": bottlenecks(summary.get("efficiency", {})),
        "candidates": rows,
        "skipped": skipped,
        "assumptions": [
            "every candidate serves the same requests (same seed) as the baseline; effects are predictions of the "
            "simulator and the predictor, not measurements",
            "accuracy effects (quantisation, KV eviction) are not modelled",
            "more replicas: requests dealt round-robin to identical instances (a perfect router)",
            "open-loop workloads: throughput follows the arrival rate unless the baseline is saturated",
        ],
    }


def recheck(predictor, base: Scenario, workload_spec: WorkloadSpec, report: dict, seed: int,
            spec_acceptance: float = 0.8, name: str | None = None) -> dict:
    """Re-simulate a recommendation (default: the top one) and the baseline on a fresh ``seed``.

    Returns ``{name, objective, predicted_ratio, delivered_ratio, relative_difference, agree_within_5pct}`` where a
    ratio is the objective's ``gain + 1`` (e.g. tokens/s per GPU of the candidate ÷ the baseline's) and
    ``relative_difference`` = |delivered_ratio / predicted_ratio − 1|.
    """
    name = name or report["candidates"][0]["name"]
    objective = report["objective"]
    predicted = next(r for r in report["candidates"] if r["name"] == name)
    workload = dataclasses.replace(workload_spec, seed=seed).build()
    summary = simulate(predictor, base, workload)
    base_metrics = headline(summary)
    found, _ = candidates(predictor, base, summary, workload, spec_acceptance)
    cand = next(c for c in found if c.name == name)
    metrics = evaluate(predictor, cand, workload, summary)
    delivered = gain(objective, metrics, cand.scenario.gpus, base_metrics, base.gpus)
    pred_ratio, deliv_ratio = predicted["gain"] + 1, delivered + 1
    diff = abs(deliv_ratio / pred_ratio - 1) if pred_ratio > 0 else float("nan")
    return {"name": name, "objective": objective, "seed": seed, "predicted_ratio": pred_ratio,
            "delivered_ratio": deliv_ratio, "relative_difference": diff, "agree_within_5pct": bool(diff <= 0.05),
            "baseline": base_metrics, "candidate": metrics}
