"""A discrete-event simulator of a vLLM-like serving engine (one model instance, TP t), driven by the Predictor.

Time advances one engine iteration at a time; each iteration's duration is the Predictor's time for the
batch the policy scheduled (kernels + non-kernel overhead; hybrid by default, roofline-only selectable).

Engine model
------------
* **Requests** hold a prompt and an output length. A request's KV cache grows by one token per decode
  step; it finishes when it has generated ``output_tokens`` (the first token comes with the end of its
  prefill, then ``output_tokens − 1`` decode steps).
* **Paged KV cache**: ``num_blocks`` blocks of ``block_size`` tokens, from the memory model
  (:func:`predictor.memory.plan_memory` with ``gpu_memory_utilization``). A request holds
  ceil(KV tokens / block_size) blocks, plus — for a model with per-sequence state (sliding or chunked
  windows, recurrent states) — the blocks of that state at its largest (windows filled to min(prompt +
  output − 1, window)), taken at admission and freed when it leaves, as a hybrid KV allocator (vLLM V1)
  draws them from one pool instead of setting memory aside for ``max_num_seqs`` sequences. Charging the
  peak at admission is an upper bound while a window is still filling.
* **Admission** is FCFS, bounded by ``max_num_seqs`` running requests and ``max_num_batched_tokens``
  tokens per iteration, and by free blocks.
* **Chunked prefill on** (Sarathi-Serve / vLLM v1): every iteration runs all decodes first, then prefill
  chunks (continuing ones, then new admissions) up to the token budget.
  **Off** (vLLM v0): when waiting requests fit, an iteration prefills them whole (decodes wait);
  otherwise it is a decode iteration.
* **Preemption by recompute**: when a decode step needs blocks that are not free, the latest-arrived
  running request is evicted (its blocks freed) and re-queued at the front of the waiting queue; when
  re-admitted it recomputes its prompt and the tokens it had generated as one prefill.
* A request that can never fit (prompt + output beyond the model's context or the whole KV cache) is
  rejected with a reason instead of being scheduled.

Policies (:data:`POLICIES`, chosen by name) decide what each iteration runs: ``continuous``
(iteration-level batching, the vLLM scheduler above) and ``static`` (request-level batching: a batch is
formed only when the engine is empty, reserves KV for its full prompt + output, and runs until every
member finishes — the pre-Orca baseline).

What-if knobs (all off by default; see ``docs/techniques.md``):

* ``kv_allocation`` — ``paged`` (vLLM's PagedAttention, the default) or a contiguous reservation made at
  admission, as in pre-vLLM systems (the vLLM paper's Orca baselines): ``contiguous`` reserves
  ``max_model_len`` token slots per request, ``contiguous_pow2`` the prompt plus the output length rounded
  up to a power of two, ``contiguous_oracle`` exactly prompt + output − 1 (the true need, known in advance).
  Only internal waste is modelled (reserved but unused slots); the external fragmentation a real
  contiguous allocator also suffers is not, which flatters the contiguous baselines.
* ``kv_budget_tokens`` — a KV-cache token budget per sequence (ALISA / MorphKV / StreamingLLM-style
  eviction): a sequence holds at most that many tokens of KV (blocks for ``min(kv, budget)``), and
  attention reads at most that many cached tokens. Which tokens are kept, and the accuracy cost of
  dropping the others, are out of scope: only memory and time are modelled.

The KV-cache waste statistic (reserved token slots not holding a token, time-weighted and at the peak of
reservation; per-sequence state blocks count as held) is accumulated in :class:`RunningStats` for every run.

Multi-instance hooks (used by :mod:`scheduler.techniques.cluster`; inert in a plain :meth:`Simulator.run`):
requests may arrive *prefilled* (their prompt's KV cache computed elsewhere, the first token already
generated: a disaggregated decode instance admits them straight into decoding), and an instance may hand
every request off when its prefill completes (a disaggregated prefill instance; :attr:`Simulator.handoff`).
:meth:`Simulator.start` and :meth:`Simulator.advance` step one instance an iteration at a time so that
several instances can be co-simulated in time order.

Code layout: this module holds :class:`Simulator` (the event loop) and re-exports the engine's public names;
configuration, per-request state and statistics live in :mod:`scheduler.engine_state`, KV-block accounting and
admission in :mod:`scheduler.engine_blocks`, the policies in :mod:`scheduler.engine_policies`, and timing and
applying iterations (fast-forward included) in :mod:`scheduler.engine_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from predictor.parallel import as_parallel
from scheduler.efficiency import EfficiencyRecorder
from scheduler.engine_blocks import KVBlockManager
from scheduler.engine_policies import POLICIES, ContinuousBatching, Policy, StaticBatching
from scheduler.engine_state import (
    ADVANCED,
    DONE,
    EVICTED,
    ITL_EDGES_S,
    KV_ALLOCATIONS,
    REJECTED,
    RUNNING,
    STUCK,
    WAITING,
    ClosedLoop,
    EngineConfig,
    IterationLog,
    RunningStats,
    _State,
)
from scheduler.engine_steps import IterationRunner, _capped_context_sums
from scheduler.workload import Workload

if TYPE_CHECKING:
    from scheduler.metrics import SimResult

__all__ = ["ADVANCED", "DONE", "EVICTED", "ITL_EDGES_S", "KV_ALLOCATIONS", "POLICIES", "REJECTED", "RUNNING", "STUCK",
           "WAITING", "ClosedLoop", "ContinuousBatching", "EngineConfig", "IterationLog", "Policy", "RunningStats",
           "Simulator", "StaticBatching", "_State", "_capped_context_sums"]


class Simulator(KVBlockManager, IterationRunner):
    """Simulates one model instance serving a workload.

    Parameters
    ----------
    predictor : predictor.Predictor
        Source of iteration times (``Predictor.load()`` or ``Predictor.roofline_only()``).
    model, gpu : str or spec
    tp : int
    dtype : str
    config : EngineConfig
    profile : scheduler.engine_profiles.EngineProfile, optional
        Time steps with a serving framework's per-step costs (kernel scale, CUDA-graph padding, overheads)
        instead of the predictor's own overhead model, and with its kernels
        (:meth:`predictor.Predictor.for_framework`) when its ``kernel_family`` says so.

    Attributes
    ----------
    handoff : list or None
        When a list, every request whose prefill completes (and that has more tokens to generate) leaves
        this instance and its id is appended here (a disaggregated prefill instance). None by default.
    accepts_prefilled : bool
        Admit requests flagged ``prefilled`` straight into decoding (a disaggregated decode instance).
    tokens_held : int
        KV tokens currently held by this instance's requests (after any budget cap).
    preemptions_total : int
        Evictions (preemptions by recompute) so far.
    """

    def __init__(self, predictor, model, gpu, tp: int = 1, dtype: str = "fp16", config: EngineConfig | None = None,
                 profile=None):
        from predictor.memory import plan_memory, state_block_counter

        self.config = config or EngineConfig()
        self.config.validate()
        dp = as_parallel(tp).dp_attention
        if self.config.budget_per_dp_rank and dp > 1:  # every attention-DP rank schedules with these budgets
            self.config = replace(self.config, max_num_batched_tokens=self.config.max_num_batched_tokens * dp,
                                  max_num_seqs=self.config.max_num_seqs * dp, budget_per_dp_rank=False)
        if profile is not None and profile.kernel_family:
            predictor = predictor.for_framework(profile.framework)
        self.bound = predictor.bind(model, gpu, tp, dtype)
        self.profile = profile
        if profile is not None:
            self.bound = profile.apply(self.bound)
        self.predictor_name = predictor.name
        spec = self.bound.model
        self.max_model_len = (spec.max_position_embeddings if self.config.max_model_len is None
                              else self.config.max_model_len)
        if self.config.num_blocks is not None:
            self.num_blocks = int(self.config.num_blocks)
            self.memory = None
        else:
            self.memory = plan_memory(spec, self.bound.gpu, tp, self.bound.precision,
                                      gpu_memory_utilization=self.config.gpu_memory_utilization,
                                      max_num_batched_tokens=self.config.max_num_batched_tokens,
                                      max_num_seqs=self.config.max_num_seqs, block_size=self.config.block_size,
                                      state_on_demand=True, kv_memory=self.config.kv_memory)
            self.num_blocks = self.memory.num_blocks
        # blocks of a sequence's per-sequence state (windows, recurrent states), taken at admission; None: no state
        self._state_count = state_block_counter(spec, tp, self.bound.precision, self.config.block_size)
        self.policy = POLICIES[self.config.policy]()
        self.free_blocks = self.num_blocks
        self._budget = None if self.config.kv_budget_tokens is None else int(self.config.kv_budget_tokens)
        self._contiguous = self.config.kv_allocation != "paged"
        self.handoff: list[int] | None = None
        self.accepts_prefilled = False
        self.tokens_held = 0
        self.preemptions_total = 0
        self.now = 0.0
        self._stream = None
        # Contention hook (models sharing a GPU): when set, called as stretch(engine, start_s, dt_ms, flops,
        # hbm_bytes) for every iteration and returns its actual duration (ms); fast-forwarding is off meanwhile.
        self.stretch: Callable[[Simulator, float, float, float, float], float] | None = None
        # Off: runs keep request times only — no efficiency report (SimResult.efficiency is {}), per-request work
        # (MFU, MBU), running statistics or time-between-tokens histogram — for callers that read latencies only
        self.record_work = True

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token on one GPU of this instance (its TP shard, at the KV precision)."""
        return self.bound.model.kv_cache_bytes_per_token(self.bound.precision.kv_bits, self.bound.tp)

    # --- main loop ------------------------------------------------------------------------------
    def _reject_impossible(self, state: _State) -> None:
        total = state.prompt + state.output
        too_long = total > self.max_model_len
        # the KV cache holds at most prompt + output − 1 tokens (the last token is never fed back)
        need = self.reserve_tokens(state.prompt, state.output) if self._contiguous else total - 1
        blocks = -(-self.held(need) // self.config.block_size)
        if self._state_count is not None:
            blocks = blocks + self._state_count(total - 1)
        too_big = blocks > self.num_blocks
        for mask, reason in ((too_long, f"prompt + output exceeds max_model_len {self.max_model_len}"),
                             (too_big & ~too_long, f"needs more than the {self.num_blocks} KV blocks of the GPU")):
            mask = mask & (state.status != REJECTED)
            state.status[mask] = REJECTED
            state.reject_reason[mask] = reason

    def start(self, stats_batch: int | None = None) -> None:
        """Reset this instance's clock, KV cache and statistics (before a run, or a restart in a cluster)."""
        self.free_blocks = self.num_blocks
        self.now = 0.0
        self.tokens_held = 0
        self._reset_running()
        self.stats = RunningStats(stats_batch or self.config.max_num_seqs, self.num_blocks, self.config.block_size)
        self.efficiency = EfficiencyRecorder(self.bound)
        self.work_totals = [0.0, 0.0, 0.0, 0.0]  # Σ over this engine's iterations: duration (ms), FLOPs, bytes, roofline ms

    @property
    def peaks(self) -> tuple[float, float]:
        """(dense peak FLOP/s for the compute dtype, HBM bytes/s) of one GPU of this instance."""
        return self.bound.peak_flops, self.bound.gpu.hbm_bandwidth_bytes_per_s

    def run(self, workload: Workload, *, record_iterations: bool = True,
            progress: Callable[[int, int], None] | None = None, stop: Callable[[], bool] | None = None,
            stream_requests_to=None, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> SimResult:
        """Simulate ``workload`` to completion (or until ``stop()`` returns True, or Ctrl-C).

        Parameters
        ----------
        workload : Workload or scheduler.workload_stream.StreamedWorkload
            A streamed workload runs windowed (:mod:`scheduler.engine_window`): memory flat in the number of
            requests, the result's summary from accumulated statistics and its ``columns`` empty (rows go to
            ``stream_requests_to``).
        record_iterations : bool
            Keep per-iteration records (for traces and plots). Summary statistics (KV utilisation, batch sizes,
            time between tokens) are accumulated either way, so long runs can leave this off.
        stream_requests_to : path, optional
            Write each finished request's row to this Parquet file as the run goes (batches of 65,536 rows;
            written atomically: the file appears, complete, when the run ends — interrupted runs included).
        progress : callable, optional
            Called as ``progress(finished_requests, total)`` every few hundred iterations.
        stop : callable, optional
            Polled after every iteration (or fast-forwarded run of decode steps); returning True ends the
            run early (the result is marked partial).
        slo_ttft_ms, slo_tpot_ms : float, optional
            A windowed run's SLO thresholds (ms): it counts their attainment as requests retire, and its
            summary takes no others. An ordinary run takes thresholds in :meth:`SimResult.summary` instead.
        """
        from scheduler.metrics import RequestStream, SimResult, request_columns

        stream = RequestStream(stream_requests_to) if stream_requests_to is not None else None
        window = None
        if hasattr(workload, "chunks"):
            from scheduler.engine_window import Window
            from scheduler.metrics_stream import RequestTotals

            window = Window(self, workload, RequestTotals(slo_ttft_ms, slo_tpot_ms), stream)
            state = self.begin(window.next_workload(), lean=not self.record_work)
            window.label(state)
            stream = None  # the window writes rows as they retire
        else:
            state = self.begin(workload, lean=not self.record_work)
        self._stream = stream
        log = IterationLog()
        n = len(workload)
        try:
            finished, iterations, partial = self._loop(state, log, n, record_iterations, progress, stop, window)
        except KeyboardInterrupt:
            partial = True  # Ctrl-C: keep what was simulated, marked partial
        if progress is not None:
            ended = int(((state.status == DONE) | (state.status == REJECTED)).sum())
            progress(ended + (window.retired if window is not None else 0), n)
        if self._stream is not None:
            self._stream.close(state, partial)
        if window is not None:
            window.close(state)
        result = SimResult.from_state(state, log, self, workload, partial=partial)
        if window is not None:
            result.columns, result.totals = request_columns(state, np.zeros(0, np.int64)), window.totals
            result.meta["windowed"] = True
        if state.closed is not None:
            result.meta["client_delay_ms"] = state.closed.delay_s * 1e3  # add to TTFT/E2E for times from the send
        return result

    def begin(self, workload: Workload, lean: bool) -> _State:
        """A run's state, with the engine reset and the closed loop's first clients sent (``lean``: a
        latency-only run, see :attr:`record_work`). The state is also ``self.state``, readable by ``stop`` and
        ``progress`` callbacks."""
        state = _State(workload)
        state.lean = lean
        self.state = state
        state.peaks = self.peaks
        self._reject_impossible(state)
        self.start()
        if state.closed is not None:
            if self.profile is not None:
                state.closed.delay_s = self.profile.admission_ms(state.closed.concurrency) / 1e3
            state.closed.release(state, 0.0)
        return state

    def timings(self, workload: Workload):
        """Simulate ``workload`` and return only per-request times (:class:`scheduler.engine_timings.ServeTimings`):
        the values of :meth:`run`, without its result table, statistics and efficiency report (faster)."""
        from scheduler.engine_timings import serve_timings

        return serve_timings(self, workload)

    def _loop(self, state: _State, log: IterationLog, n: int, record_iterations: bool, progress, stop, window=None):
        next_arrival = 0
        end = len(state.arrival)  # the window's end (n, unless a windowed run)
        finished = int((state.status == REJECTED).sum())
        iterations = 0
        partial = False
        while finished < n:
            while next_arrival < end and state.arrival[next_arrival] <= self.now:
                if state.status[next_arrival] == WAITING:
                    state.waiting.append(next_arrival)
                next_arrival += 1
            if next_arrival == end and window is not None and window.more:
                shift, rejected = window.refill(state)  # the window's requests have all arrived: load more
                next_arrival -= shift
                end = len(state.arrival)
                finished += rejected
                continue
            if not state.running and not state.waiting:
                if next_arrival >= end or math.isinf(state.arrival[next_arrival]):
                    break
                self.now = float(state.arrival[next_arrival])
                continue
            arrival_limit = float(state.arrival[next_arrival]) if next_arrival < end else math.inf
            outcome, done, steps = self.advance(state, log, arrival_limit, record_iterations, then_step=True)
            finished += done
            iterations += steps
            if outcome == EVICTED:
                continue
            if outcome == STUCK:
                if next_arrival < end and not math.isinf(state.arrival[next_arrival]):
                    self.now = max(self.now, float(state.arrival[next_arrival]))
                    continue
                # the head of the queue cannot fit even in an empty engine
                finished += self.reject_head(state)
                continue
            if progress is not None and iterations // 500 != (iterations - steps) // 500:  # every 500 iterations
                progress(finished, n)
            if stop is not None and stop():
                partial = True
                break
        return finished, iterations, partial

    def reject_head(self, state: _State) -> int:
        """Reject the request at the head of the queue (it cannot fit even in an empty engine)."""
        r = state.waiting.popleft()
        state.status[r] = REJECTED
        state.reject_reason[r] = "does not fit in the KV cache"
        if state.closed is not None:
            state.closed.complete(state, self.now)
        return 1

    def advance(self, state: _State, log: IterationLog | None, limit: float, record: bool,
                then_step: bool = False) -> tuple[str, int, int]:
        """Run one iteration (or a fast-forwarded run of decode-only iterations) from ``self.now``.

        Parameters
        ----------
        state : _State
            This instance's view (its running list and queue) of the requests.
        log : IterationLog or None
            Per-iteration records go here when ``record``.
        limit : float
            Time (s) of the next event that could change the batch (an arrival): a fast-forwarded run does
            not start an iteration at or after it.
        then_step : bool
            After a fast-forwarded run that ends before ``limit``, go on with the iteration that follows it (what
            the next call would do: the run stops before a request's last step or a full cache, so that call
            could not fast-forward). Only for a caller that, like :meth:`_loop`, would make that next call at
            once: one engine alone, whose arrivals are all known (not a cluster, whose other instances' events
            interleave).

        Returns
        -------
        (outcome, finished, steps)
            ``outcome`` is ``"advanced"`` (``steps`` iterations ran, ``finished`` requests completed),
            ``"evicted"`` (nothing could run; the latest-arrived running request was preempted to free
            memory) or ``"stuck"`` (nothing runs and nothing can be admitted: the caller moves time to the
            next event or rejects the head of the queue); ``steps`` also counts the iterations of a run
            fast-forwarded before the outcome (``then_step``).
        """
        ran = 0
        if self.config.fast_forward and self.stretch is None and state.running and not state.partial:
            ran = self._fast_forward(state, log, limit, record)
            if ran and not (then_step and self.now < limit):
                return ADVANCED, 0, ran
        decodes, prefills = self.policy.schedule(self, state)
        if not len(decodes) and not prefills:
            if state.running:
                self._evict_latest(state)  # nothing can move: free memory for the oldest work
                return EVICTED, 0, ran
            return STUCK, 0, ran
        return ADVANCED, self._iterate(state, log, record, decodes, prefills), ran + 1
