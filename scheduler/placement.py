"""Placing models on a node's GPUs: legal (TP, EP, PP, DP) configurations, memory fit, GPU ids and load time.

* A configuration is a replica of ``tp × pp`` GPUs (``tp``-way tensor parallel, ``pp`` pipeline stages,
  the experts of an MoE model spread ``ep``-way over the TP GPUs) × ``dp`` replicas. The layout must fit
  the model (:meth:`predictor.model_spec.ModelSpec.check_parallel`), the weights must fit with room for at least
  one full-context sequence of KV cache (:func:`predictor.memory.plan_memory`), and each replica's GPUs
  must sit in one NVLink group, aligned to a multiple of its size (the usual way groups are carved out).
* Expert parallelism (``ep = tp``) is offered for every MoE model; pipeline parallelism (2 or 4 stages)
  where the GPUs lack an NVLink-class link (TP's per-layer all-reduces are then costly) or where plain TP
  over as many GPUs is not legal for the model (heads not divisible).
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
    """``tp × pp`` GPUs per replica (experts ``ep``-way over the TP GPUs), ``dp`` replicas."""

    tp: int
    dp: int
    ep: int = 1
    pp: int = 1

    @property
    def replica_gpus(self) -> int:
        return self.tp * self.pp

    @property
    def gpus(self) -> int:
        return self.replica_gpus * self.dp

    @property
    def replica(self) -> Config:
        """One replica of this configuration (``dp`` = 1)."""
        return Config(self.tp, 1, self.ep, self.pp)

    @property
    def layout(self):
        """The replica's parallel layout: the TP degree (an int) or a :class:`~predictor.parallel.ParallelConfig`."""
        if self.ep == 1 and self.pp == 1:
            return self.tp
        from predictor.parallel import ParallelConfig

        return ParallelConfig(tp=self.tp, pp=self.pp, ep=self.ep)

    def __str__(self) -> str:
        extra = (f"·EP{self.ep}" if self.ep > 1 else "") + (f"·PP{self.pp}" if self.pp > 1 else "")
        return f"TP{self.tp}{extra}×DP{self.dp}"


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


def fits(model, gpu, layout, precision, max_model_len: int, engine) -> bool:
    """Whether ``model`` runs on ``layout`` (TP degree or parallel config) with room for one sequence
    (:func:`holds_a_sequence`)."""
    from predictor.memory import plan_memory

    try:
        model.check_parallel(layout)
        plan = plan_memory(model, gpu, layout, precision, max_num_batched_tokens=engine.max_num_batched_tokens,
                           max_num_seqs=engine.max_num_seqs, state_on_demand=True)
    except (ModelDoesNotFitError, InputError):
        return False
    return holds_a_sequence(plan, model, layout, precision, max_model_len)


def holds_a_sequence(plan, model, layout, precision, max_model_len: int) -> bool:
    """Whether memory plan ``plan`` has KV blocks for one sequence of min(``max_model_len``, 2048) tokens, its
    per-sequence state included."""
    from predictor.memory import sequence_blocks

    return plan.num_blocks >= sequence_blocks(model, layout, precision, min(max_model_len, 2048), plan.block_size)


NVLINK_CLASS_GBPS = 100.0  # below this per-GPU link bandwidth (PCIe), pipeline stages are worth offering


def _replica_shapes(model, gpu, largest_group: int) -> list[Config]:
    """Candidate replica shapes (dp = 1): power-of-two TP, plus EP for MoE models and PP where it can pay."""
    shapes = []
    tp = 1
    while tp <= largest_group:
        shapes.append(Config(tp, 1))
        if model.is_moe and tp > 1:
            shapes.append(Config(tp, 1, ep=tp))
        tp *= 2
    slow_link = gpu.link_bandwidth_gbps < NVLINK_CLASS_GBPS
    for pp in (2, 4):
        tp = 1
        while tp * pp <= largest_group:
            wide_tp_illegal = model.num_heads % (tp * pp) != 0
            if slow_link or wide_tp_illegal:
                shapes.append(Config(tp, 1, pp=pp))
            tp *= 2
    return shapes


def legal_configs(model, gpu, precision, max_model_len: int, engine, num_gpus: int, group_sizes: list[int]) -> list[Config]:
    """Every replica shape of :func:`_replica_shapes` that fits in memory, × every dp with tp·pp·dp ≤ num_gpus."""
    largest_group = max(group_sizes)
    out = []
    for shape in _replica_shapes(model, gpu, largest_group):
        if fits(model, gpu, shape.layout, precision, max_model_len, engine):
            size = shape.replica_gpus
            replicas_possible = sum(g // size for g in group_sizes)
            for dp in range(1, min(num_gpus // size, replicas_possible) + 1):
                out.append(Config(shape.tp, dp, shape.ep, shape.pp))
    return sorted(out)


def allocate(config: Config, free: set[int], groups: list[list[int]]) -> tuple[int, ...] | None:
    """GPU ids for ``config`` from ``free``: each replica an aligned block of ``tp × pp`` GPUs inside one NVLink group."""
    chosen: list[int] = []
    available = set(free)
    size = config.replica_gpus
    for _ in range(config.dp):
        block = None
        for group in groups:
            ordered = sorted(group)
            for start in range(0, len(ordered) - size + 1, size):
                candidate = ordered[start:start + size]
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


def load_time_s(llm_model: str, spec, tp, precision) -> float:
    """Seconds to bring a model up on ``tp`` (a TP degree or parallel layout): measured where SamuLLM has it (at
    the nearest measured TP to the layout's GPU count), else weights per GPU / bandwidth + constant."""
    from predictor.memory import weights_bytes_per_gpu
    from predictor.parallel import as_parallel

    layout, tp = tp, as_parallel(tp).gpus
    costs = _init_costs()
    keys = [k for k in {llm_model.lower(), spec.name.lower()}]
    measured = {t: c for (name, t), c in costs.items() if name in keys}
    if measured:
        nearest = min(measured, key=lambda t: (abs(t - tp), -t))
        return measured[nearest]
    return weights_bytes_per_gpu(spec, layout, precision) / LOAD_BANDWIDTH_BYTES_PER_S + LOAD_CONSTANT_S
