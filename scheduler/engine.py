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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from predictor.errors import InputError
from scheduler.workload import Workload

if TYPE_CHECKING:
    from scheduler.metrics import SimResult

WAITING, RUNNING, DONE, REJECTED = 0, 1, 2, 3
# Time-between-tokens histogram: log-spaced bin edges from 1 µs to 10,000 s (percentiles within 0.5%).
TBT_EDGES_S = np.geomspace(1e-6, 1e4, 4001)


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

    Time-weighted KV-cache blocks in use (mean and max) and a histogram of batch sizes (sequences per
    iteration, counted once per iteration).
    """

    def __init__(self, max_batch: int, num_blocks: int):
        self.num_blocks = num_blocks
        self.time_s = 0.0
        self.kv_block_seconds = 0.0
        self.kv_max = 0
        self.batch_counts = np.zeros(max_batch + 2, np.int64)

    def add(self, duration_s: float, batch: int, kv_used: int) -> None:
        self.time_s += duration_s
        self.kv_block_seconds += duration_s * kv_used
        self.kv_max = max(self.kv_max, int(kv_used))
        self.batch_counts[min(batch, len(self.batch_counts) - 1)] += 1

    def add_many(self, durations_s: np.ndarray, batch: int, kv_used: np.ndarray) -> None:
        self.time_s += float(durations_s.sum())
        self.kv_block_seconds += float((durations_s * kv_used).sum())
        self.kv_max = max(self.kv_max, int(np.max(kv_used)))
        self.batch_counts[min(batch, len(self.batch_counts) - 1)] += len(durations_s)


class _State:
    """Per-request arrays plus the running list and waiting queue."""

    def __init__(self, workload: Workload):
        n = len(workload)
        self.arrival = workload.arrival_s.astype(float)
        self.prompt = workload.prompt_tokens.astype(np.int64)
        self.output = workload.output_tokens.astype(np.int64)
        self.kv = np.zeros(n, np.int64)          # tokens in the KV cache
        self.target = self.prompt.copy()         # tokens the current prefill must reach
        self.generated = np.zeros(n, np.int64)
        self.blocks = np.zeros(n, np.int64)
        self.status = np.zeros(n, np.int8)
        self.first_scheduled = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int64)
        self.last_token = np.full(n, np.nan)      # time of the latest token, for time-between-tokens
        self.tbt_counts = np.zeros(len(TBT_EDGES_S) + 1, np.int64)
        self.reject_reason = np.zeros(n, dtype=object)
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.partial: dict[int, None] = {}  # running requests with prefill left, in admission order


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
    """

    def __init__(self, predictor, model, gpu, tp: int = 1, dtype: str = "fp16", config: EngineConfig | None = None):
        from predictor.memory import plan_memory

        self.config = config or EngineConfig()
        self.config.validate()
        self.bound = predictor.bind(model, gpu, tp, dtype)
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

    # --- block and queue helpers used by policies ---------------------------------------------------
    def _blocks_for(self, tokens) -> int:
        return -(-int(tokens) // self.config.block_size)

    def _evict_latest(self, state: _State) -> int:
        victim = max(state.running, key=lambda r: (state.arrival[r], r))
        state.running.remove(victim)
        self.free_blocks += int(state.blocks[victim])
        state.blocks[victim] = 0
        state.kv[victim] = 0
        # recompute: the prompt and every generated token (the last one is not in the KV cache yet)
        state.target[victim] = state.prompt[victim] + state.generated[victim]
        state.status[victim] = WAITING
        state.preemptions[victim] += 1
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
            needs = state.kv[decoding] >= state.blocks[decoding] * bs  # the next token starts a new block
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
        need = max(self._blocks_for(state.kv[r] + chunk) - have, 0)
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
            target = int(state.target[r])
            if reserve_full:  # static batching: the whole batch joins at once, prefills may span iterations
                need = self._blocks_for(state.prompt[r] + state.output[r] - 1)  # the most it will ever hold
                if need > self.free_blocks:
                    break
                chunk = min(target, max(budget, 0))
            else:
                if budget <= 0 or (whole and target > budget and out):
                    break
                chunk = target if whole else min(target, budget)
                need = self._blocks_for(chunk)
                if need > self.free_blocks:
                    if not whole and self.free_blocks > 0 and not state.running and not out:
                        need = self.free_blocks  # an idle engine takes what fits; the rest comes in later chunks
                        chunk = need * cfg.block_size
                    else:
                        break
            state.waiting.popleft()
            state.running.append(r)
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

    # --- main loop ------------------------------------------------------------------------------
    def _reject_impossible(self, state: _State) -> None:
        total = state.prompt + state.output
        too_long = total > self.max_model_len
        # the KV cache holds at most prompt + output − 1 tokens (the last token is never fed back)
        too_big = -(-(total - 1) // self.config.block_size) > self.num_blocks
        for mask, reason in ((too_long, f"prompt + output exceeds max_model_len {self.max_model_len}"),
                             (too_big & ~too_long, f"needs more than the {self.num_blocks} KV blocks of the GPU")):
            state.status[mask] = REJECTED
            state.reject_reason[mask] = reason

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
        from scheduler.metrics import SimResult

        from scheduler.metrics import RequestStream

        state = _State(workload)
        self._reject_impossible(state)
        self.free_blocks = self.num_blocks
        self.now = 0.0
        self.stats = RunningStats(self.config.max_num_seqs, self.num_blocks)
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
        return SimResult.from_state(state, log, self, workload, partial=partial)

    def _loop(self, state: _State, log: IterationLog, n: int, record_iterations: bool, progress, stop):
        next_arrival = 0
        finished = int((state.status == REJECTED).sum())
        iterations = 0
        partial = False
        bound = self.bound
        while finished < n:
            while next_arrival < n and state.arrival[next_arrival] <= self.now:
                if state.status[next_arrival] == WAITING:
                    state.waiting.append(next_arrival)
                next_arrival += 1
            if not state.running and not state.waiting:
                if next_arrival >= n:
                    break
                self.now = float(state.arrival[next_arrival])
                continue
            if self.config.fast_forward and state.running and not state.partial:
                arrival_limit = float(state.arrival[next_arrival]) if next_arrival < n else math.inf
                steps = self._fast_forward(state, log, arrival_limit, record_iterations)
                if steps:
                    iterations += steps
                    if stop is not None and stop():
                        partial = True
                        break
                    continue
            decodes, prefills = self.policy.schedule(self, state)
            if not decodes and not prefills:
                if state.running:
                    self._evict_latest(state)  # nothing can move: free memory for the oldest work
                    continue
                if next_arrival < n:
                    self.now = max(self.now, float(state.arrival[next_arrival]))
                    continue
                # the head of the queue cannot fit even in an empty engine
                r = state.waiting.popleft()
                state.status[r] = REJECTED
                state.reject_reason[r] = "does not fit in the KV cache"
                finished += 1
                continue
            dec = np.asarray(decodes, np.int64)
            p_ids = [r for r, _ in prefills]
            p_chunks = [c for _, c in prefills]
            p_ctx = [int(state.kv[r]) for r in p_ids]
            completes = [int(state.kv[r]) + c >= int(state.target[r]) for r, c in prefills]
            dt_ms = bound.iteration_ms(len(prefills), sum(p_chunks), sum(p_chunks) + sum(p_ctx), sum(completes),
                                       len(dec), int(state.kv[dec].sum()) if dec.size else 0)
            start = self.now
            self.now += dt_ms / 1e3
            if record_iterations:
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
                state.tbt_counts += np.bincount(np.searchsorted(TBT_EDGES_S, gaps[gaps == gaps]),
                                                minlength=len(state.tbt_counts))
                state.last_token[dec] = self.now
                state.kv[dec] += 1
                state.generated[dec] += 1
                done = dec[state.generated[dec] >= state.output[dec]]
                for r in done.tolist():
                    finished += self._finish(state, r)
            for r, chunk, complete in zip(p_ids, p_chunks, completes, strict=True):
                state.kv[r] += chunk
                if not complete:
                    state.partial[r] = None
                else:
                    state.partial.pop(r, None)
                    if state.generated[r] > 0:  # a recompute after preemption: its stall is a token gap too
                        state.tbt_counts[np.searchsorted(TBT_EDGES_S, self.now - state.last_token[r])] += 1
                    state.generated[r] += 1
                    if math.isnan(state.first_token[r]):
                        state.first_token[r] = self.now
                    state.last_token[r] = self.now
                    if state.generated[r] >= state.output[r]:
                        finished += self._finish(state, r)
            self.stats.add(dt_ms / 1e3, len(dec) + len(prefills), self.num_blocks - self.free_blocks)
            iterations += 1
            if progress is not None and iterations % 500 == 0:
                progress(finished, n)
            if stop is not None and stop():
                partial = True
                break
        return finished, iterations, partial

    def _admission_blocked(self, state: _State) -> bool:
        """True when no waiting request can join while only decodes run (so the batch cannot change)."""
        cfg = self.config
        if not state.waiting or self.config.policy == "static":
            return True
        if len(state.running) >= cfg.max_num_seqs:
            return True
        head = state.waiting[0]
        if cfg.chunked_prefill:
            budget = cfg.max_num_batched_tokens - len(state.running)
            if budget <= 0:
                return True
            chunk = min(int(state.target[head]), budget)
        else:
            chunk = int(state.target[head])
        return self._blocks_for(chunk) > self.free_blocks  # free blocks only shrink while decoding

    def _fast_forward(self, state: _State, log: IterationLog, arrival_limit: float, record: bool) -> int:
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
        kv, blocks = state.kv[run], state.blocks[run]
        first_new = blocks * bs - kv  # first step (0-based) that needs a new block, per sequence
        need = np.zeros(steps + 1, np.int64)
        starts = first_new[first_new < steps]
        if starts.size:
            counts = (steps - 1 - starts) // bs + 1
            positions = np.repeat(starts, counts) + bs * (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            need = np.bincount(positions, minlength=steps + 1)[: steps + 1]
        cumulative = np.cumsum(need)[:steps]
        over = np.flatnonzero(cumulative > self.free_blocks)
        if over.size:
            steps = int(over[0])
        if steps < 2:
            return 0
        durations = self.bound.decode_steps_ms(len(run), int(kv.sum()), steps) / 1e3
        starts_s = self.now + np.concatenate([[0.0], np.cumsum(durations[:-1])])
        late = np.flatnonzero(starts_s >= arrival_limit)
        if late.size:
            steps = int(late[0])
            if steps < 2:
                return 0
            durations, starts_s = durations[:steps], starts_s[:steps]
        new_blocks = int(cumulative[steps - 1])
        state.blocks[run] = np.maximum(blocks, -(-(kv + steps) // bs))
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
        self.stats.add_many(durations, len(run), self.num_blocks - self.free_blocks - new_blocks + cumulative[:steps])
        ends = starts_s + durations
        first_gaps = ends[0] - state.last_token[run]
        gaps = np.concatenate([first_gaps[first_gaps == first_gaps], np.repeat(durations[1:], len(run))])
        state.tbt_counts += np.bincount(np.searchsorted(TBT_EDGES_S, gaps), minlength=len(state.tbt_counts))
        self.now = float(ends[-1])
        state.last_token[run] = self.now
        state.kv[run] += steps
        state.generated[run] += steps
        return steps

    def _finish(self, state: _State, r: int) -> int:
        state.status[r] = DONE
        state.finish[r] = self.now
        if self._stream is not None:
            self._stream.add(state, r)
        state.running.remove(r)
        self.free_blocks += int(state.blocks[r])
        state.blocks[r] = 0
        return 1
