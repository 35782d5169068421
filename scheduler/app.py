"""Multi-LLM offline applications: the YAML spec, its validation, and sampled request sets.

An application runs a set of prompts through several LLMs on one multi-GPU node:

* **ensemble** — every prompt goes to every (root) model;
* **routing** — each prompt goes to one root model, drawn with the models' ``share``;
* **chain** — a model with ``upstream`` takes each upstream output (plus ``prompt_template_tokens``) as a
  prompt, available only once that upstream request has finished (e.g. summarise, then evaluate).

Prompt lengths come from a trace, a fixed value or a distribution; output lengths from a model's measured
distribution (SamuLLM's no_robots histograms), a trace's output lengths, a fixed value, or a distribution. A
model entry with ``count: n`` stands for n independent LLMs (e.g. several evaluators). :meth:`Application.sample`
draws one set of lengths (seeded); the planner draws K of them (sampling then simulation).
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from predictor.errors import InputError

TOPOLOGIES = ("ensemble", "routing", "chain")


class LengthSpec(BaseModel):
    """Where lengths come from: exactly one of ``fixed``, ``measured`` (a model's distribution), ``trace`` (its
    prompt lengths for prompts, its output lengths for a model's outputs) or ``lognormal`` (``mean`` tokens and
    ``sigma``, clipped to [``min``, ``max``])."""

    model_config = ConfigDict(extra="forbid")
    fixed: int | None = Field(default=None, ge=1, le=1_000_000)
    measured: str | None = None
    trace: str | None = None
    lognormal: bool = False
    mean: float | None = Field(default=None, gt=0, le=1_000_000)
    sigma: float = Field(default=0.8, gt=0, le=5)
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_source(self):
        sources = [self.fixed is not None, self.measured is not None, self.trace is not None, self.lognormal]
        if sum(sources) != 1:
            raise ValueError("give exactly one of fixed, measured, trace or lognormal")
        if self.lognormal and self.mean is None:
            raise ValueError("lognormal needs a mean")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    model: str = Field(min_length=1)
    output_lengths: LengthSpec
    share: float | None = Field(default=None, gt=0, le=1)
    upstream: str | None = None
    prompt_template_tokens: int = Field(default=0, ge=0, le=100_000)
    count: int = Field(default=1, ge=1, le=64)


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu: str = "a100-80gb"
    count: int = Field(default=8, ge=1, le=64)
    nvlink_groups: list[list[int]] | None = None
    dtype: str = "fp16"

    @model_validator(mode="after")
    def _groups(self):
        if self.nvlink_groups is not None:
            flat = [g for group in self.nvlink_groups for g in group]
            if sorted(flat) != list(range(self.count)):
                raise ValueError(f"nvlink_groups must partition GPUs 0..{self.count - 1} exactly once")
        return self


class PromptSpec(LengthSpec):
    count: int = Field(default=1000, ge=1, le=1_000_000)


class EngineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_num_seqs: int = Field(default=256, ge=1, le=65536)
    max_num_batched_tokens: int = Field(default=4096, ge=1, le=1_000_000)
    chunked_prefill: bool = True
    contention: Literal["shared", "interleaved", "none"] = "shared"  # co-located LLMs (scheduler/colocation.py)


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["greedy", "beam"] = "beam"
    top_k: int = Field(default=4, ge=1, le=64)
    beam_width: int = Field(default=3, ge=1, le=32)
    max_simulations: int = Field(default=400, ge=1, le=1_000_000)  # the search's budget (engine simulations)
    time_budget_s: float = Field(default=600.0, gt=0, le=86_400)     # an upper bound only (see scheduler.planner)
    n_jobs: int = Field(default=1, ge=1, le=64)
    colocation: bool = False  # also consider two LLMs sharing the same GPUs (docs/colocation.md)


class ApplicationSpec(BaseModel):
    """The validated YAML document (see ``examples/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "application"
    topology: Literal["ensemble", "routing", "chain"]
    node: NodeSpec = NodeSpec()
    prompts: PromptSpec
    models: list[ModelEntry] = Field(min_length=1, max_length=64)
    samples: int = Field(default=4, ge=1, le=100)
    seed: int = Field(default=0, ge=0)
    engine: EngineSpec = EngineSpec()
    search: SearchSpec = SearchSpec()

    @model_validator(mode="after")
    def _topology(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        for m in self.models:
            if m.upstream is not None:
                if self.topology != "chain":
                    raise ValueError(f"model {m.name!r}: upstream is only allowed with topology chain")
                if m.upstream not in names or m.upstream == m.name:
                    raise ValueError(f"model {m.name!r}: upstream {m.upstream!r} is not another model of this application")
        if self.topology == "routing":
            shares = [m.share for m in self.models]
            if any(s is None for s in shares):
                raise ValueError("routing: every model needs a share")
            if abs(sum(s * m.count for s, m in zip(shares, self.models, strict=True)) - 1.0) > 1e-6:
                raise ValueError("routing: shares (times count) must sum to 1")
        if self.topology == "chain" and all(m.upstream is None for m in self.models):
            raise ValueError("chain: at least one model needs an upstream")
        try:  # no cycles
            _upstream_order(self.models)
        except graphlib.CycleError as err:
            raise ValueError(f"chain: models {sorted(set(err.args[1]))} form a cycle") from None
        return self


def _upstream_order(models) -> list[str]:
    """Names of ``models`` (objects with ``name`` and ``upstream``) with each upstream first, by
    :class:`graphlib.TopologicalSorter`; ready models keep their given order. Raises ``graphlib.CycleError``."""
    sorter = graphlib.TopologicalSorter()
    for m in models:
        sorter.add(m.name, *([m.upstream] if m.upstream is not None else []))
    position = {m.name: i for i, m in enumerate(models)}
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def load_application(path: str | Path) -> Application:
    """Read and validate an application YAML file (one-line :class:`InputError` on any problem)."""
    from predictor.safe_yaml import load_yaml_file

    path = Path(path)
    raw = load_yaml_file(path, "app", "a YAML application spec")
    if raw is None:
        raise InputError(f"app: {str(path)!r} is empty; expected a mapping with topology, prompts and models "
                         f"(see examples/)")
    return Application.from_dict(raw, source=str(path))


def _as_field(field: str, fn, value):
    """``fn(value)``, with an input error re-worded to name the spec's field instead of a CLI option."""
    try:
        return fn(value)
    except InputError as err:
        text = str(err)
        detail = text.split(": ", 1)[1] if text.startswith("--") and ": " in text else text
        raise InputError(f"app: {field}: {detail}") from None


@dataclass(frozen=True)
class LLM:
    """One model of the application (a ``count`` entry expanded to ``name-1``, ``name-2``, …)."""

    name: str
    spec: object  # predictor.model_spec.ModelSpec
    model_id: str  # as written in the spec (a catalogue name, HF id or config path)
    output_lengths: LengthSpec
    upstream: str | None
    template_tokens: int
    share: float | None
    max_model_len: int


@dataclass(frozen=True)
class AppSample:
    """One draw of the application's lengths: per LLM, prompt and output tokens and the upstream request index."""

    prompts: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    upstream_index: dict[str, np.ndarray | None]
    seed: int
    # per LLM: prompts cut to max_model_len − 1 and outputs capped to fit the context, in this draw
    cut: dict[str, dict[str, int]] = field(default_factory=dict)


class Application:
    """A validated application with its LLMs resolved to model specs."""

    def __init__(self, spec: ApplicationSpec):
        from predictor.gpus import get_gpu
        from predictor.models import get_model
        from predictor.precision import parse_dtype

        self.spec = spec
        self.gpu = _as_field("node.gpu", get_gpu, spec.node.gpu)
        self.precision = _as_field("node.dtype", parse_dtype, spec.node.dtype)
        self.num_gpus = spec.node.count
        self.nvlink_groups = spec.node.nvlink_groups or [list(range(spec.node.count))]
        llms = []
        for entry in spec.models:
            try:
                model = get_model(entry.model)
            except InputError as err:
                raise InputError(f"app: models.{entry.name}.model: {str(err).split(': ', 1)[-1]}") from None
            if entry.output_lengths.measured is not None:
                from scheduler.workload import output_length_distribution

                try:
                    output_length_distribution(entry.output_lengths.measured)
                except InputError as err:
                    raise InputError(f"app: models.{entry.name}.output_lengths.measured: "
                                     f"{str(err).split(': ', 1)[-1]}") from None
            names = [entry.name] if entry.count == 1 else [f"{entry.name}-{i + 1}" for i in range(entry.count)]
            for name in names:
                llms.append(LLM(name, model, entry.model, entry.output_lengths, entry.upstream,
                                entry.prompt_template_tokens, entry.share, model.max_position_embeddings))
        expanded = [llm.name for llm in llms]
        duplicates = sorted({n for n in expanded if expanded.count(n) > 1})
        if duplicates:
            raise InputError(f"app: models: the LLM names {duplicates} occur twice once `count` copies are named "
                             f"<name>-1, <name>-2, …; rename an entry")
        # an upstream that was expanded (count > 1) is ambiguous
        counts = {e.name: e.count for e in spec.models}
        for llm in llms:
            if llm.upstream is not None and counts[llm.upstream] > 1:
                raise InputError(f"app: models.{llm.name}.upstream: {llm.upstream!r} has count > 1; name one LLM")
        self.llms = llms
        self.by_name = {llm.name: llm for llm in llms}
        if spec.prompts.measured is not None:
            raise InputError("app: prompts.measured: prompt lengths come from fixed, trace or lognormal")
        for label, lengths in [("prompts", spec.prompts)] + [(f"models.{e.name}.output_lengths", e.output_lengths)
                                                             for e in spec.models]:
            if lengths.trace is not None:  # read (and so checked) now, not at the first sample
                from scheduler.workload import trace_columns

                table = _as_field(f"{label}.trace", trace_columns, lengths.trace)
                if len(table) == 0:
                    raise InputError(f"app: {label}.trace: {lengths.trace!r} has no valid requests")

    @classmethod
    def from_dict(cls, raw: object, source: str = "app") -> Application:
        if not isinstance(raw, dict):
            raise InputError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
        try:
            spec = ApplicationSpec(**raw)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(root)"
            msg = first["msg"].removeprefix("Value error, ")
            got = first.get("input")
            shown = (f" (got {got!r})" if first["type"] not in ("missing", "value_error")
                     and (got is None or isinstance(got, str | int | float | bool)) else "")
            raise InputError(f"{source}: {loc}: {msg}{shown}") from None
        return cls(spec)

    @property
    def names(self) -> list[str]:
        return [llm.name for llm in self.llms]

    def topological_order(self) -> list[str]:
        """LLM names with every upstream before its downstream models (ties in spec order)."""
        return _upstream_order(self.llms)

    # --- sampling ----------------------------------------------------------------------------
    def _draw(self, spec: LengthSpec, n: int, rng: np.random.Generator, cap: np.ndarray | int | None,
              output: bool = False) -> np.ndarray:
        """``n`` lengths from ``spec`` (a trace gives its prompt lengths, or with ``output`` its output lengths)."""
        if spec.fixed is not None:
            values = np.full(n, spec.fixed, dtype=np.int64)
        elif spec.measured is not None:
            from scheduler.workload import output_length_distribution

            lengths, probs = output_length_distribution(spec.measured)
            values = rng.choice(lengths, size=n, p=probs / probs.sum()).astype(np.int64)
        elif spec.trace is not None:
            from scheduler.workload import trace_columns

            table = trace_columns(spec.trace)
            values = (table.output_tokens if output else table.prompt_tokens)[rng.integers(0, len(table), n)]
        else:
            mu = np.log(spec.mean) - spec.sigma**2 / 2
            values = np.round(rng.lognormal(mu, spec.sigma, n)).astype(np.int64)
        values = np.maximum(values, spec.min)
        if spec.max is not None:
            values = np.minimum(values, spec.max)
        if cap is not None:
            values = np.minimum(values, cap)
        return np.maximum(values, 1)

    def sample(self, seed: int, mean_lengths: bool = False) -> AppSample:
        """One seeded draw of every LLM's prompt and output lengths.

        With ``mean_lengths`` every output length is the distribution's mean instead of a draw (the
        "plug in the mean" alternative to sampling). Output lengths are capped so prompt + output fits the
        model's context; prompts longer than the context are cut to leave room for one output token. Both
        are counted per LLM in ``AppSample.cut`` (see :meth:`length_warning`).
        """
        cut: dict[str, dict[str, int]] = {}
        rng = np.random.default_rng(seed)
        base_prompts = self._draw(self.spec.prompts, self.spec.prompts.count, rng, None)
        n = len(base_prompts)
        roots = [llm for llm in self.llms if llm.upstream is None]
        assignment = None
        if self.spec.topology == "routing":
            shares = np.array([llm.share for llm in roots], dtype=float)
            assignment = rng.choice(len(roots), size=n, p=shares / shares.sum())
        prompts, outputs, upstream = {}, {}, {}
        for name in self.topological_order():
            llm = self.by_name[name]
            if llm.upstream is None:
                idx = np.arange(n) if assignment is None else np.flatnonzero(assignment == roots.index(llm))
                p = base_prompts[idx]
                upstream[name] = None
            else:
                p = outputs[llm.upstream] + llm.template_tokens
                upstream[name] = np.arange(len(p))
            prompts_cut = int((p > llm.max_model_len - 1).sum())
            p = np.minimum(p, llm.max_model_len - 1)
            cap = llm.max_model_len - p
            if mean_lengths:
                draws = self._draw(llm.output_lengths, 20_000, np.random.default_rng(seed + 7), None, output=True)
                o = np.full(len(p), max(int(round(draws.mean())), 1))
            else:
                o = self._draw(llm.output_lengths, len(p), rng, None, output=True)
            cut[name] = {"prompts_cut": prompts_cut, "outputs_capped": int((o > cap).sum()), "requests": len(p)}
            o = np.maximum(np.minimum(o, cap), 1)
            prompts[name], outputs[name] = p.astype(np.int64), o.astype(np.int64)
        return AppSample(prompts, outputs, upstream, seed, cut)

    def length_warning(self, samples: list[AppSample]) -> str | None:
        """One line counting, per LLM, the prompts cut and outputs capped to fit its context over ``samples``
        (None when nothing was cut): the planner plans the cut lengths, so the user is told."""
        parts = []
        for llm in self.llms:
            cut = sum(s.cut.get(llm.name, {}).get("prompts_cut", 0) for s in samples)
            capped = sum(s.cut.get(llm.name, {}).get("outputs_capped", 0) for s in samples)
            total = sum(s.cut.get(llm.name, {}).get("requests", 0) for s in samples)
            if cut or capped:
                parts.append(f"{llm.name} (context {llm.max_model_len:,}): {cut:,} of {total:,} prompts cut to "
                             f"{llm.max_model_len - 1:,} tokens, {capped:,} outputs capped")
        if not parts:
            return None
        return f"lengths cut to fit the context over {len(samples)} samples: " + "; ".join(parts)
