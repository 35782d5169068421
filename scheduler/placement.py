"""Placing models on a node's GPUs: legal (TP, DP) configurations, memory fit, GPU ids and load time.

* A configuration is ``tp`` GPUs per replica × ``dp`` replicas. ``tp`` must divide the model's attention
  heads, the weights must fit with room for at least one full-context sequence of KV cache
  (:func:`predictor.memory.plan_memory`), and each replica's GPUs must sit in one NVLink group, aligned to
  a multiple of ``tp`` (the usual way TP groups are carved out of a node).
* Load time (switching a model in) comes from SamuLLM's measured vLLM start-up times
  (``data/samullm/model_init_costs.parquet``; a TP degree not measured uses the nearest measured one);
  models without a measurement take ``weights per GPU / LOAD_BANDWIDTH + LOAD_CONSTANT_S``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from predictor.errors import InputError, ModelDoesNotFitError

LOAD_BANDWIDTH_BYTES_PER_S = 2e9   # weights read from the host page cache into each GPU, per GPU
LOAD_CONSTANT_S = 10.0             # process start-up, CUDA context, profiling run, KV allocation


@dataclass(frozen=True, order=True)
class Config:
    """``tp`` GPUs per replica, ``dp`` replicas."""

    tp: int
    dp: int

    @property
    def gpus(self) -> int:
        return self.tp * self.dp

    def __str__(self) -> str:
        return f"TP{self.tp}×DP{self.dp}"


@dataclass(frozen=True)
class Placement:
    """An LLM on specific GPUs (``gpus`` lists replica 0's GPUs first, then replica 1's, …).

    ``group`` names the LLMs co-located on these same GPUs (this one included; see
    :mod:`scheduler.colocation`), each with a memory partition; empty when the LLM has the GPUs to itself.
    """

    llm: str
    config: Config
    gpus: tuple[int, ...]
    group: tuple[str, ...] = ()


def fits(model, gpu, tp: int, precision, max_model_len: int, engine) -> bool:
    """Whether ``model`` runs at TP ``tp`` with KV room for one full-context sequence."""
    from predictor.memory import plan_memory

    if model.num_heads % tp or not (model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0):
        return False
    try:
        plan = plan_memory(model, gpu, tp, precision, max_num_batched_tokens=engine.max_num_batched_tokens,
                           max_num_seqs=engine.max_num_seqs)
    except (ModelDoesNotFitError, InputError):
        return False
    return plan.max_tokens >= min(max_model_len, 2048)


def legal_configs(model, gpu, precision, max_model_len: int, engine, num_gpus: int, group_sizes: list[int]) -> list[Config]:
    """Every (tp, dp) with tp·dp ≤ num_gpus, tp a power of two fitting in an NVLink group and in memory."""
    largest_group = max(group_sizes)
    out = []
    tp = 1
    while tp <= largest_group:
        if fits(model, gpu, tp, precision, max_model_len, engine):
            replicas_possible = sum(size // tp for size in group_sizes)
            for dp in range(1, min(num_gpus // tp, replicas_possible) + 1):
                out.append(Config(tp, dp))
        tp *= 2
    return out


def allocate(config: Config, free: set[int], groups: list[list[int]]) -> tuple[int, ...] | None:
    """GPU ids for ``config`` from ``free``: each replica a tp-aligned block inside one NVLink group."""
    chosen: list[int] = []
    available = set(free)
    for _ in range(config.dp):
        block = None
        for group in groups:
            ordered = sorted(group)
            for start in range(0, len(ordered) - config.tp + 1, config.tp):
                candidate = ordered[start:start + config.tp]
                if all(g in available for g in candidate):
                    block = candidate
                    break
            if block:
                break
        if block is None:
            return None
        chosen += block
        available -= set(block)
    return tuple(chosen)


@functools.lru_cache(maxsize=1)
def _init_costs() -> dict[tuple[str, int], float]:
    from features.reference_data import read_model_init_costs

    table = read_model_init_costs()
    costs: dict[tuple[str, int], float] = {}
    for row in table.itertuples():
        for key in {row.model_path, row.model_path.split("/")[-1], row.model}:
            if key:
                costs[(str(key).lower(), int(row.tp))] = float(row.init_cost_s)
    return costs


def load_time_s(llm_model: str, spec, tp: int, precision) -> float:
    """Seconds to bring a model up at TP ``tp``: measured where SamuLLM has it, else weights / bandwidth + constant."""
    from predictor.memory import weights_bytes_per_gpu

    costs = _init_costs()
    keys = [k for k in {llm_model.lower(), spec.name.lower()}]
    measured = {t: c for (name, t), c in costs.items() if name in keys}
    if measured:
        nearest = min(measured, key=lambda t: (abs(t - tp), -t))
        return measured[nearest]
    return weights_bytes_per_gpu(spec, tp, precision) / LOAD_BANDWIDTH_BYTES_PER_S + LOAD_CONSTANT_S
