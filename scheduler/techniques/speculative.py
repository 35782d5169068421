"""Speculative decoding: expected speed-up of a decode step from the predictor (a static-batch analysis).

A speculation step of a batch of ``b`` sequences with cached context ``c`` (tokens) runs

* ``γ`` draft decode steps (the draft proposes ``γ`` tokens per sequence), then
* one verification iteration of the target: every sequence feeds its ``γ + 1`` tokens (the last accepted
  token and the ``γ`` proposals) through the target as a prefill-like chunk on its cached context, and
  samples at every one of those positions.

With a per-token acceptance probability ``α`` (independent across positions, the standard analysis of
Leviathan et al. 2023), a step yields ``E = (1 − α^(γ+1)) / (1 − α)`` tokens per sequence on average. The
speed-up over plain decoding is ``E · T_target(b, c) / (γ · T_draft + T_verify)``, every time an iteration
time from the predictor (kernels + CPU overhead per iteration unless ``include_overhead=False``).

Drafts
------
* a catalogue model name (e.g. ``llama-2-7b`` drafting for ``llama-2-70b``) on the same GPUs at ``draft_tp``
  (default: the target's TP), attending to its own full KV cache;
* ``"self"`` — self-speculation with a sparse KV (MagicDec's StreamingLLM draft): the target model itself
  attends to at most ``draft_kv_budget`` cached tokens per sequence in the draft steps;
* ``"heads"`` — MEDUSA / EAGLE-style draft heads: each draft step costs ``draft_cost_fraction`` of a target
  decode step at the same batch and context (a stated fraction, not predicted op by op).

Assumptions: acceptance is an input (its dependence on the draft, the task and the context is out of scope);
memory for the draft's weights and KV is not subtracted from the target's KV cache (``fits`` only checks the
target's KV capacity for ``b`` sequences of ``c + γ + 1`` tokens); tree verification (MEDUSA/EAGLE trees,
SpecInfer) is not modelled — a single chain of ``γ`` tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from predictor.errors import InputError
from predictor.overhead import NO_OVERHEAD


def expected_tokens(alpha: float, gamma: int) -> float:
    """Expected tokens generated per speculation step and sequence: (1 − α^(γ+1)) / (1 − α) (γ + 1 when α = 1)."""
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha: must be in [0, 1], got {alpha!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, int | np.integer) or gamma < 1:
        raise InputError(f"gamma: must be a positive integer, got {gamma!r}")
    return float(gamma + 1) if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


@dataclass(frozen=True)
class SpeculativeSetup:
    """A target model and its draft (see the module docstring).

    Attributes
    ----------
    target, gpu : str
        Target model and GPU (catalogue names).
    tp : int
        Target tensor-parallel degree.
    dtype : str
    draft : str
        A catalogue model, ``"self"`` or ``"heads"``.
    draft_tp : int, optional
        The draft model's TP degree (default: ``tp``).
    draft_kv_budget : int, optional
        Most cached tokens a draft step attends to (``"self"``: required; a draft model: optional).
    draft_cost_fraction : float
        ``"heads"``: cost of one draft step as a fraction of a target decode step.
    include_overhead : bool
        Count the predictor's per-iteration CPU overhead (off: kernels only, as with CUDA graphs).
    """

    target: str
    gpu: str
    tp: int = 1
    dtype: str = "fp16"
    draft: str = "heads"
    draft_tp: int | None = None
    draft_kv_budget: int | None = None
    draft_cost_fraction: float = 0.05
    include_overhead: bool = True


class SpeculativeModel:
    """Iteration times of target, draft and verification for a :class:`SpeculativeSetup` (times in ms)."""

    def __init__(self, predictor, setup: SpeculativeSetup):
        if setup.draft == "self" and setup.draft_kv_budget is None:
            raise InputError("draft 'self' needs draft_kv_budget (the sparse draft's KV tokens per sequence)")
        if not 0 < setup.draft_cost_fraction <= 1:
            raise InputError(f"draft_cost_fraction: must be in (0, 1], got {setup.draft_cost_fraction!r}")
        self.setup = setup
        self.target = self._bind(predictor, setup.target, setup.tp)
        if setup.draft in ("self", "heads"):
            self.draft = self.target
        else:
            self.draft = self._bind(predictor, setup.draft, setup.draft_tp or setup.tp)

    def _bind(self, predictor, model: str, tp: int):
        bound = predictor.bind(model, self.setup.gpu, tp, self.setup.dtype)
        return bound if self.setup.include_overhead else dataclasses.replace(bound, overhead=NO_OVERHEAD)

    def target_step_ms(self, batch: int, context: int) -> float:
        """One plain decode step of ``batch`` sequences with ``context`` cached tokens each."""
        return self.target.iteration_ms(0, 0, 0, 0, batch, batch * context)

    def draft_steps_ms(self, batch: int, context: int, gamma: int) -> float:
        """The ``γ`` draft steps (the i-th attends to context + i tokens, capped by the draft's KV budget)."""
        s = self.setup
        total = 0.0
        for i in range(gamma):
            ctx = context + i
            if s.draft == "heads":
                total += s.draft_cost_fraction * self.target_step_ms(batch, ctx)
                continue
            if s.draft_kv_budget is not None:
                ctx = min(ctx, s.draft_kv_budget)
            total += self.draft.iteration_ms(0, 0, 0, 0, batch, batch * ctx)
        return total

    def verify_ms(self, batch: int, context: int, gamma: int) -> float:
        """The target's verification: ``batch`` chunks of γ + 1 tokens on ``context`` cached tokens, all sampled."""
        q = gamma + 1
        return self.target.iteration_ms(batch, batch * q, batch * (q + context), batch * q, 0, 0)

    def point(self, batch: int, context: int, gamma: int, alpha: float) -> dict:
        """Speed-up and its parts at one (batch, context, γ, α)."""
        e = expected_tokens(alpha, gamma)
        base = self.target_step_ms(batch, context)
        draft = self.draft_steps_ms(batch, context, gamma)
        verify = self.verify_ms(batch, context, gamma)
        step = draft + verify
        return {"batch": batch, "context": context, "gamma": gamma, "alpha": alpha, "expected_tokens": e,
                "target_step_ms": base, "draft_ms": draft, "verify_ms": verify, "spec_step_ms": step,
                "verify_over_step": verify / base, "ms_per_token_plain": base, "ms_per_token_spec": step / e,
                "speedup": e * base / step}


def speedup_table(predictor, setup: SpeculativeSetup, batches, contexts, gammas=(4,), alpha: float = 0.8,
                  check_memory: bool = True) -> pd.DataFrame:
    """Speed-up of speculative decoding over plain decoding for every (batch, context, γ).

    Returns
    -------
    DataFrame
        One row per point: the :meth:`SpeculativeModel.point` fields plus ``fits`` (the target's KV cache
        holds ``batch`` sequences of context + γ + 1 tokens; True when not checked).
    """
    from predictor.memory import plan_memory

    model = SpeculativeModel(predictor, setup)
    capacity = None
    if check_memory:
        t = model.target
        capacity = plan_memory(t.model, t.gpu, t.tp, t.precision, max_num_seqs=max(batches)).max_tokens
    rows = []
    for c in contexts:
        for b in batches:
            for g in gammas:
                row = model.point(int(b), int(c), int(g), alpha)
                row["fits"] = True if capacity is None else b * (c + g + 1) <= capacity
                rows.append(row)
    return pd.DataFrame(rows)


def crossover_batch(table: pd.DataFrame) -> dict[int, int | None]:
    """Per context, the largest batch at which speculation still pays (speed-up > 1; None if never)."""
    out = {}
    for c, rows in table.groupby("context"):
        paying = rows.loc[rows["speedup"] > 1.0, "batch"]
        out[int(c)] = int(paying.max()) if len(paying) else None
    return out
