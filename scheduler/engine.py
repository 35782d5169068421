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
  ceil(KV tokens / block_size) blocks.
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
reservation) is accumulated in :class:`RunningStats` for every run.

Multi-instance hooks (used by :mod:`scheduler.techniques.cluster`; inert in a plain :meth:`Simulator.run`):
requests may arrive *prefilled* (their prompt's KV cache computed elsewhere, the first token already
generated: a disaggregated decode instance admits them straight into decoding), and an instance may hand
every request off when its prefill completes (a disaggregated prefill instance; :attr:`Simulator.handoff`).
:meth:`Simulator.start` and :meth:`Simulator.advance` step one instance an iteration at a time so that
several instances can be co-simulated in time order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from predictor.errors import InputError
from scheduler.efficiency import EfficiencyRecorder
from scheduler.workload import Workload

if TYPE_CHECKING:
    from scheduler.metrics import SimResult

WAITING, RUNNING, DONE, REJECTED = 0, 1, 2, 3
KV_ALLOCATIONS = ("paged", "contiguous", "contiguous_pow2", "contiguous_oracle")
# Outcomes of Simulator.advance
ADVANCED, EVICTED, STUCK = "advanced", "evicted", "stuck"
# Time-between-tokens histogram: log-spaced bin edges from 1 µs to 10,000 s (percentiles within 0.5%).
ITL_EDGES_S = np.geomspace(1e-6, 1e4, 4001)


@dataclass(frozen=True)
class EngineConfig:
    """vLLM-like engine knobs (printed in full with every result).

    Attributes
    ----------
    max_num_seqs : int
        Most requests running at once.
    max_num_batched_tokens : int
        Token budget of one iteration (prefill tokens + one per decode).
    block_size : int
        Tokens per KV block.
    gpu_memory_utilization : float
        Fraction of GPU memory the engine may use (weights, workspace and KV cache).
    chunked_prefill : bool
        Split prefills into chunks that share iterations with decodes.
    policy : str
        ``continuous`` or ``static`` (see :data:`POLICIES`).
    num_blocks : int, optional
        Override the KV-cache size in blocks (else from the memory model).
    max_model_len : int, optional
        Context limit per request (default: the model's ``max_position_embeddings``).
    fast_forward : bool
        Compute stretches of decode-only iterations whose batch cannot change in one vectorised step
        (same results as iterating, much faster; off only to check that equivalence).
    kv_allocation : str
        ``paged`` (default), ``contiguous`` (reserve ``max_model_len`` slots per request at admission),
        ``contiguous_pow2`` (prompt + output rounded up to a power of two) or ``contiguous_oracle``
        (prompt + output − 1: the exact need). See the module docstring.
    kv_budget_tokens : int, optional
        Most tokens of KV cache a sequence keeps (memory and attention reads capped; accuracy out of
        scope). None (default): no cap.
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    chunked_prefill: bool = True
    policy: str = "continuous"
    num_blocks: int | None = None
    max_model_len: int | None = None
    fast_forward: bool = True
    kv_allocation: str = "paged"
    kv_budget_tokens: int | None = None

    def validate(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')}: must be a positive integer, got {value!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InputError(f"--gpu-memory-utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.policy not in POLICIES:
            raise InputError(f"--policy: unknown value {self.policy!r}; allowed: {', '.join(POLICIES)}")
        if self.num_blocks is not None and (isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int)
                                            or self.num_blocks < 1):
            raise InputError(f"num_blocks: must be a positive integer, got {self.num_blocks!r}")
        if self.max_model_len is not None and (isinstance(self.max_model_len, bool)
                                               or not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise InputError(f"max_model_len: must be a positive integer, got {self.max_model_len!r}")
        if self.kv_allocation not in KV_ALLOCATIONS:
            raise InputError(f"--kv-allocation: unknown value {self.kv_allocation!r}; allowed: {', '.join(KV_ALLOCATIONS)}")
        if self.kv_budget_tokens is not None and (isinstance(self.kv_budget_tokens, bool)
                                                  or not isinstance(self.kv_budget_tokens, int | np.integer)
                                                  or self.kv_budget_tokens < 1):
            raise InputError(f"--kv-budget-tokens: must be a positive integer, got {self.kv_budget_tokens!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IterationLog:
    """Per-iteration records (parallel lists; converted to arrays by :class:`SimResult`)."""

    start_s: list = field(default_factory=list)
    duration_s: list = field(default_factory=list)
    decode_seqs: list = field(default_factory=list)
    prefill_seqs: list = field(default_factory=list)
    prefill_tokens: list = field(default_factory=list)
    kv_blocks_used: list = field(default_factory=list)
    running: list = field(default_factory=list)


class RunningStats:
    """Summary statistics accumulated over iterations (no per-iteration storage needed).

    Time-weighted KV-cache blocks in use (mean and max), time-weighted KV tokens actually held (for the
    KV waste: reserved slots that hold no token), the tokens held at the peak of reservation, and a
    histogram of batch sizes (sequences per iteration, counted once per iteration). Blocks and tokens are
    sampled at the end of each iteration.
    """

    def __init__(self, max_batch: int, num_blocks: int, block_size: int = 16):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.time_s = 0.0
        self.kv_block_seconds = 0.0
        self.kv_token_seconds = 0.0
        self.kv_max = 0
        self.kv_tokens_at_max = 0
        self.batch_counts = np.zeros(max_batch + 2, np.int64)

    def add(self, duration_s: float, batch: int, kv_used: int, tokens_held: int = 0) -> None:
        self.time_s += duration_s
        self.kv_block_seconds += duration_s * kv_used
        self.kv_token_seconds += duration_s * tokens_held
        if kv_used > self.kv_max:
            self.kv_max = int(kv_used)
            self.kv_tokens_at_max = int(tokens_held)
        self.batch_counts[min(batch, len(self.batch_counts) - 1)] += 1

    def add_many(self, durations_s: np.ndarray, batch: int, kv_used: np.ndarray, tokens_held: np.ndarray | None = None) -> None:
        tokens_held = np.zeros(len(durations_s)) if tokens_held is None else tokens_held
        self.time_s += float(durations_s.sum())
        self.kv_block_seconds += float((durations_s * kv_used).sum())
        self.kv_token_seconds += float((durations_s * tokens_held).sum())
        i = int(np.argmax(kv_used))
        if kv_used[i] > self.kv_max:
            self.kv_max = int(kv_used[i])
            self.kv_tokens_at_max = int(tokens_held[i])
        self.batch_counts[min(batch, len(self.batch_counts) - 1)] += len(durations_s)

    def kv_waste(self) -> dict:
        """Fraction of reserved KV token slots that hold no token: time-weighted mean and at peak reservation."""
        slots_s = self.kv_block_seconds * self.block_size
        peak_slots = self.kv_max * self.block_size
        return {"mean": 1.0 - self.kv_token_seconds / slots_s if slots_s > 0 else 0.0,
                "at_peak": 1.0 - self.kv_tokens_at_max / peak_slots if peak_slots > 0 else 0.0}


class _State:
    """Per-request arrays plus the running list and waiting queue."""

    def __init__(self, workload: Workload):
        n = len(workload)
        self.arrival = workload.arrival_s.astype(float)
        self.prompt = workload.prompt_tokens.astype(np.int64)
        self.output = workload.output_tokens.astype(np.int64)
        self.kv = np.zeros(n, np.int64)          # tokens in the KV cache (logical: before any budget cap)
        self.target = self.prompt.copy()         # tokens the current prefill must reach
        self.generated = np.zeros(n, np.int64)
        self.blocks = np.zeros(n, np.int64)
        self.status = np.zeros(n, np.int8)
        self.first_scheduled = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int64)
        self.last_token = np.full(n, np.nan)      # time of the latest token, for time-between-tokens
        self.itl_counts = np.zeros(len(ITL_EDGES_S) + 1, np.int64)
        self.reject_reason = np.zeros(n, dtype=object)
        self.prefilled = np.zeros(n, dtype=bool)  # prompt KV computed elsewhere (disaggregated decode)
        # Σ over the iterations run while each request was in a batch: duration (ms), FLOPs, HBM bytes,
        # roofline time (ms); work_mark holds the engine's running totals when it joined (see Simulator.join)
        self.work = np.zeros((n, 4))
        self.work_mark = np.zeros((n, 4))
        self.peaks: tuple[float, float] | None = None  # (peak FLOP/s, HBM bytes/s) of the GPU, for per-request MFU/MBU
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.partial: dict[int, None] = {}  # running requests with prefill left, in admission order
        self.closed = ClosedLoop(workload.concurrency) if workload.concurrency else None
        if self.closed is not None:
            self.arrival[:] = math.inf  # unsent; ClosedLoop.release stamps each send time

    def view(self) -> _State:
        """A state sharing every per-request array but with its own running list and queues (one per instance)."""
        out = object.__new__(_State)
        out.__dict__.update(self.__dict__)
        out.running, out.waiting, out.partial = [], deque(), {}
        return out


class ClosedLoop:
    """Closed-loop clients (see :class:`scheduler.workload.Workload`): ``concurrency`` requests outstanding.

    Requests are sent in index order; a request counts as outstanding from its send until it finishes or is
    rejected, and a client sends its next request at the moment its previous one completes.
    """

    def __init__(self, concurrency: int, delay_s: float = 0.0):
        self.concurrency = int(concurrency)
        self.delay_s = float(delay_s)  # send → engine queue (API server, tokenisation); TTFT still counts from the send
        self.sent = 0   # requests sent so far (ids 0..sent-1)
        self.ended = 0  # sent requests that finished or were rejected

    def release(self, state: _State, now: float) -> None:
        """Send requests while fewer than ``concurrency`` are outstanding (rejected ones complete at once)."""
        n = len(state.arrival)
        while self.sent < n and self.sent - self.ended < self.concurrency:
            r = self.sent
            state.arrival[r] = now + self.delay_s
            self.sent += 1
            if state.status[r] == REJECTED:
                self.ended += 1

    def complete(self, state: _State, now: float) -> None:
        """One outstanding request ended at ``now``: its client sends the next one."""
        self.ended += 1
        self.release(state, now)


class Policy:
    """Decides the batch of one iteration. Subclasses implement :meth:`schedule`."""

    name = "policy"

    def schedule(self, engine: Simulator, state: _State) -> tuple[list[int], list[tuple[int, int]]]:
        """Return (decoding request ids, [(prefilling request id, chunk tokens)])."""
        raise NotImplementedError


class ContinuousBatching(Policy):
    """Iteration-level batching (vLLM): requests join and leave the batch every iteration."""

    name = "continuous"

    def schedule(self, engine, state):
        cfg = engine.config
        if engine.accepts_prefilled:
            engine.admit_prefilled(state)
        decodes = engine.ensure_decode_blocks(state)
        if not cfg.chunked_prefill:
            prefills = engine.admit(state, budget=cfg.max_num_batched_tokens, whole=True)
            if prefills:
                return [], prefills  # v0: a prefill iteration pauses the decodes
            return decodes, []
        budget = cfg.max_num_batched_tokens - len(decodes)
        prefills = engine.continue_prefills(state, budget)
        budget -= sum(c for _, c in prefills)
        prefills += engine.admit(state, budget=budget, whole=False)
        return decodes, prefills


class StaticBatching(Policy):
    """Request-level batching: a new batch only when the engine is empty; KV reserved for full length."""

    name = "static"

    def schedule(self, engine, state):
        if not state.running:
            return [], engine.admit(state, budget=engine.config.max_num_batched_tokens, whole=False, reserve_full=True)
        prefills = engine.continue_prefills(state, engine.config.max_num_batched_tokens)
        if prefills:
            return [], prefills
        return engine.ensure_decode_blocks(state), []


POLICIES: dict[str, type[Policy]] = {"continuous": ContinuousBatching, "static": StaticBatching}


class Simulator:
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
        instead of the predictor's own overhead model.

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
        from predictor.memory import plan_memory

        self.config = config or EngineConfig()
        self.config.validate()
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
                                      max_num_seqs=self.config.max_num_seqs, block_size=self.config.block_size)
            self.num_blocks = self.memory.num_blocks
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

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token on one GPU of this instance (its TP shard, at the KV precision)."""
        return self.bound.model.kv_cache_bytes_per_token(self.bound.precision.kv_bits, self.bound.tp)

    # --- block and queue helpers used by policies ---------------------------------------------------
    def _blocks_for(self, tokens) -> int:
        return -(-int(tokens) // self.config.block_size)

    def held(self, tokens):
        """KV tokens actually kept for a sequence at ``tokens`` logical tokens (the budget cap; vectorised)."""
        if self._budget is None:
            return tokens
        return np.minimum(tokens, self._budget) if isinstance(tokens, np.ndarray) else min(int(tokens), self._budget)

    def reserve_tokens(self, prompt, output):
        """Token slots a contiguous allocation reserves for a request at admission (vectorised)."""
        kind = self.config.kv_allocation
        if kind == "contiguous":
            return np.full_like(prompt, self.max_model_len) if isinstance(prompt, np.ndarray) else self.max_model_len
        if kind == "contiguous_pow2":
            out = np.asarray(output, np.int64)
            pow2 = np.left_shift(1, np.ceil(np.log2(np.maximum(out, 1))).astype(np.int64))
            value = np.minimum(np.asarray(prompt, np.int64) + pow2 - 1, self.max_model_len)
            return value if isinstance(prompt, np.ndarray) else int(value)
        return prompt + output - 1  # contiguous_oracle (and the static policy's full reservation)

    def _admission_blocks(self, state: _State, r: int, tokens: int) -> int:
        """Blocks a waiting request must get to be admitted with ``tokens`` tokens in its cache."""
        if self._contiguous:
            return self._blocks_for(self.held(self.reserve_tokens(int(state.prompt[r]), int(state.output[r]))))
        return self._blocks_for(self.held(tokens))

    def _evict_latest(self, state: _State) -> int:
        victim = max(state.running, key=lambda r: (state.arrival[r], r))
        self._leave(state, victim)
        self.free_blocks += int(state.blocks[victim])
        self.tokens_held -= self.held(int(state.kv[victim]))
        self.preemptions_total += 1
        state.blocks[victim] = 0
        state.kv[victim] = 0
        # recompute: the prompt and every generated token (the last one is not in the KV cache yet)
        state.target[victim] = state.prompt[victim] + state.generated[victim]
        state.status[victim] = WAITING
        state.preemptions[victim] += 1
        state.prefilled[victim] = False
        state.waiting.appendleft(victim)
        state.partial.pop(victim, None)
        return victim

    def ensure_decode_blocks(self, state: _State) -> list[int]:
        """Running requests past prefill, each with a block for its next token (evicting if needed)."""
        bs = self.config.block_size
        while True:
            if not state.running:
                return []
            run = np.fromiter(state.running, np.int64, len(state.running))
            decoding = run[state.kv[run] >= state.target[run]]
            if decoding.size == 0:
                return []
            if self._budget is None:
                needs = state.kv[decoding] >= state.blocks[decoding] * bs  # the next token starts a new block
            else:
                needs = np.minimum(state.kv[decoding] + 1, self._budget) > state.blocks[decoding] * bs
            need = int(needs.sum())
            if need <= self.free_blocks:
                state.blocks[decoding[needs]] += 1
                self.free_blocks -= need
                return decoding.tolist()
            self._evict_latest(state)

    def continue_prefills(self, state: _State, budget: int) -> list[tuple[int, int]]:
        """Chunks for running requests whose prefill is unfinished, in admission order."""
        out = []
        for r in state.partial:
            if budget <= 0:
                break
            remaining = int(state.target[r] - state.kv[r])
            chunk = self._fit_chunk(state, r, min(remaining, budget))
            if chunk > 0:
                out.append((r, chunk))
                budget -= chunk
        return out

    def _fit_chunk(self, state: _State, r: int, chunk: int) -> int:
        """Largest chunk ≤ ``chunk`` whose KV blocks can be allocated now; allocates them."""
        bs = self.config.block_size
        have = int(state.blocks[r])
        need = max(self._blocks_for(self.held(int(state.kv[r]) + chunk)) - have, 0)
        if need > self.free_blocks:
            chunk = (have + self.free_blocks) * bs - int(state.kv[r])
            need = self.free_blocks
        if chunk <= 0:
            return 0
        state.blocks[r] += need
        self.free_blocks -= need
        return chunk

    def admit(self, state: _State, budget: int, whole: bool, reserve_full: bool = False) -> list[tuple[int, int]]:
        """Admit waiting requests FCFS; return their first prefill chunks.

        ``whole``: a prompt is admitted only if it fits the budget in full (the first one of an iteration
        may exceed it). ``reserve_full``: reserve blocks for prompt + output at admission and admit every request
        that fits, whatever the token budget (static batching; their prefills continue in later iterations).
        """
        cfg = self.config
        out = []
        while state.waiting and len(state.running) < cfg.max_num_seqs:
            r = state.waiting[0]
            if state.prefilled[r]:
                break  # a prefilled request waits for admit_prefilled (FCFS: nothing overtakes it)
            target = int(state.target[r])
            if reserve_full:  # static batching: the whole batch joins at once, prefills may span iterations
                total = (self.reserve_tokens(int(state.prompt[r]), int(state.output[r])) if self._contiguous
                         else state.prompt[r] + state.output[r] - 1)  # the most it will ever hold
                need = self._blocks_for(self.held(total))
                if need > self.free_blocks:
                    break
                chunk = min(target, max(budget, 0))
            else:
                if budget <= 0 or (whole and target > budget and out):
                    break
                chunk = target if whole else min(target, budget)
                need = self._admission_blocks(state, r, chunk)
                if need > self.free_blocks:
                    if (not whole and self.free_blocks > 0 and not state.running and not out
                            and not self._contiguous):
                        need = self.free_blocks  # an idle engine takes what fits; the rest comes in later chunks
                        chunk = need * cfg.block_size
                    else:
                        break
            state.waiting.popleft()
            self.join(state, r)
            state.status[r] = RUNNING
            state.blocks[r] += need
            self.free_blocks -= need
            if math.isnan(state.first_scheduled[r]):
                state.first_scheduled[r] = self.now
            if chunk < target:
                state.partial[r] = None
            if chunk > 0:
                out.append((r, chunk))
                budget -= chunk
        return out

    def _prefilled_blocks(self, state: _State, r: int) -> int:
        """Blocks a prefilled request needs at admission: its prompt's KV plus the slot of its next token."""
        return self._admission_blocks(state, r, int(state.kv[r]) + 1)

    def admit_prefilled(self, state: _State) -> int:
        """Admit prefilled requests at the head of the queue straight into decoding (no prefill compute).

        Their prompt KV arrives with them (computed by a prefill instance); they join this iteration's decodes.
        Returns how many were admitted.
        """
        admitted = 0
        while state.waiting and len(state.running) < self.config.max_num_seqs:
            r = state.waiting[0]
            if not state.prefilled[r]:
                break
            need = self._prefilled_blocks(state, r)
            if need > self.free_blocks:
                break
            state.waiting.popleft()
            self.join(state, r)
            state.status[r] = RUNNING
            state.blocks[r] = need
            self.free_blocks -= need
            self.tokens_held += self.held(int(state.kv[r]))
            if math.isnan(state.first_scheduled[r]):
                state.first_scheduled[r] = self.now
            admitted += 1
        return admitted

    def memory_blocked(self, state: _State) -> bool:
        """True when the head of the queue waits for KV blocks (not for a sequence slot or token budget)."""
        if not state.waiting:
            return False
        head = state.waiting[0]
        if state.prefilled[head]:
            return self._prefilled_blocks(state, head) > self.free_blocks
        cfg = self.config
        chunk = int(state.target[head]) if not cfg.chunked_prefill else min(int(state.target[head]),
                                                                            cfg.max_num_batched_tokens)
        return self._admission_blocks(state, head, chunk) > self.free_blocks

    # --- main loop ------------------------------------------------------------------------------
    def _reject_impossible(self, state: _State) -> None:
        total = state.prompt + state.output
        too_long = total > self.max_model_len
        # the KV cache holds at most prompt + output − 1 tokens (the last token is never fed back)
        need = self.reserve_tokens(state.prompt, state.output) if self._contiguous else total - 1
        too_big = -(-self.held(need) // self.config.block_size) > self.num_blocks
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
        self.stats = RunningStats(stats_batch or self.config.max_num_seqs, self.num_blocks, self.config.block_size)
        self.efficiency = EfficiencyRecorder(self.bound)
        self.work_totals = [0.0, 0.0, 0.0, 0.0]  # Σ over this engine's iterations: duration (ms), FLOPs, bytes, roofline ms

    def join(self, state: _State, r: int) -> None:
        """Request ``r`` enters this engine's running batch (its work is counted from here)."""
        state.running.append(r)
        state.work_mark[r] = self.work_totals

    def _leave(self, state: _State, r: int) -> None:
        """Request ``r`` leaves the running batch: add the work of the iterations it was part of."""
        state.running.remove(r)
        state.work[r] += np.subtract(self.work_totals, state.work_mark[r])

    @property
    def peaks(self) -> tuple[float, float]:
        """(dense peak FLOP/s for the compute dtype, HBM bytes/s) of one GPU of this instance."""
        return self.bound.peak_flops, self.bound.gpu.hbm_bandwidth_bytes_per_s

    def run(self, workload: Workload, *, record_iterations: bool = True,
            progress: Callable[[int, int], None] | None = None, stop: Callable[[], bool] | None = None,
            stream_requests_to=None) -> SimResult:
        """Simulate ``workload`` to completion (or until ``stop()`` returns True, or Ctrl-C).

        Parameters
        ----------
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
        """
        from scheduler.metrics import RequestStream, SimResult

        state = _State(workload)
        self.state = state  # the run's per-request arrays, readable by ``stop`` and ``progress`` callbacks
        state.peaks = self.peaks
        self._reject_impossible(state)
        self.start()
        if state.closed is not None:
            if self.profile is not None:
                state.closed.delay_s = self.profile.admission_ms(state.closed.concurrency) / 1e3
            state.closed.release(state, 0.0)
        self._stream = RequestStream(stream_requests_to) if stream_requests_to is not None else None
        log = IterationLog()
        n = len(workload)
        try:
            finished, iterations, partial = self._loop(state, log, n, record_iterations, progress, stop)
        except KeyboardInterrupt:
            partial = True  # Ctrl-C: keep what was simulated, marked partial
        if progress is not None:
            progress(int(((state.status == DONE) | (state.status == REJECTED)).sum()), n)
        if self._stream is not None:
            self._stream.close(state, partial)
        result = SimResult.from_state(state, log, self, workload, partial=partial)
        if state.closed is not None:
            result.meta["client_delay_ms"] = state.closed.delay_s * 1e3  # add to TTFT/E2E for times from the send
        return result

    def _loop(self, state: _State, log: IterationLog, n: int, record_iterations: bool, progress, stop):
        next_arrival = 0
        finished = int((state.status == REJECTED).sum())
        iterations = 0
        partial = False
        while finished < n:
            while next_arrival < n and state.arrival[next_arrival] <= self.now:
                if state.status[next_arrival] == WAITING:
                    state.waiting.append(next_arrival)
                next_arrival += 1
            if not state.running and not state.waiting:
                if next_arrival >= n or math.isinf(state.arrival[next_arrival]):
                    break
                self.now = float(state.arrival[next_arrival])
                continue
            arrival_limit = float(state.arrival[next_arrival]) if next_arrival < n else math.inf
            outcome, done, steps = self.advance(state, log, arrival_limit, record_iterations)
            finished += done
            if outcome == EVICTED:
                continue
            if outcome == STUCK:
                if next_arrival < n and not math.isinf(state.arrival[next_arrival]):
                    self.now = max(self.now, float(state.arrival[next_arrival]))
                    continue
                # the head of the queue cannot fit even in an empty engine
                finished += self.reject_head(state)
                continue
            iterations += steps
            if steps == 1 and progress is not None and iterations % 500 == 0:
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

    def advance(self, state: _State, log: IterationLog | None, limit: float, record: bool) -> tuple[str, int, int]:
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

        Returns
        -------
        (outcome, finished, steps)
            ``outcome`` is ``"advanced"`` (``steps`` iterations ran, ``finished`` requests completed),
            ``"evicted"`` (nothing could run; the latest-arrived running request was preempted to free
            memory) or ``"stuck"`` (nothing runs and nothing can be admitted: the caller moves time to the
            next event or rejects the head of the queue).
        """
        if self.config.fast_forward and self.stretch is None and state.running and not state.partial:
            steps = self._fast_forward(state, log, limit, record)
            if steps:
                return ADVANCED, 0, steps
        decodes, prefills = self.policy.schedule(self, state)
        if not decodes and not prefills:
            if state.running:
                self._evict_latest(state)  # nothing can move: free memory for the oldest work
                return EVICTED, 0, 0
            return STUCK, 0, 0
        return ADVANCED, self._iterate(state, log, record, decodes, prefills), 1

    def _iterate(self, state: _State, log: IterationLog | None, record: bool, decodes, prefills) -> int:
        """Time and apply one scheduled iteration; return how many requests finished."""
        finished = 0
        budget = self._budget
        dec = np.asarray(decodes, np.int64)
        p_ids = [r for r, _ in prefills]
        p_chunks = [c for _, c in prefills]
        p_kv = [int(state.kv[r]) for r in p_ids]
        p_ctx = p_kv if budget is None else [min(k, budget) for k in p_kv]
        completes = [k + c >= int(state.target[r]) for k, (r, c) in zip(p_kv, prefills, strict=True)]
        if dec.size:
            dec_kv = state.kv[dec] if budget is None else np.minimum(state.kv[dec], budget)
            dec_ctx = int(dec_kv.sum())
        else:
            dec_ctx = 0
        p_new = sum(p_chunks)
        p_keys = p_new + sum(p_ctx)
        samples = sum(completes)
        dt_ms = self.bound.iteration_ms(len(prefills), p_new, p_keys, samples, len(dec), dec_ctx)
        flops, nbytes, roof_ms = self.bound.work_scalar(len(prefills), p_new, p_keys, samples, len(dec), dec_ctx)
        start = self.now
        if self.stretch is not None:
            dt_ms = self.stretch(self, start, dt_ms, flops, nbytes)
        self.efficiency.add(len(prefills), p_new, p_keys, samples, len(dec), dec_ctx, dt_ms)
        totals = self.work_totals
        totals[0] += dt_ms
        totals[1] += flops
        totals[2] += nbytes
        totals[3] += roof_ms
        self.now += dt_ms / 1e3
        if record:
            log.start_s.append(start)
            log.duration_s.append(dt_ms / 1e3)
            log.decode_seqs.append(len(dec))
            log.prefill_seqs.append(len(prefills))
            log.prefill_tokens.append(sum(p_chunks))
            log.kv_blocks_used.append(self.num_blocks - self.free_blocks)
            log.running.append(len(state.running))
        # decode updates (vectorised)
        if dec.size:
            gaps = self.now - state.last_token[dec]
            state.itl_counts += np.bincount(np.searchsorted(ITL_EDGES_S, gaps[gaps == gaps]),
                                            minlength=len(state.itl_counts))
            state.last_token[dec] = self.now
            self.tokens_held += len(dec) if budget is None else int((dec_kv < budget).sum())
            state.kv[dec] += 1
            state.generated[dec] += 1
            done = dec[state.generated[dec] >= state.output[dec]]
            for r in done.tolist():
                finished += self._finish(state, r)
        self.tokens_held += (sum(p_chunks) if budget is None
                             else sum(min(k + c, budget) for k, c in zip(p_kv, p_chunks, strict=True)) - sum(p_ctx))
        for r, chunk, complete in zip(p_ids, p_chunks, completes, strict=True):
            state.kv[r] += chunk
            if not complete:
                state.partial[r] = None
            else:
                state.partial.pop(r, None)
                if state.generated[r] > 0:  # a recompute after preemption: its stall is a token gap too
                    state.itl_counts[np.searchsorted(ITL_EDGES_S, self.now - state.last_token[r])] += 1
                state.generated[r] += 1
                if math.isnan(state.first_token[r]):
                    state.first_token[r] = self.now
                state.last_token[r] = self.now
                if state.generated[r] >= state.output[r]:
                    finished += self._finish(state, r)
                elif self.handoff is not None:
                    self._handoff(state, r)
        self.stats.add(dt_ms / 1e3, len(dec) + len(prefills), self.num_blocks - self.free_blocks, self.tokens_held)
        return finished

    def _admission_blocked(self, state: _State) -> bool:
        """True when no waiting request can join while only decodes run (so the batch cannot change)."""
        cfg = self.config
        if not state.waiting or self.config.policy == "static":
            return True
        if len(state.running) >= cfg.max_num_seqs:
            return True
        head = state.waiting[0]
        if state.prefilled[head]:
            return self._prefilled_blocks(state, head) > self.free_blocks
        if cfg.chunked_prefill:
            budget = cfg.max_num_batched_tokens - len(state.running)
            if budget <= 0:
                return True
            chunk = min(int(state.target[head]), budget)
        else:
            chunk = int(state.target[head])
        # free blocks only shrink while decoding
        return self._admission_blocks(state, head, chunk) > self.free_blocks

    def _fast_forward(self, state: _State, log: IterationLog | None, arrival_limit: float, record: bool) -> int:
        """Apply a run of decode-only iterations at once; return how many (0 when the batch may change).

        The run stops one step before the first request finishes, before the step whose new KV blocks would
        not fit, and before an iteration that would start at or after the next arrival; the regular loop
        then takes over, so every iteration is timed and accounted exactly as when stepping one by one.
        """
        if not self._admission_blocked(state):
            return 0
        run = np.fromiter(state.running, np.int64, len(state.running))
        left = state.output[run] - state.generated[run]
        steps = int(left.min()) - 1  # the step that finishes a request goes through the regular loop
        if steps < 2:
            return 0
        bs = self.config.block_size
        budget = self._budget
        kv, blocks = state.kv[run], state.blocks[run]
        first_new = blocks * bs - kv  # first step (0-based) that needs a new block, per sequence
        need = np.zeros(steps + 1, np.int64)
        # last step (0-based) that may need a block: the run's end, or the step that reaches the budget
        last = np.full(len(run), steps - 1, np.int64) if budget is None else np.minimum(steps - 1, budget - 1 - kv)
        room = first_new <= last
        starts = first_new[room]
        if starts.size:
            counts = (last[room] - starts) // bs + 1
            positions = np.repeat(starts, counts) + bs * (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            need = np.bincount(positions, minlength=steps + 1)[: steps + 1]
        cumulative = np.cumsum(need)[:steps]
        over = np.flatnonzero(cumulative > self.free_blocks)
        if over.size:
            steps = int(over[0])
        if steps < 2:
            return 0
        b = len(run)
        if budget is None:
            durations = self.bound.decode_steps_ms(b, int(kv.sum()), steps) / 1e3
            contexts = int(kv.sum()) + b * np.arange(steps + 1)
            held_gain = b * np.arange(1, steps + 1)
        else:
            contexts = _capped_context_sums(kv, budget, steps + 1)  # Σ min(kv + j, budget), j = 0..steps
            durations = self._decode_steps_ms(b, contexts[:steps]) / 1e3
            held_gain = contexts[1:] - contexts[0]
        starts_s = self.now + np.concatenate([[0.0], np.cumsum(durations[:-1])])
        late = np.flatnonzero(starts_s >= arrival_limit)
        if late.size:
            steps = int(late[0])
            if steps < 2:
                return 0
            durations, starts_s, held_gain = durations[:steps], starts_s[:steps], held_gain[:steps]
        contexts = contexts[:steps]
        self.efficiency.add_decode_steps(b, contexts, durations * 1e3)
        flops, nbytes, roof_ms = self.bound.decode_steps_work(b, contexts)
        totals = self.work_totals
        totals[0] += float(durations.sum()) * 1e3
        totals[1] += float(flops.sum())
        totals[2] += float(nbytes.sum())
        totals[3] += float(roof_ms.sum())
        new_blocks = int(cumulative[steps - 1])
        if budget is None:
            state.blocks[run] = np.maximum(blocks, -(-(kv + steps) // bs))
        else:
            state.blocks[run] = np.maximum(blocks, -(-np.minimum(kv + steps, budget) // bs))
        self.free_blocks -= new_blocks
        if record:
            used_before = self.num_blocks - self.free_blocks - new_blocks
            log.start_s.extend(starts_s.tolist())
            log.duration_s.extend(durations.tolist())
            log.decode_seqs.extend([len(run)] * steps)
            log.prefill_seqs.extend([0] * steps)
            log.prefill_tokens.extend([0] * steps)
            log.kv_blocks_used.extend((used_before + cumulative[:steps]).tolist())
            log.running.extend([len(run)] * steps)
        self.stats.add_many(durations, len(run), self.num_blocks - self.free_blocks - new_blocks + cumulative[:steps],
                            self.tokens_held + held_gain)
        self.tokens_held += int(held_gain[-1])
        ends = starts_s + durations
        first_gaps = ends[0] - state.last_token[run]
        gaps = np.concatenate([first_gaps[first_gaps == first_gaps], np.repeat(durations[1:], len(run))])
        state.itl_counts += np.bincount(np.searchsorted(ITL_EDGES_S, gaps), minlength=len(state.itl_counts))
        self.now = float(ends[-1])
        state.last_token[run] = self.now
        state.kv[run] += steps
        state.generated[run] += steps
        return steps

    def _decode_steps_ms(self, decode_seqs: int, contexts: np.ndarray) -> np.ndarray:
        """Times (ms) of consecutive decode-only iterations whose summed attended contexts are ``contexts``
        (the budget-capped twin of :meth:`BoundPredictor.decode_steps_ms`: same table cells as
        :meth:`BoundPredictor.iteration_ms` called once per step)."""
        b = float(decode_seqs)
        t = self.bound.table
        kv = (contexts + b) / b
        fixed = self.bound.iteration_ms(0, 0, 0, 0, decode_seqs, int(contexts[0])) - t.decode_ms_scalar(b, float(kv[0]))
        return fixed + t.decode_ms(np.full(len(contexts), b), kv)

    def _finish(self, state: _State, r: int) -> int:
        state.status[r] = DONE
        state.finish[r] = self.now
        self._leave(state, r)
        if self._stream is not None:
            self._stream.add(state, r)
        self.free_blocks += int(state.blocks[r])
        self.tokens_held -= self.held(int(state.kv[r]))
        state.blocks[r] = 0
        if state.closed is not None:
            state.closed.complete(state, self.now)
        return 1

    def _handoff(self, state: _State, r: int) -> None:
        """A disaggregated prefill instance: the request leaves with its prompt KV (see :attr:`handoff`)."""
        self._leave(state, r)
        self.free_blocks += int(state.blocks[r])
        self.tokens_held -= self.held(int(state.kv[r]))
        state.blocks[r] = 0
        state.status[r] = WAITING
        state.prefilled[r] = True
        self.handoff.append(r)

    def release(self, state: _State, r: int) -> None:
        """Take running request ``r`` off this instance with its KV intact (a migration source); frees its blocks."""
        self._leave(state, r)
        state.partial.pop(r, None)
        self.free_blocks += int(state.blocks[r])
        self.tokens_held -= self.held(int(state.kv[r]))
        state.blocks[r] = 0


def _capped_context_sums(kv: np.ndarray, budget: int, n: int) -> np.ndarray:
    """Σ_i min(kv_i + j, budget) for j = 0..n−1 (KV tokens attended per step under a budget), O((len + n) log len).

    min(kv_i + j, B) = kv_i + j − max(j − d_i, 0) with d_i = B − kv_i; the sum of the max terms over the
    sequences with d_i < j is c·j − Σ d_i (c of them), read off the sorted d_i.
    """
    j = np.arange(n, dtype=np.int64)
    d = np.sort(budget - kv.astype(np.int64))
    prefix = np.concatenate([[0], np.cumsum(d)])
    c = np.searchsorted(d, j, side="left")
    return int(kv.sum()) + len(kv) * j - (c * j - prefix[c])
