"""The batch of one engine iteration, as aggregate token counts (vectorised over iterations).

An iteration runs prefill chunks ``(new_tokens, context_len)`` — ``context_len`` tokens of the
prompt are already in the KV cache and ``new_tokens`` are processed now — and decode steps, one per
sequence, each attending to its ``context_len`` cached tokens plus itself. Every op's cost depends
on the batch only through the sums below, so many iterations are held as arrays of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from predictor.errors import InputError
from predictor.lazy import pandas as pd

REQUIRED_COLUMNS = ("prefill_tokens", "prefill_attention_pairs", "decode_seqs", "decode_context_tokens")
OPTIONAL_COLUMNS = ("prefill_seqs", "prefill_kv_tokens", "prefill_score_elements", "sample_tokens")


@dataclass(frozen=True)
class BatchShape:
    """Aggregates of ``n`` iterations (each attribute is a float64 array of shape ``(n,)``).

    Attributes
    ----------
    prefill_seqs : number of prefill chunks.
    prefill_tokens : Σ new_tokens over prefill chunks.
    prefill_kv_tokens : Σ (context_len + new_tokens): keys the prefill attention reads.
    prefill_attention_pairs : Σ new·(context + new/2): causal query-key pairs (FLOPs ∝ pairs).
    prefill_score_elements : Σ new·(context + new): size of a materialised (naive) score matrix.
    decode_seqs : sequences taking one decode step.
    decode_context_tokens : Σ context_len over decode sequences (cached tokens before this step).
    sample_tokens : tokens that produce logits (each decode step and each prompt-completing chunk).
    """

    prefill_seqs: np.ndarray
    prefill_tokens: np.ndarray
    prefill_kv_tokens: np.ndarray
    prefill_attention_pairs: np.ndarray
    prefill_score_elements: np.ndarray
    decode_seqs: np.ndarray
    decode_context_tokens: np.ndarray
    sample_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.prefill_tokens)

    @property
    def tokens(self) -> np.ndarray:
        """Tokens through the linear layers: prefill tokens + one per decode sequence."""
        return self.prefill_tokens + self.decode_seqs

    @property
    def decode_kv_tokens(self) -> np.ndarray:
        """Keys read by decode attention: each sequence's context plus its new token."""
        return self.decode_context_tokens + self.decode_seqs

    def divided(self, n: float) -> BatchShape:
        """Every aggregate divided by ``n`` (one of ``n`` equal shares: an attention-DP replica, a pipeline
        micro-batch); mean shapes per sequence are unchanged."""
        return self if n == 1 else BatchShape(**{f.name: getattr(self, f.name) / n for f in fields(self)})

    def take(self, idx) -> BatchShape:
        return BatchShape(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({f.name: getattr(self, f.name) for f in fields(self)})

    @staticmethod
    def concat(batches: Sequence[BatchShape]) -> BatchShape:
        return BatchShape(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(BatchShape)})


def _check_count(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
        raise InputError(f"{field}: expected an integer, got {value!r}")
    if isinstance(value, int | np.integer):  # Python ints are unbounded: compare, never convert to float
        if value < 0:
            raise InputError(f"{field}: must be >= 0, got {value!r}")
        if value > 10_000_000:
            raise InputError(f"{field}: {value!r} tokens is beyond any supported context (max 10,000,000)")
        return int(value)
    if not np.isfinite(value) or value != int(value):
        raise InputError(f"{field}: expected a whole number of tokens, got {value!r}")
    if value < 0:
        raise InputError(f"{field}: must be >= 0, got {value!r}")
    if value > 10_000_000:
        raise InputError(f"{field}: {value!r} tokens is beyond any supported context (max 10,000,000)")
    return int(value)


def from_lists(
    prefill: Iterable[tuple[int, int]] = (),
    decode: Iterable[int] = (),
    *,
    prefill_samples: bool = True,
) -> BatchShape:
    """One iteration from explicit chunks.

    Parameters
    ----------
    prefill : iterable of (new_tokens, context_len)
        Prefill chunks; ``new_tokens`` > 0, ``context_len`` >= 0.
    decode : iterable of int
        Context length (cached tokens) of each decoding sequence.
    prefill_samples : bool
        Whether each prefill chunk completes its prompt and so samples a token (default True).
    """
    chunks = []
    for i, chunk in enumerate(prefill):
        try:
            new, ctx = chunk
        except (TypeError, ValueError):
            raise InputError(f"prefill[{i}]: expected (new_tokens, context_len), got {chunk!r}") from None
        new = _check_count(f"prefill[{i}].new_tokens", new)
        ctx = _check_count(f"prefill[{i}].context_len", ctx)
        if new == 0:
            raise InputError(f"prefill[{i}].new_tokens: must be > 0, got 0")
        chunks.append((new, ctx))
    contexts = [_check_count(f"decode[{i}]", c) for i, c in enumerate(decode)]
    n = np.array([c[0] for c in chunks], dtype=float)
    c = np.array([c[1] for c in chunks], dtype=float)
    d = np.array(contexts, dtype=float)

    def arr(x):
        return np.array([float(x)])

    return BatchShape(
        prefill_seqs=arr(len(chunks)),
        prefill_tokens=arr(n.sum()),
        prefill_kv_tokens=arr((n + c).sum()),
        prefill_attention_pairs=arr((n * (c + n / 2)).sum()),
        prefill_score_elements=arr((n * (c + n)).sum()),
        decode_seqs=arr(len(d)),
        decode_context_tokens=arr(d.sum()),
        sample_tokens=arr(len(d) + (len(chunks) if prefill_samples else 0)),
    )


def prefill_batch(batch_size: int, input_len: int) -> BatchShape:
    """Prefill of ``batch_size`` prompts of ``input_len`` tokens each, nothing cached."""
    return from_lists(prefill=[(input_len, 0)] * batch_size)


def decode_batch(batch_size: int, context_len: int) -> BatchShape:
    """One decode step of ``batch_size`` sequences with ``context_len`` cached tokens each."""
    return from_lists(decode=[context_len] * batch_size)


def from_frame(df: pd.DataFrame) -> BatchShape:
    """Iterations from aggregate columns (vectorised; one row per iteration).

    Required columns: ``prefill_tokens, prefill_attention_pairs, decode_seqs, decode_context_tokens``.
    Optional: ``prefill_seqs`` (default 1 when there are prefill tokens), ``prefill_kv_tokens``,
    ``prefill_score_elements`` and ``sample_tokens``. The defaults for the last three are exact
    when all prefill chunks of an iteration share one (new_tokens, context_len) shape.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"iterations: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")
    cols = {}
    for name in REQUIRED_COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if c in df.columns):
        try:
            values = pd.to_numeric(df[name], errors="raise").to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"iterations: column {name!r} must be numeric") from None
        if not np.all(np.isfinite(values)):
            raise InputError(f"iterations: column {name!r} has NaN or infinite values")
        if np.any(values < 0):
            raise InputError(f"iterations: column {name!r} has negative values")
        cols[name] = values
    tokens = cols["prefill_tokens"]
    pairs = cols["prefill_attention_pairs"]
    seqs = cols.get("prefill_seqs", (tokens > 0).astype(float))
    if np.any((tokens > 0) & (seqs <= 0)):
        raise InputError("iterations: rows with prefill_tokens > 0 need prefill_seqs >= 1")
    safe_tokens = np.where(tokens > 0, tokens, 1.0)
    safe_seqs = np.where(seqs > 0, seqs, 1.0)
    kv_default = np.where(tokens > 0, seqs * pairs / safe_tokens + tokens / 2, 0.0)
    score_default = np.where(tokens > 0, pairs + tokens**2 / (2 * safe_seqs), 0.0)
    return BatchShape(
        prefill_seqs=seqs,
        prefill_tokens=tokens,
        prefill_kv_tokens=cols.get("prefill_kv_tokens", kv_default),
        prefill_attention_pairs=pairs,
        prefill_score_elements=cols.get("prefill_score_elements", score_default),
        decode_seqs=cols["decode_seqs"],
        decode_context_tokens=cols["decode_context_tokens"],
        sample_tokens=cols.get("sample_tokens", cols["decode_seqs"] + seqs),
    )
