"""Engine configuration, per-request state and run statistics of the serving-engine simulator.

See :mod:`scheduler.engine` for the engine model. Everything here is plain data: the knobs
(:class:`EngineConfig`, printed with every result), the per-request arrays of a run (:class:`_State`), the
per-iteration log and the running statistics accumulated without per-iteration storage, and the closed-loop
clients. Times are seconds unless a name says otherwise.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from predictor.errors import InputError

if TYPE_CHECKING:
    from scheduler.workload import Workload

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
    gpu_memory_utilization : float, optional
        Fraction of GPU memory the engine may use (weights, workspace and KV cache), or, as ``kv_memory`` says,
        of the memory free once the model is loaded (``free``) or for weights and KV cache (``static``). None:
        the framework's default (:func:`predictor.memory.plan_memory`).
    kv_memory : str
        How the framework sizes its KV cache: ``total`` (vLLM), ``free`` (TensorRT-LLM), ``static`` (SGLang);
        see :mod:`predictor.memory`.
    budget_per_dp_rank : bool
        ``max_num_batched_tokens`` and ``max_num_seqs`` are per attention-DP rank (vLLM and TensorRT-LLM run a
        scheduler per rank), so an instance with ``dp_attention = d`` has d times them; the simulator's own config
        then holds the instance's totals (and False). False (default): they are the instance's (SGLang divides its
        global budgets among the ranks).
    chunked_prefill : bool
        Split prefills into chunks (that share iterations with decodes under ``continuous``).
    policy : str
        ``continuous`` (vLLM, TensorRT-LLM: decodes and prefill chunks mixed), ``prefill_first`` (SGLang: a
        prefill iteration pauses the decodes) or ``static`` (see :data:`scheduler.engine_policies.POLICIES`).
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
    gpu_memory_utilization: float | None = 0.9
    chunked_prefill: bool = True
    policy: str = "continuous"
    num_blocks: int | None = None
    max_model_len: int | None = None
    fast_forward: bool = True
    kv_allocation: str = "paged"
    kv_budget_tokens: int | None = None
    kv_memory: str = "total"
    budget_per_dp_rank: bool = False

    def validate(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')}: must be a positive integer, got {value!r}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise InputError(f"--gpu-memory-utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        from predictor.memory import KV_MEMORY

        if self.kv_memory not in KV_MEMORY:
            raise InputError(f"kv_memory: unknown value {self.kv_memory!r}; allowed: {', '.join(KV_MEMORY)}")
        from scheduler.engine_policies import POLICIES

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


# The per-request arrays of _State (first axis: request); _State.compact keeps them aligned.
PER_REQUEST = ("arrival", "prompt", "output", "kv", "target", "generated", "blocks", "status", "first_scheduled",
               "first_token", "finish", "preemptions", "last_token", "reject_reason", "prefilled", "work", "work_mark")


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
        # a latency-only run: no per-iteration work, efficiency, statistics or time-between-tokens histogram
        self.lean = False
        self.reject_reason = np.zeros(n, dtype=object)
        self.prefilled = np.zeros(n, dtype=bool)  # prompt KV computed elsewhere (disaggregated decode)
        # Σ over the iterations run while each request was in a batch: duration (ms), FLOPs, HBM bytes,
        # roofline time (ms); work_mark holds the engine's running totals when it joined (see Simulator.join)
        self.work = np.zeros((n, 4))
        self.work_mark = np.zeros((n, 4))
        self.peaks: tuple[float, float] | None = None  # (peak FLOP/s, HBM bytes/s) of the GPU, for per-request MFU/MBU
        self.running: list[int] = []
        self.running_version = 0  # bumped by every join / leave (see running_ids)
        self._running_cache: tuple | None = None
        self.waiting: deque[int] = deque()
        self.partial: dict[int, None] = {}  # running requests with prefill left, in admission order
        self.closed = ClosedLoop(workload.concurrency) if workload.concurrency else None
        if self.closed is not None:
            self.arrival[:] = math.inf  # unsent; ClosedLoop.release stamps each send time
        self.rid: np.ndarray | None = None  # request ids of a windowed run's rows (None: the row index is the id)

    def compact(self, keep: np.ndarray, new: _State) -> np.ndarray:
        """Keep only the requests ``keep`` (ascending row indices), then append ``new``'s requests (a windowed run,
        :mod:`scheduler.engine_window`). The running list and queues are renumbered; kept requests stay in order,
        so every tie broken by row index breaks the same way. Returns the map old row → new row (−1: dropped)."""
        renumber = np.full(len(self.status), -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        for name in PER_REQUEST:
            setattr(self, name, np.concatenate([getattr(self, name)[keep], getattr(new, name)]))
        self.rid = np.concatenate([self.rid[keep], new.rid])
        self.running = renumber[np.asarray(self.running, np.int64)].tolist()
        self.waiting = deque(renumber[np.asarray(self.waiting, np.int64)].tolist())
        self.partial = dict.fromkeys(renumber[np.asarray(list(self.partial), np.int64)].tolist())
        self.running_version += 1
        self._running_cache = None
        return renumber

    def running_ids(self) -> np.ndarray:
        """The running list as an int64 array (do not modify it): cached until the list changes — a join or a
        leave bumps ``running_version``; a new list object (a view, a lost instance) is never the cached one."""
        cache, run = self._running_cache, self.running
        if cache is not None and cache[0] is run and cache[1] == self.running_version:
            return cache[2]
        ids = np.fromiter(run, np.int64, len(run))
        self._running_cache = (run, self.running_version, ids)
        return ids

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
