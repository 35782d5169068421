"""Evaluation splits: leave one model out, leave one GPU out, and a random split for reference.

Leave-one-model-out (``lomo``). Test rows: every row whose shapes came from the held-out model
(``model == M``; Vidur's per-model profiles). Training rows: everything else **except rows that share
a shape family with M** — model-agnostic rows (aiconfigurator sweeps, Vidur's shared attention
profile) whose GEMM (n, k) or attention head configuration equals one of M's at any TP degree M was
profiled with. Without that exclusion a sweep that happens to contain M's exact layer shapes would
leak M into training. Model-agnostic rows are never test rows in this split.

Leave-one-GPU-out (``logo``). Test rows: every row measured on GPU G; training rows: all other GPUs.

Leave shape families out (``leave_family_out``). Today's kernel sweeps (aiconfigurator MoE, MLA and
gated delta-net tables) are model-agnostic but each shape family is one model's layer: an MoE family
``moe:h{hidden}i{inter}e{experts}k{topk}`` is one architecture's expert FFN (DeepSeek-V3, Qwen3-MoE,
gpt-oss, ...), a gated delta-net family one Qwen3.5 size's shard, an MLA family one head count (MLA
tables hold DeepSeek-V3 shapes only, so its "models" are its tensor-parallel shards). One fold per group
(:data:`FAMILY_GROUPS`): a seeded half of the group's families is held out on every GPU and framework,
training sees everything else — the model-level generalisation test for kernels without a ``model``.

Random (``random``). A seeded 80/20 split of all rows, for reference (it leaks shapes and GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from predictor.errors import InputError
from predictor.models import get_model
from predictor.ops import linear_shapes

SPLITS = ("leave_one_model_out", "leave_one_gpu_out", "leave_family_out", "random")
# group name → shape-family prefixes; an MLA family's key is its head count, shared by prefill and decode.
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {"moe": ("moe:",), "mla": ("mla_prefill:", "mla_decode:"),
                                             "linear_attn": ("gdn:",)}


@dataclass(frozen=True)
class Fold:
    """One train/test partition (positions into the training table)."""

    split: str
    held_out: str
    train_idx: np.ndarray
    test_idx: np.ndarray


def model_shape_families(model_name: str, tps) -> set[str]:
    """Shape-family keys of a model's GEMMs and attention at the given TP degrees."""
    spec = get_model(model_name)
    families = set()
    for tp in sorted({int(t) for t in tps}):
        if spec.num_heads % tp:
            continue
        for n, k in linear_shapes(spec, tp).values():
            families.add(f"gemm:n{int(n)}k{int(k)}")
        families.add(f"attn:h{spec.num_heads // tp}kv{spec.kv_heads_per_gpu(tp)}d{spec.head_dim}")
    return families


def leave_one_model_out(table: pd.DataFrame, models: list[str] | None = None) -> list[Fold]:
    """One fold per model that has its own rows (``model`` column non-empty)."""
    model_col = table["model"].astype(str).to_numpy(object)
    family_col = table["shape_family"].astype(str).to_numpy(object)
    available = sorted(set(model_col.tolist()) - {""})
    models = available if models is None else models
    folds = []
    for model in models:
        if model not in available:
            raise InputError(f"split: model {model!r} has no rows; available: {', '.join(available)}")
        test = model_col == model
        tps = table.loc[test, "tp"].unique()
        shared = (model_col == "") & np.isin(family_col, sorted(model_shape_families(model, tps)))
        folds.append(Fold("leave_one_model_out", model, np.flatnonzero(~test & ~shared), np.flatnonzero(test)))
    return folds


def leave_one_gpu_out(table: pd.DataFrame, gpus: list[str] | None = None) -> list[Fold]:
    """One fold per GPU."""
    gpu_col = table["gpu"].astype(str).to_numpy(object)
    available = sorted(set(gpu_col.tolist()))
    gpus = available if gpus is None else gpus
    folds = []
    for gpu in gpus:
        if gpu not in available:
            raise InputError(f"split: GPU {gpu!r} has no rows; available: {', '.join(available)}")
        test = gpu_col == gpu
        folds.append(Fold("leave_one_gpu_out", gpu, np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def leave_family_out(table: pd.DataFrame, fraction: float = 0.5, seed: int = 0,
                     groups: list[str] | None = None) -> list[Fold]:
    """One fold per :data:`FAMILY_GROUPS` group with rows: a seeded ``fraction`` of its families held out."""
    # string work on the few distinct families, then spread to the rows (a million rows of str.split took seconds)
    codes, families = pd.factorize(table["shape_family"].astype(str), sort=False)
    families = [str(f) for f in families]
    keys = [f.split(":", 1)[1] if ":" in f else np.nan for f in families]  # the family's key after "kind:"
    groups = list(FAMILY_GROUPS) if groups is None else groups
    rng = np.random.default_rng(seed)
    folds = []
    for group in groups:
        if group not in FAMILY_GROUPS:
            raise InputError(f"split: family group {group!r} unknown; allowed: {', '.join(FAMILY_GROUPS)}")
        member = [f.startswith(FAMILY_GROUPS[group]) for f in families]
        candidates = sorted({k for k, m in zip(keys, member, strict=True) if m})
        if len(candidates) < 2:
            continue
        n_out = max(1, int(round(fraction * len(candidates))))
        held = set(rng.choice(candidates, size=n_out, replace=False).tolist())
        out = np.array([m and k in held for k, m in zip(keys, member, strict=True)], dtype=bool)
        test = out[codes]
        folds.append(Fold("leave_family_out", group, np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def random_split(table: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """A single seeded random split."""
    rng = np.random.default_rng(seed)
    test = rng.random(len(table)) < test_fraction
    return [Fold("random", "random", np.flatnonzero(~test), np.flatnonzero(test))]
