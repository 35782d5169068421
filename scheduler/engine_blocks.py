"""Paged KV-cache blocks and the waiting queue of the serving-engine simulator (admission, preemption, release).

:class:`KVBlockManager` is a mixin of :class:`scheduler.engine.Simulator`: it reads the engine's ``config``
(:class:`~scheduler.engine_state.EngineConfig`), ``max_model_len``, ``num_blocks``, ``_budget`` (the per-sequence
KV token cap or None), ``_contiguous`` (a contiguous reservation instead of paging), ``now`` (s),
``work_totals``, ``stretch`` (the co-location hook) and ``_state_count`` (blocks of a sequence's per-sequence
state, or None), and keeps ``free_blocks`` (blocks of ``block_size`` tokens), ``tokens_held`` (KV tokens kept
after the budget cap, plus the slots of per-sequence state) and ``preemptions_total`` up to date. Policies call
its public methods. The preemption victim (the latest-arrived running request) comes from a heap kept by
:meth:`KVBlockManager.join` and :meth:`KVBlockManager._leave`, O(log n) per eviction instead of a scan of the
running batch.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from scheduler.engine_state import DONE, RUNNING, WAITING, _State


class KVBlockManager:
    """KV-block accounting and queue moves of one engine instance (see the module docstring)."""

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

    def _state_blocks(self, state: _State, r: int) -> int:
        """Blocks request ``r``'s per-sequence state takes while it runs (windows at its largest length, recurrent
        states; see the engine's module docstring); 0 for a model without per-sequence state."""
        count = self._state_count
        return 0 if count is None else count(int(state.prompt[r]) + int(state.output[r]) - 1)

    def _admission_blocks(self, state: _State, r: int, tokens: int) -> int:
        """Blocks a waiting request must get to be admitted with ``tokens`` tokens in its cache (its per-sequence
        state's blocks included)."""
        if self._contiguous:
            tokens = self.reserve_tokens(int(state.prompt[r]), int(state.output[r]))
        return self._blocks_for(self.held(tokens)) + self._state_blocks(state, r)

    def _take(self, state: _State, r: int, need: int) -> None:
        """Give request ``r`` ``need`` free blocks at admission: its state's blocks, the rest for its tokens."""
        held = self._state_blocks(state, r)
        state.blocks[r] += need - held
        self.free_blocks -= need
        self.tokens_held += held * self.config.block_size  # state slots hold data: not counted as KV waste

    def _free(self, state: _State, r: int) -> None:
        """Return request ``r``'s blocks (tokens' and state's) to the free pool as it leaves this instance."""
        held = self._state_blocks(state, r)
        self.free_blocks += int(state.blocks[r]) + held
        self.tokens_held -= self.held(int(state.kv[r])) + held * self.config.block_size
        state.blocks[r] = 0

    def _evict_latest(self, state: _State) -> int:
        """Preempt the latest-arrived running request (ties: the highest id), found with a heap: O(log n)."""
        latest, joined = self._latest, self._joined
        while True:  # entries of requests that left since they joined are dropped as they surface
            _, neg_r, serial = latest[0]
            if joined.get(-neg_r) == serial:
                break
            heapq.heappop(latest)
        victim = -neg_r
        self._leave(state, victim)
        self._free(state, victim)
        self.preemptions_total += 1
        state.kv[victim] = 0
        # recompute: the prompt and every generated token (the last one is not in the KV cache yet)
        state.target[victim] = state.prompt[victim] + state.generated[victim]
        state.status[victim] = WAITING
        state.preemptions[victim] += 1
        state.prefilled[victim] = False
        state.waiting.appendleft(victim)
        state.partial.pop(victim, None)
        return victim

    def ensure_decode_blocks(self, state: _State) -> np.ndarray | list:
        """Running requests past prefill, each with a block for its next token (evicting if needed): an int64
        array of request ids in running order (an empty list when there are none)."""
        bs = self.config.block_size
        while True:
            if not state.running:
                return []
            run = state.running_ids()
            # a running request short of its prefill target is always in state.partial (see admit, _iterate)
            decoding = run if not state.partial else run[state.kv[run] >= state.target[run]]
            if decoding.size == 0:
                return []
            if self._budget is None:
                needs = state.kv[decoding] >= state.blocks[decoding] * bs  # the next token starts a new block
            else:
                needs = np.minimum(state.kv[decoding] + 1, self._budget) > state.blocks[decoding] * bs
            need = int(np.count_nonzero(needs))
            if need <= self.free_blocks:
                if need:
                    state.blocks[decoding[needs]] += 1
                    self.free_blocks -= need
                return decoding
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
                need = self._blocks_for(self.held(total)) + self._state_blocks(state, r)
                if need > self.free_blocks:
                    break
                chunk = min(target, max(budget, 0))
            else:
                if budget <= 0 or (whole and target > budget and out):
                    break
                chunk = target if whole else min(target, budget)
                need = self._admission_blocks(state, r, chunk)
                if need > self.free_blocks:
                    state_blocks = self._state_blocks(state, r)
                    if (not whole and self.free_blocks > state_blocks and not state.running and not out
                            and not self._contiguous):
                        need = self.free_blocks  # an idle engine takes what fits; the rest comes in later chunks
                        chunk = (need - state_blocks) * cfg.block_size
                    else:
                        break
            state.waiting.popleft()
            self.join(state, r)
            state.status[r] = RUNNING
            self._take(state, r, need)
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
            state.blocks[r] = 0  # blocks a rerouted request still counts belong to the instance it lost
            self._take(state, r, need)
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

    def _reset_running(self) -> None:
        """Forget the running batch's eviction order (an empty engine: a run's start, or a lost instance)."""
        self._latest: list[tuple[float, int, int]] = []  # heap of (−arrival s, −id, join serial): latest on top
        self._joined: dict[int, int] = {}  # running request → serial of its join (older heap entries are stale)
        self._serial = 0

    def _renumber(self, renumber: np.ndarray) -> None:
        """Follow a windowed run's compaction (:meth:`_State.compact`: old row → new row) in the eviction heap and
        the join serials. Only running requests are in them, and compaction keeps every running request."""
        joined = self._joined
        self._latest = [(a, -int(renumber[-neg_r]), serial) for a, neg_r, serial in self._latest
                        if joined.get(-neg_r) == serial]
        heapq.heapify(self._latest)
        self._joined = {int(renumber[r]): serial for r, serial in joined.items()}

    def _counts_work(self, state: _State) -> bool:
        """Whether this engine adds up its iterations' work (not a lean run, or a co-located one: ``stretch``
        needs each iteration's work); when it does not, its work totals stay zero."""
        return not state.lean or self.stretch is not None

    def join(self, state: _State, r: int) -> None:
        """Request ``r`` enters this engine's running batch (its work is counted from here)."""
        state.running.append(r)
        state.running_version += 1
        if self._counts_work(state):  # else the totals stay zero: no mark to take
            state.work_mark[r] = self.work_totals
        self._serial += 1
        self._joined[r] = self._serial
        heapq.heappush(self._latest, (-float(state.arrival[r]), -r, self._serial))
        if len(self._latest) > 2 * len(self._joined) + 64:  # drop stale entries: memory stays O(running)
            self._latest = [e for e in self._latest if self._joined.get(-e[1]) == e[2]]
            heapq.heapify(self._latest)

    def _leave(self, state: _State, r: int) -> None:
        """Request ``r`` leaves the running batch: add the work of the iterations it was part of."""
        state.running.remove(r)
        state.running_version += 1
        del self._joined[r]
        if self._counts_work(state):  # else the totals stay zero: nothing to add
            state.work[r] += np.subtract(self.work_totals, state.work_mark[r])

    def _finish(self, state: _State, r: int) -> int:
        state.status[r] = DONE
        state.finish[r] = self.now
        self._leave(state, r)
        if self._stream is not None:
            self._stream.add(state, r)
        self._free(state, r)
        if state.closed is not None:
            state.closed.complete(state, self.now)
        return 1

    def _handoff(self, state: _State, r: int) -> None:
        """A disaggregated prefill instance: the request leaves with its prompt KV (see :attr:`handoff`)."""
        self._leave(state, r)
        self._free(state, r)
        state.status[r] = WAITING
        state.prefilled[r] = True
        self.handoff.append(r)

    def release(self, state: _State, r: int) -> None:
        """Take running request ``r`` off this instance with its KV intact (a migration source); frees its blocks."""
        self._leave(state, r)
        state.partial.pop(r, None)
        self._free(state, r)
