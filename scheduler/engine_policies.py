"""Scheduling policies of the serving-engine simulator, chosen by name (:data:`POLICIES`).

A policy decides what one iteration runs (which decodes, which prefill chunks); the block and queue mechanics
it calls live in :class:`scheduler.engine_blocks.KVBlockManager`. See :mod:`scheduler.engine` for the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.engine import Simulator
    from scheduler.engine_state import _State


class Policy:
    """Decides the batch of one iteration. Subclasses implement :meth:`schedule`."""

    name = "policy"
    # a new prefill takes the token budget the running decodes leave (False: all of it; the decodes wait)
    decodes_share_budget = True

    def schedule(self, engine: Simulator, state: _State) -> tuple[list[int], list[tuple[int, int]]]:
        """Return (decoding request ids: a list or an int64 array, [(prefilling request id, chunk tokens)])."""
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


class PrefillFirst(Policy):
    """SGLang's default scheduler: chunked prefill without mixing. An iteration prefills — unfinished chunks first,
    then waiting requests FCFS, up to the token budget — whenever a prefill can run, and the decodes wait; otherwise
    every running request decodes. Clients that send together are prefilled together, then decode in step."""

    name = "prefill_first"
    decodes_share_budget = False

    def schedule(self, engine, state):
        cfg = engine.config
        if engine.accepts_prefilled:
            engine.admit_prefilled(state)
        budget = cfg.max_num_batched_tokens
        prefills = engine.continue_prefills(state, budget)
        budget -= sum(c for _, c in prefills)
        prefills += engine.admit(state, budget=budget, whole=not cfg.chunked_prefill)
        if prefills:
            return [], prefills
        return engine.ensure_decode_blocks(state), []


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


POLICIES: dict[str, type[Policy]] = {"continuous": ContinuousBatching, "prefill_first": PrefillFirst,
                                     "static": StaticBatching}
