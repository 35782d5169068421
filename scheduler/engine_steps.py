"""Timing and applying iterations of the serving-engine simulator: one scheduled iteration, or a fast-forwarded
run of decode-only iterations whose batch cannot change (same results as stepping one by one).

:class:`IterationRunner` is a mixin of :class:`scheduler.engine.Simulator`; besides the attributes the block
manager uses (:mod:`scheduler.engine_blocks`) it reads ``bound`` (the bound predictor: times in ms), ``stretch``
(the co-location hook), ``efficiency`` and ``stats``. Iteration times are ms in the predictor and s on the clock.
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.engine_state import ITL_EDGES_S, IterationLog, _State

_NONE = np.zeros(0, np.int64)
PREFIX_STEPS = 16  # decode steps timed first when an arrival may end a fast-forwarded run


def _count_gaps(state: _State, last_token_s: np.ndarray, start_s: float, now_s: float) -> None:
    """Add each sequence's gap ``now_s − last_token_s`` (s; NaN: no token yet, not counted) to the
    time-between-tokens histogram. Sequences whose last token came at ``start_s`` (they ran in the iteration
    just before) share one gap, binned once: the same counts as binning every gap, without a search per sequence.
    Not called in a lean run (it keeps no time-between-tokens histogram, nor the token times)."""
    same = last_token_s == start_s
    shared = int(np.count_nonzero(same))
    if shared:
        state.itl_counts[np.searchsorted(ITL_EDGES_S, now_s - start_s)] += shared
        if shared == len(last_token_s):
            return
        last_token_s = last_token_s[~same]
    gaps = now_s - last_token_s
    np.add.at(state.itl_counts, np.searchsorted(ITL_EDGES_S, gaps[gaps == gaps]), 1)


class IterationRunner:
    """Runs iterations for :class:`scheduler.engine.Simulator` (see the module docstring)."""

    def _iterate(self, state: _State, log: IterationLog | None, record: bool, decodes, prefills) -> int:
        """Time and apply one scheduled iteration; return how many requests finished."""
        finished = 0
        budget = self._budget
        dec = decodes if type(decodes) is np.ndarray else np.asarray(decodes, np.int64)
        n_dec, n_pre = len(dec), len(prefills)
        p_new = p_keys = samples = 0  # Σ chunk tokens, Σ (chunk + attended context), chunks that end their prompt
        if n_pre:
            kv, target = state.kv, state.target
            p_kv = [int(kv[r]) for r, _ in prefills]
            completes = []
            for (r, chunk), k in zip(prefills, p_kv, strict=True):
                p_new += chunk
                p_keys += chunk + (k if budget is None or k < budget else budget)
                complete = k + chunk >= int(target[r])
                completes.append(complete)
                samples += complete
        else:  # a decode-only iteration
            p_kv = completes = ()
        if n_dec:
            kv_dec = state.kv[dec]
            dec_kv = kv_dec if budget is None else np.minimum(kv_dec, budget)
            dec_ctx = int(dec_kv.sum())
        else:
            dec_ctx = 0
        dt_ms = self.bound.iteration_ms(n_pre, p_new, p_keys, samples, n_dec, dec_ctx)
        start = self.now
        lean = not self._counts_work(state)  # a timings-only run keeps no work, efficiency or statistics
        if not lean:
            flops, nbytes, roof_ms = self.bound.work_scalar(n_pre, p_new, p_keys, samples, n_dec, dec_ctx)
            if self.stretch is not None:
                dt_ms = self.stretch(self, start, dt_ms, flops, nbytes)
            self.efficiency.add(n_pre, p_new, p_keys, samples, n_dec, dec_ctx, dt_ms)
            totals = self.work_totals
            totals[0] += dt_ms
            totals[1] += flops
            totals[2] += nbytes
            totals[3] += roof_ms
        self.now += dt_ms / 1e3
        if record:
            log.start_s.append(start)
            log.duration_s.append(dt_ms / 1e3)
            log.decode_seqs.append(n_dec)
            log.prefill_seqs.append(n_pre)
            log.prefill_tokens.append(p_new)
            log.kv_blocks_used.append(self.num_blocks - self.free_blocks)
            log.running.append(len(state.running))
        # decode updates (vectorised)
        if n_dec:
            if not state.lean:  # token times only feed the time-between-tokens histogram
                _count_gaps(state, state.last_token[dec], start, self.now)
                state.last_token[dec] = self.now
            self.tokens_held += n_dec if budget is None else int((dec_kv < budget).sum())
            state.kv[dec] = kv_dec + 1
            generated = state.generated[dec] + 1
            state.generated[dec] = generated
            done = dec[generated >= state.output[dec]]
            for r in done.tolist():
                finished += self._finish(state, r)
        if n_pre:
            self.tokens_held += (p_new if budget is None else
                                 sum(min(k + c, budget) - min(k, budget) for k, (_, c) in zip(p_kv, prefills, strict=True)))
            for (r, chunk), complete in zip(prefills, completes, strict=True):
                state.kv[r] += chunk
                if not complete:
                    state.partial[r] = None
                else:
                    state.partial.pop(r, None)
                    if state.generated[r] > 0 and not state.lean:  # a recompute's stall is a token gap too
                        state.itl_counts[np.searchsorted(ITL_EDGES_S, self.now - state.last_token[r])] += 1
                    state.generated[r] += 1
                    if math.isnan(state.first_token[r]):
                        state.first_token[r] = self.now
                    state.last_token[r] = self.now
                    if state.generated[r] >= state.output[r]:
                        finished += self._finish(state, r)
                    elif self.handoff is not None:
                        self._handoff(state, r)
        if not lean:
            self.stats.add(dt_ms / 1e3, n_dec + n_pre, self.num_blocks - self.free_blocks, self.tokens_held)
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
            budget = cfg.max_num_batched_tokens - (len(state.running) if self.policy.decodes_share_budget else 0)
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
        run = state.running_ids()
        left = state.output[run] - state.generated[run]
        steps = int(left.min()) - 1  # the step that finishes a request goes through the regular loop
        if steps < 2:
            return 0
        bs = self.config.block_size
        budget = self._budget
        kv, blocks = state.kv[run], state.blocks[run]
        b = len(run)
        kv_sum = int(kv.sum())
        # The run ends at the first of: a request's last step, the first step starting at or after the next
        # arrival, the first step whose new blocks do not fit. Step times are elementwise in the step index (start
        # times a running sum) and block needs cumulative, so timing a short prefix first (PREFIX_STEPS: an arrival
        # usually comes soon) and the block needs of the steps left give the same values as the whole run. With no
        # arrival to come, the block limit is found first, so that no step past it is timed.
        cumulative = None
        if arrival_limit == math.inf:
            cumulative, steps = self._block_limit(kv, blocks, steps)
            if steps < 2:
                return 0
        n = PREFIX_STEPS if steps > PREFIX_STEPS and arrival_limit < math.inf else steps
        while True:
            if budget is None:
                durations = self.bound.decode_steps_ms(b, kv_sum, n) / 1e3
            else:
                contexts = _capped_context_sums(kv, budget, n + 1)  # Σ min(kv + j, budget), j = 0..n
                durations = self._decode_steps_ms(b, contexts[:n]) / 1e3
            offsets = np.zeros(n)
            np.cumsum(durations[:-1], out=offsets[1:])
            starts_s = self.now + offsets
            late = np.flatnonzero(starts_s >= arrival_limit) if arrival_limit < math.inf else _NONE
            if late.size or n == steps:
                break
            n = steps
        if late.size:
            steps = int(late[0])
            if steps < 2:
                return 0
        if cumulative is None:
            cumulative, steps = self._block_limit(kv, blocks, steps)
            if steps < 2:
                return 0
        durations, starts_s = durations[:steps], starts_s[:steps]
        if budget is None:  # per-step contexts and tokens held: only statistics need them (not a lean run)
            contexts = None if state.lean else kv_sum + b * np.arange(steps)
            held_gain = None if state.lean else b * np.arange(1, steps + 1)
            gained = b * steps
        else:
            held_gain = contexts[1:steps + 1] - contexts[0]
            contexts = contexts[:steps]
            gained = int(held_gain[-1])
        if not state.lean:
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
        if not state.lean:
            self.stats.add_many(durations, len(run),
                                self.num_blocks - self.free_blocks - new_blocks + cumulative[:steps],
                                self.tokens_held + held_gain)
        self.tokens_held += gained
        end_s = float(starts_s[-1] + durations[-1])  # the run's last step's end (its earlier ends are not needed)
        # time-between-tokens histogram: each sequence's first gap, then every later step's duration once per sequence
        if not state.lean:
            _count_gaps(state, state.last_token[run], self.now, float(starts_s[0] + durations[0]))
            np.add.at(state.itl_counts, np.searchsorted(ITL_EDGES_S, durations[1:]), len(run))
            state.last_token[run] = end_s
        self.now = end_s
        state.kv[run] += steps
        state.generated[run] += steps
        return steps

    def _block_limit(self, kv: np.ndarray, blocks: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
        """(cumulative new blocks of the next ``steps`` decode steps, how many of those steps fit the free blocks)."""
        cumulative = self._new_blocks_by_step(kv, blocks, steps)
        over = np.flatnonzero(cumulative > self.free_blocks)
        return cumulative, int(over[0]) if over.size else steps

    def _new_blocks_by_step(self, kv: np.ndarray, blocks: np.ndarray, steps: int) -> np.ndarray:
        """Cumulative KV blocks the running sequences (``kv`` tokens, ``blocks`` held) must get by each of the next
        ``steps`` decode steps (entry s: blocks allocated in steps 0..s)."""
        bs = self.config.block_size
        budget = self._budget
        first_new = blocks * bs - kv  # first step (0-based) that needs a new block, per sequence
        if budget is None and steps <= bs:  # a short run: at most one new block per sequence, at its first step
            return np.cumsum(np.bincount(first_new[first_new < steps], minlength=steps)[:steps])
        # last step (0-based) that may need a block: the run's end, or the step that reaches the budget
        last = np.full(len(kv), steps - 1, np.int64) if budget is None else np.minimum(steps - 1, budget - 1 - kv)
        room = first_new <= last
        starts = first_new[room]
        if not starts.size:
            return np.zeros(steps, np.int64)
        spans = last[room] - starts
        if int(spans.max()) < bs:  # at most one new block per sequence (short runs): its first step
            positions = starts
        else:
            counts = spans // bs + 1
            positions = np.repeat(starts, counts) + bs * (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                                           counts))
        return np.cumsum(np.bincount(positions, minlength=steps + 1)[:steps])

    def _decode_steps_ms(self, decode_seqs: int, contexts: np.ndarray) -> np.ndarray:
        """Times (ms) of consecutive decode-only iterations whose summed attended contexts are ``contexts``
        (the budget-capped twin of :meth:`BoundPredictor.decode_steps_ms`: same table cells as
        :meth:`BoundPredictor.iteration_ms` called once per step)."""
        b = float(decode_seqs)
        t = self.bound.table
        kv = (contexts + b) / b
        fixed = self.bound.iteration_ms(0, 0, 0, 0, decode_seqs, int(contexts[0])) - t.decode_ms_scalar(b, float(kv[0]))
        return fixed + t.decode_column_ms(b, kv, ascending=True)  # contexts never shrink along a run


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
