"""How one model instance is spread over GPUs: tensor, pipeline, expert and attention-data parallelism.

The fields follow the serving frameworks and aiconfigurator's measured runs (``tp_size``, ``pp_size``,
``attention_dp_size``, ``moe_tp_size``, ``moe_ep_size``):

* ``tp`` — attention heads (and dense MLPs) are split ``tp`` ways;
* ``dp_attention`` — that TP group is replicated ``dp_attention`` times, each replica serving its own
  share of the batch (SGLang / TRT-LLM's attention data parallelism for DeepSeek-style models);
* ``ep`` and ``moe_tp`` — the routed experts are spread over ``ep`` ranks, each expert's FFN split
  ``moe_tp`` ways; the MoE group covers the same GPUs as attention: ``moe_tp × ep = tp × dp_attention``;
* ``pp`` — the layers are cut into ``pp`` consecutive stages, each on its own ``tp × dp_attention`` GPUs;
  an iteration's batch flows through them as ``micro_batches`` micro-batches (default ``pp``), costing
  (micro_batches + pp − 1) stage times of one micro-batch (:attr:`ParallelConfig.pipeline_factor`).

A plain ``int`` wherever a parallel config is accepted means ``ParallelConfig(tp=int)``: tensor
parallelism alone, as before. GPUs per instance = ``tp × dp_attention × pp``.
"""

from __future__ import annotations

from dataclasses import dataclass

from predictor.errors import InputError

MAX_DEGREE = 1024


def _check_degree(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEGREE:
        raise InputError(f"{field}: must be an integer in 1..{MAX_DEGREE}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ParallelConfig:
    """Parallel degrees of one model instance (see the module docstring).

    ``moe_tp`` = 0 (the default) means ``tp × dp_attention / ep``: the MoE group fills the attention GPUs.
    """

    tp: int = 1
    pp: int = 1
    ep: int = 1
    dp_attention: int = 1
    moe_tp: int = 0
    micro_batches: int = 0  # pipeline micro-batches per iteration (0: pp)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "dp_attention"):
            object.__setattr__(self, name, _check_degree(f"--{name.replace('_', '-')}", getattr(self, name)))
        if self.micro_batches:
            _check_degree("--micro-batches", self.micro_batches)
        else:
            object.__setattr__(self, "micro_batches", self.pp)
        group = self.tp * self.dp_attention
        if self.moe_tp == 0:
            if group % self.ep:
                raise InputError(f"--ep: {self.ep} must divide tp × dp_attention = {group}; allowed: "
                                 f"{[e for e in range(1, group + 1) if group % e == 0]}")
            object.__setattr__(self, "moe_tp", group // self.ep)
        else:
            _check_degree("--moe-tp", self.moe_tp)
            if self.moe_tp * self.ep != group:
                raise InputError(f"--moe-tp: moe_tp × ep = {self.moe_tp} × {self.ep} must equal tp × dp_attention = "
                                 f"{group}; allowed moe_tp: {group // self.ep if group % self.ep == 0 else 'none'}")

    @property
    def stage_gpus(self) -> int:
        """GPUs of one pipeline stage: tp × dp_attention (= moe_tp × ep)."""
        return self.tp * self.dp_attention

    @property
    def gpus(self) -> int:
        """GPUs of the whole instance: tp × dp_attention × pp."""
        return self.stage_gpus * self.pp

    @property
    def is_plain_tp(self) -> bool:
        """Only tensor parallelism (the classic case an int ``tp`` stands for)."""
        return self.pp == 1 and self.ep == 1 and self.dp_attention == 1 and self.moe_tp == self.tp

    @property
    def label(self) -> str:
        """Short text: ``tp=8`` for plain TP, else e.g. ``tp=1 dp_attention=8 ep=8``."""
        parts = [f"tp={self.tp}"]
        if self.dp_attention > 1:
            parts.append(f"dp_attention={self.dp_attention}")
        if self.ep > 1:
            parts.append(f"ep={self.ep}")
        if self.pp > 1:
            parts.append(f"pp={self.pp}")
        return " ".join(parts)

    @property
    def pipeline_factor(self) -> float:
        """Stage-times per iteration: an iteration's batch runs as ``micro_batches`` micro-batches through
        ``pp`` stages, taking (micro_batches + pp − 1) times one micro-batch's stage time (the fill-and-drain
        bubble of a synchronous pipeline); 1 without PP."""
        return float(self.micro_batches + self.pp - 1) if self.pp > 1 else 1.0

    def to_dict(self) -> dict:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "dp_attention": self.dp_attention, "moe_tp": self.moe_tp,
                "micro_batches": self.micro_batches}

    def __int__(self) -> int:
        return self.tp


def as_parallel(tp: int | ParallelConfig) -> ParallelConfig:
    """A :class:`ParallelConfig` for ``tp`` (an int means tensor parallelism alone)."""
    if isinstance(tp, ParallelConfig):
        return tp
    if isinstance(tp, bool) or not hasattr(tp, "__index__"):
        raise InputError(f"--tp: must be a positive integer, got {tp!r}")
    value = int(tp)
    if value < 1:
        raise InputError(f"--tp: must be a positive integer, got {tp!r}")
    return ParallelConfig(tp=value)
