"""Several models sharing the same GPUs (spatial-temporal multiplexing, as in MuxServe), co-simulated.

Each co-located model is a :class:`scheduler.engine.Simulator` with its own requests, queue, clock and a
*partition* of every GPU's memory (its weights, workspace, runtime overhead and KV cache). The engines are
interleaved event by event in global time order (the engine whose next action is earliest goes next, as in
:mod:`scheduler.techniques.cluster`), and every iteration's duration is decided by a contention model
through the engine's ``stretch`` hook.

Contention models (``contention=``)
-----------------------------------
Every iteration of model i is described by its predicted solo duration ``dt`` (ms; kernels + CPU overhead)
and its FLOPs ``F`` and HBM bytes ``B`` per GPU. Alone it demands a compute rate ``F/dt`` and an HBM rate
``B/dt`` — its MFU and MBU times the peaks (``dt`` is first raised to the roofline time max(F/peak, B/bw)
if the predictor ever gives less, so no iteration alone demands more than a GPU has).

* ``"shared"`` (spatial sharing, a fluid model): iterations of different models run concurrently; an
  iteration progresses at a speed ``s(t) = min(1, free HBM rate / (B/dt), free FLOP rate / (F/dt))``, where
  the free rates are the peaks minus what the iterations started *earlier* and still in flight use (their
  committed rate profiles). It finishes when ∫ s dt' = dt. Earlier-launched work keeps its rate and later
  work fills what is left (like kernels of a later CUDA stream filling the SMs and bandwidth that earlier
  kernels leave free); since engines alternate, priority alternates too. Because every iteration only uses
  what is free at each instant, the attained aggregate HBM bytes/s and FLOP/s of the co-located models never
  exceed the GPU's bandwidth and peak, over any interval — exactly, not on average. Two memory-bound
  iterations (Σ MBU > 1) stretch; a memory-bound decode beside a compute-bound prefill barely does.
* ``"interleaved"`` (temporal multiplexing): the GPU runs one iteration at a time, first come first served;
  an iteration that finds the GPU busy waits, so co-located iterations' durations add.
* ``"none"``: no contention (each model as if alone; an optimistic bound that can exceed the GPU — for
  comparison only).

Assumptions: an iteration's demand is spread evenly over its solo duration (its CPU-overhead gaps are
averaged in, which is what lets another model's kernels use them); the peak bandwidth and peak dense FLOP/s
are the capacities (attainable fractions are already folded into each solo ``dt``, so two half-efficient
iterations overlap without slowdown — an optimistic reading for kernels limited by latency rather than
throughput); L2 cache and SM interference beyond these two resources are not modelled; all co-located
models use the same GPUs with the same TP degree (every GPU holds one shard of each), so contention per
GPU is the same on all of them.

Memory partitions: each model gets its weights + activation workspace + runtime overhead, and the KV space
left in ``gpu_memory_utilization`` × GPU memory is split by ``kv_shares`` (equal by default); the partitions
(fixed parts + KV blocks × bytes per block) sum to at most ``gpu_memory_utilization`` × GPU memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from predictor.errors import InputError, ModelDoesNotFitError
from scheduler.engine import DONE, REJECTED, STUCK, WAITING, EngineConfig, IterationLog, Simulator, _State

CONTENTION_MODES = ("shared", "interleaved", "none")
_EPS = 1e-12


@dataclass
class Segment:
    """A stretch of one iteration at constant rates: [``start_s``, ``end_s``) on model ``model``'s engine."""

    model: int
    start_s: float
    end_s: float
    bytes_per_s: float
    flops_per_s: float


class Contention:
    """Decides co-located iterations' durations (see the module docstring) and logs their rate profiles.

    Parameters
    ----------
    mode : {"shared", "interleaved", "none"}
    peak_flops, hbm_bytes_per_s : float
        Capacities of one GPU (FLOP/s, bytes/s).

    Attributes
    ----------
    segments_ : list of Segment
        Every iteration's constant-rate pieces, in commit order (``record=True`` only).
    """

    def __init__(self, mode: str, peak_flops: float, hbm_bytes_per_s: float, record: bool = False):
        if mode not in CONTENTION_MODES:
            raise InputError(f"contention: unknown value {mode!r}; allowed: {', '.join(CONTENTION_MODES)}")
        self.mode = mode
        self.peak_flops = float(peak_flops)
        self.hbm_bytes_per_s = float(hbm_bytes_per_s)
        self.record = record
        self.segments_: list[Segment] = []
        self._active: list[Segment] = []  # committed pieces that may still be in flight
        self._gpu_free_s = 0.0           # interleaved mode: when the GPU finishes its current iteration

    def duration_ms(self, model: int, start_s: float, dt_ms: float, flops: float, hbm_bytes: float) -> float:
        """Actual duration (ms) of an iteration of ``model`` starting at ``start_s`` (s), solo ``dt_ms``."""
        solo_s = max(dt_ms / 1e3, flops / self.peak_flops, hbm_bytes / self.hbm_bytes_per_s)
        if solo_s <= 0:
            return dt_ms
        rate_b, rate_f = hbm_bytes / solo_s, flops / solo_s
        if self.mode == "none":
            pieces = [Segment(model, start_s, start_s + solo_s, rate_b, rate_f)]
        elif self.mode == "interleaved":
            begin = max(start_s, self._gpu_free_s)
            self._gpu_free_s = begin + solo_s
            pieces = [Segment(model, begin, begin + solo_s, rate_b, rate_f)]
        else:
            pieces = self._fluid(model, start_s, solo_s, rate_b, rate_f)
        self._active = [s for s in self._active if s.end_s > start_s] + pieces
        if self.record:
            self.segments_ += pieces
        return (pieces[-1].end_s - start_s) * 1e3

    def _fluid(self, model: int, start_s: float, solo_s: float, rate_b: float, rate_f: float) -> list[Segment]:
        """Rate profile of a new iteration under what the earlier-committed iterations leave free."""
        live = [s for s in self._active if s.end_s > start_s and s.start_s < math.inf]
        cuts = sorted({start_s} | {max(s.start_s, start_s) for s in live} | {s.end_s for s in live})
        pieces: list[Segment] = []
        left_s = solo_s  # solo-time work still to do
        for k, t0 in enumerate(cuts):
            t1 = cuts[k + 1] if k + 1 < len(cuts) else math.inf
            used_b = sum(s.bytes_per_s for s in live if s.start_s <= t0 < s.end_s)
            used_f = sum(s.flops_per_s for s in live if s.start_s <= t0 < s.end_s)
            speed = 1.0
            if rate_b > 0:
                speed = min(speed, max(self.hbm_bytes_per_s - used_b, 0.0) / rate_b)
            if rate_f > 0:
                speed = min(speed, max(self.peak_flops - used_f, 0.0) / rate_f)
            if speed <= _EPS:
                continue  # the GPU is saturated by earlier work over [t0, t1): wait
            end = t0 + left_s / speed
            if end <= t1:
                pieces.append(Segment(model, t0, end, rate_b * speed, rate_f * speed))
                return pieces
            pieces.append(Segment(model, t0, t1, rate_b * speed, rate_f * speed))
            left_s -= (t1 - t0) * speed
        raise AssertionError("unreachable: the GPU is free after the last committed iteration")


def partition_memory(models, gpu, tp: int, precision, *, gpu_memory_utilization: float = 0.9,
                     kv_shares=None, max_num_batched_tokens: int = 4096, max_num_seqs: int = 256,
                     block_size: int = 16) -> list:
    """Split each GPU's memory among co-located models; one :class:`~predictor.memory.MemoryPlan` per model.

    Every model gets its fixed part (weights + workspace + overhead, per GPU at TP ``tp``), and the KV space
    left in ``gpu_memory_utilization`` × GPU memory is divided by ``kv_shares`` (fractions, equal by default).

    Raises
    ------
    InputError
        When the models' fixed parts leave no KV block for one of them (a one-line message).
    """
    from predictor.memory import plan_memory

    n = len(models)
    shares = np.full(n, 1.0 / n) if kv_shares is None else np.asarray(kv_shares, float)
    if shares.shape != (n,) or not np.all(shares > 0) or shares.sum() > 1 + 1e-9:
        raise InputError(f"kv_shares: need {n} positive fractions summing to at most 1, got {kv_shares!r}")
    # per-sequence state comes out of each model's KV blocks as its engine admits sequences (Simulator)
    kw = dict(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs, block_size=block_size,
              state_on_demand=True)
    fixed = []
    for m in models:
        try:
            plan = plan_memory(m, gpu, tp, precision, gpu_memory_utilization=1.0, **kw)
        except ModelDoesNotFitError as exc:
            raise InputError(f"colocation: {m.name} alone does not fit on {gpu.name} at tp={tp}") from exc
        fixed.append(plan.weights_bytes + plan.activation_bytes + plan.overhead_bytes)
    usable = gpu.memory_bytes * gpu_memory_utilization
    kv_space = usable - sum(fixed)
    names = " + ".join(m.name for m in models)
    plans = []
    for m, f, share in zip(models, fixed, shares, strict=True):
        utilization = (f + share * kv_space) / gpu.memory_bytes
        if kv_space <= 0 or utilization <= 0:
            raise InputError(f"colocation: {names} do not fit together on {gpu.name} at tp={tp}: fixed parts "
                             f"{sum(fixed) / 2**30:.1f} GiB > usable {usable / 2**30:.1f} GiB")
        try:
            plans.append(plan_memory(m, gpu, tp, precision, gpu_memory_utilization=min(utilization, 1.0), **kw))
        except ModelDoesNotFitError as exc:
            raise InputError(f"colocation: {names} do not fit together on {gpu.name} at tp={tp}: {m.name}'s "
                             f"share leaves it no KV block") from exc
    return plans


@dataclass
class ColocationResult:
    """Per-model results of a co-located run.

    Attributes
    ----------
    results : list of scheduler.metrics.SimResult
        One per model, in the order given (requests, iterations, summary with efficiency).
    memory : list of predictor.memory.MemoryPlan
        Each model's memory partition of one GPU.
    segments : list of Segment
        Every iteration's constant-rate pieces (when recorded).
    peaks : tuple of float
        (peak FLOP/s, HBM bytes/s) of one GPU.
    """

    results: list
    memory: list
    segments: list
    peaks: tuple

    @property
    def makespan_s(self) -> float:
        """Time (s) of the last finish over all models (the engines' clocks start at 0)."""
        spans = []
        for res in self.results:
            c = res.columns
            done = c["status_code"] == DONE
            if done.any():
                spans.append(float(c["finish_s"][done].max()))
        return max(spans, default=0.0)


class ColocatedSimulator:
    """Co-simulates models sharing the same GPUs (see the module docstring).

    Parameters
    ----------
    predictor : predictor.Predictor
    models : list of str or model spec
        The co-located models (at least one; each a name the predictor knows).
    gpu : str or spec
    tp : int
        TP degree of every model (each GPU of the group holds one shard of each).
    dtype : str
    config : EngineConfig, optional
        Engine knobs shared by all models (``num_blocks`` and ``gpu_memory_utilization`` are replaced by the
        partition); ``fast_forward`` is off while the contention hook is set.
    contention : {"shared", "interleaved", "none"}
    kv_shares : sequence of float, optional
        Fractions of the free KV space per model (equal by default).
    gpu_memory_utilization : float
        Fraction of each GPU's memory the partitions may use together.

    Examples
    --------
    >>> sim = ColocatedSimulator(Predictor.load(), ["llama-2-7b", "phi-2"], "a100-80gb")  # doctest: +SKIP
    >>> out = sim.run([workload_a, workload_b])  # doctest: +SKIP
    >>> out.results[0].summary()["makespan_s"]  # doctest: +SKIP
    """

    def __init__(self, predictor, models, gpu, tp: int = 1, dtype: str = "fp16", config: EngineConfig | None = None,
                 *, contention: str = "shared", kv_shares=None, gpu_memory_utilization: float = 0.9):
        if not models:
            raise InputError("colocation: at least one model is needed")
        if contention not in CONTENTION_MODES:
            raise InputError(f"contention: unknown value {contention!r}; allowed: {', '.join(CONTENTION_MODES)}")
        config = config or EngineConfig()
        bound = [predictor.bind(m, gpu, tp, dtype) for m in models]
        self.memory = partition_memory([b.model for b in bound], bound[0].gpu, tp, bound[0].precision,
                                       gpu_memory_utilization=gpu_memory_utilization, kv_shares=kv_shares,
                                       max_num_batched_tokens=config.max_num_batched_tokens,
                                       max_num_seqs=config.max_num_seqs, block_size=config.block_size)
        self.sims = [Simulator(predictor, m, gpu, tp, dtype, replace(config, num_blocks=plan.num_blocks))
                     for m, plan in zip(models, self.memory, strict=True)]
        self.contention = contention

    def run(self, workloads, *, record_iterations: bool = False, record_segments: bool = False) -> ColocationResult:
        """Serve ``workloads[i]`` with model i, all on the same GPUs, to completion."""
        from scheduler.metrics import SimResult

        if len(workloads) != len(self.sims):
            raise InputError(f"workloads: need one per co-located model ({len(self.sims)}), got {len(workloads)}")
        peak_flops, bw = self.sims[0].peaks
        model = Contention(self.contention, peak_flops, bw, record=record_segments)
        states, logs, nexts, left = [], [], [], []
        for i, (sim, wl) in enumerate(zip(self.sims, workloads, strict=True)):
            state = _State(wl)
            state.peaks = sim.peaks
            sim._reject_impossible(state)
            sim.start()
            sim.stretch = (lambda engine, start, dt, fl, nb, i=i: model.duration_ms(i, start, dt, fl, nb))
            states.append(state)
            logs.append(IterationLog())
            nexts.append(0)
            left.append(len(wl) - int((state.status == REJECTED).sum()))
        try:
            while True:
                k, t_k = -1, math.inf
                for i, (sim, state) in enumerate(zip(self.sims, states, strict=True)):
                    if left[i] <= 0:
                        continue
                    n = len(state.arrival)
                    t = sim.now if (state.running or state.waiting) else (
                        max(sim.now, float(state.arrival[nexts[i]])) if nexts[i] < n else math.inf)
                    if t < t_k:
                        k, t_k = i, t
                if k < 0:
                    break
                sim, state = self.sims[k], states[k]
                sim.now = t_k
                n = len(state.arrival)
                while nexts[k] < n and state.arrival[nexts[k]] <= sim.now:
                    if state.status[nexts[k]] == WAITING:
                        state.waiting.append(nexts[k])
                    nexts[k] += 1
                limit = float(state.arrival[nexts[k]]) if nexts[k] < n else math.inf
                outcome, done, _ = sim.advance(state, logs[k], limit, record_iterations)
                left[k] -= done
                if outcome == STUCK:
                    if nexts[k] < n:
                        sim.now = max(sim.now, limit)
                    else:
                        left[k] -= sim.reject_head(state)
        finally:
            for sim in self.sims:
                sim.stretch = None
        results = [SimResult.from_state(state, log, sim, wl, partial=False)
                   for sim, state, log, wl in zip(self.sims, states, logs, workloads, strict=True)]
        return ColocationResult(results, self.memory, model.segments_, (peak_flops, bw))


def max_attained_rates(segments, window_s: float | None = None) -> tuple[float, float]:
    """Largest aggregate (HBM bytes/s, FLOP/s) of ``segments`` at any instant, or averaged over any window
    of ``window_s`` seconds starting at a segment boundary (vectorised over all boundaries)."""
    if not segments:
        return 0.0, 0.0
    start = np.array([s.start_s for s in segments])
    end = np.array([s.end_s for s in segments])
    rates = np.array([[s.bytes_per_s, s.flops_per_s] for s in segments])
    points = np.unique(np.concatenate([start, end]))
    if window_s is None:  # instantaneous: the rate sum on each elementary interval [points[k], points[k+1])
        active = (start[None, :] <= points[:-1, None]) & (end[None, :] > points[:-1, None])
        totals = active.astype(float) @ rates
    else:  # bytes (FLOPs) inside [p, p + window) over the window
        lo = points[:, None]
        overlap = np.clip(np.minimum(end[None, :], lo + window_s) - np.maximum(start[None, :], lo), 0.0, None)
        totals = overlap @ rates / window_s
    return float(totals[:, 0].max()), float(totals[:, 1].max())
