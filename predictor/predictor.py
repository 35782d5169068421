"""The Predictor: roofline × learned residual + per-iteration overheads, per op and per iteration.

Schedulers call it every iteration, so iteration-level calls go through precomputed tables
(:mod:`predictor.tables`, built lazily per model × GPU × TP × precision and cached); per-op calls and
the per-op breakdown go through the model directly.

* ``Predictor.load()`` — the shipped artifact (checksum, feature list and size verified); also a
  folder, ``models:/inference-sim-residual@champion`` or ``runs:/<run_id>`` from MLflow.
* ``Predictor.roofline_only()`` — the ideal time, no overheads: the baseline.

Times are milliseconds. An op is never predicted faster than :data:`MIN_RATIO_TO_ROOFLINE` × its
roofline time (the published data has kernels beating the HBM roofline from L2 cache by up to ~2×;
a prediction below half the ideal is treated as model error and clamped).

The configuration-bound fast path (:class:`~predictor.bound.BoundPredictor`) lives in :mod:`predictor.bound` and
the MLflow download in :mod:`predictor.artifact`; both names are re-exported here.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.array_cache import cache_dir
from predictor.artifact import MLFLOW_HTTP_TIMEOUT_S, Artifact, _download_mlflow_artifact, load_artifact  # noqa: F401
from predictor.bound import BoundPredictor, kernel_ms_scalar  # re-exported: predictor.predictor.BoundPredictor
from predictor.batch import BatchShape, from_frame, from_lists
from predictor.cpus import available_cpus
from predictor.errors import InputError
from predictor.gpus import GPUSpec, get_gpu
from predictor.lazy import pandas as pd
from predictor.model_spec import ModelSpec
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.overhead import NO_OVERHEAD, OverheadModel
from predictor.parallel import ParallelConfig, as_parallel
from predictor.precision import Precision, parse_dtype
from predictor.validate import (check_artifact_path, check_iteration_bounds, check_iteration_context,
                                check_iteration_keys, check_static_batch)

MIN_RATIO_TO_ROOFLINE = 0.5
PARALLEL_PREDICT_ROWS = 10_000  # LightGBM predicts on every available CPU from this many rows (table building)
MAX_TOKENS = 10_000_000  # same limit as predictor.batch
# Fitted by training.pipeline from Vidur's A100-host CPU-overhead profiles (see predictor.overhead);
# used when an artifact carries no fit of its own.
DEFAULT_OVERHEAD = OverheadModel(base_ms=1.428, per_seq_ms=0.0417, multi_gpu_ms=6.259)
ITERATION_KEYS = ("model", "gpu", "tp", "dtype")


@dataclass
class IterationPrediction:
    """One iteration's predicted time (ms); the per-op breakdown is computed on first access.

    Attributes
    ----------
    total_ms : float
        Kernel time + non-kernel overhead.
    kernel_ms : float
        GPU kernels (Σ over ops).
    overhead_ms : float
        Scheduling, input preparation, sampling and output handling on the CPU.
    """

    total_ms: float
    kernel_ms: float
    overhead_ms: float
    _breakdown: object = field(default=None, repr=False)
    _ops: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def ops(self) -> pd.DataFrame:
        """Per-op rows: op, op_kind, count, bound, roofline_ms and predicted_ms per call, total_ms."""
        if self._ops is None:
            self._ops = self._breakdown()
        return self._ops

    @property
    def roofline_ms(self) -> float:
        """Σ count × roofline time over the ops (ms)."""
        return float((self.ops["count"] * self.ops["roofline_ms"]).sum())


@dataclass(frozen=True)
class StaticEstimate:
    """A static batch: prefill of every prompt, then decode steps (times in ms)."""

    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    output_tokens_per_s: float

    def to_dict(self) -> dict:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2e_ms": self.e2e_ms,
                "output_tokens_per_s": self.output_tokens_per_s}


class Predictor:
    """Predicts kernel, op and iteration times (see the module docstring)."""

    def __init__(self, artifact: Artifact | None = None, overhead: OverheadModel | None = None):
        self.artifact = artifact
        self._booster = None
        self._tables: dict = {}
        self._configs: dict = {}
        self._identity: str | None = None
        self._trained: tuple[GPUSpec, ...] | None = None
        self.framework: str | None = None  # the kernel family applied (None: the pooled model)
        self._views: dict[str, Predictor] = {}
        self._families = None
        if artifact is not None and artifact.families_text is not None:
            from predictor.kernel_family import KernelFamilies

            self._families = KernelFamilies(artifact.families_text, artifact.metadata["kernel_families"])
        if artifact is not None:
            if not artifact.model_text.startswith("tree\n"):  # LightGBM's text format; parsed on first use
                raise InputError(f"artifact: residual_model.txt in {str(artifact.path)!r} is not a LightGBM text model "
                                 f"(it does not start with a 'tree' header)")
            self._features = list(artifact.metadata["feature_names"])
            fitted = artifact.metadata.get("overhead")
            overhead = overhead or (_overhead_from_metadata(fitted, artifact.path) if fitted else DEFAULT_OVERHEAD)
        self.overhead = overhead or NO_OVERHEAD

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Predictor:
        """The hybrid predictor.

        Parameters
        ----------
        path : str or Path, optional
            An artifact folder (default: the shipped ``artifacts/``), or an MLflow URI
            ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``runs:/<run_id>``: the run's
            logged artifact folder is downloaded and verified like any other (no pickles are loaded).
        """
        from features.builder import MODEL_FEATURES

        check_artifact_path(path)
        text = str(path) if path is not None else ""
        if text.startswith(("models:/", "runs:/")):
            with tempfile.TemporaryDirectory(prefix="inference-sim-artifact-") as target:  # removed after loading
                return cls(load_artifact(_download_mlflow_artifact(text, dst_dir=target), MODEL_FEATURES))
        return cls(load_artifact(path, MODEL_FEATURES))

    @classmethod
    def roofline_only(cls, overhead: OverheadModel | None = None) -> Predictor:
        """Predicts the roofline ideal time (no overhead unless one is given)."""
        return cls(None, overhead)

    @property
    def is_hybrid(self) -> bool:
        return self.artifact is not None

    def for_framework(self, framework: str | None) -> Predictor:
        """This predictor with the kernel family of ``framework`` (``vllm``, ``sglang``, ``trtllm``): op times of
        that runtime's own kernels (:mod:`predictor.kernel_family`). The pooled predictor (the one ``load`` gave) when
        ``framework`` is None or has no family (``legacy``), or itself when the artifact carries none (roofline
        only, an artifact trained before families). Views are kept, so a framework's tables are built once."""
        if self._families is None or not self._families.applies(framework):
            return self._views.get(None, self)
        view = self._views.get(framework)
        if view is None:
            view = Predictor(self.artifact, self.overhead)
            view._booster, view._families, view._views = self._booster, self._families, self._views
            view.framework = framework
            self._views.setdefault(None, self)
            self._views[framework] = view
        return view

    def _residual_booster(self):
        """The LightGBM booster, parsed on first use: a simulation whose tables are cached never needs it
        (importing LightGBM and parsing the model is most of the cost of :meth:`load`)."""
        if self._booster is None:
            import lightgbm as lgb

            try:
                self._booster = lgb.Booster(model_str=self.artifact.model_text)
            except lgb.basic.LightGBMError as err:
                raise InputError(f"artifact: residual_model.txt in {str(self.artifact.path)!r} is not a LightGBM text "
                                 f"model ({' '.join(str(err).split())[:120]})") from None
        return self._booster

    @property
    def name(self) -> str:
        return "hybrid" if self.is_hybrid else "roofline"

    # --- per op ---------------------------------------------------------------------------------
    def predict_ops(self, ops: pd.DataFrame, gpu: GPUSpec | str | None = None) -> pd.DataFrame:
        """``roofline_ms`` and ``predicted_ms`` (per call, ms) for canonical op rows.

        Parameters
        ----------
        ops : DataFrame
            Canonical-schema rows (``measured_ms`` not needed); a ``gpu`` column unless ``gpu`` is given.
        gpu : GPUSpec or str, optional
            The GPU of every row.
        """
        from features.builder import build_features

        if len(ops) == 0:
            return pd.DataFrame({"roofline_ms": [], "predicted_ms": []}, index=ops.index)
        X, ideal = build_features(ops, gpu)
        if not self.is_hybrid:
            predicted = ideal
        else:
            # rows are independent: threads change the speed, not the numbers (one thread for small calls)
            threads = available_cpus() if len(X) >= PARALLEL_PREDICT_ROWS else 1
            ratio = np.exp(self._residual_booster().predict(X.loc[:, self._features], num_threads=threads))
            predicted = ideal * np.maximum(ratio, MIN_RATIO_TO_ROOFLINE)
            if self.framework is not None:  # the runtime's own kernels, then bounded like any prediction
                fix = self._families.log_correction(X, ops["op_kind"].to_numpy(), self.framework, threads)
                predicted = np.maximum(predicted * np.exp(fix), ideal * MIN_RATIO_TO_ROOFLINE)
            if self._trained_gpus():
                predicted = self._sibling_bounded(ops, gpu, predicted)
        return pd.DataFrame({"roofline_ms": ideal, "predicted_ms": predicted}, index=ops.index)

    def _trained_gpus(self) -> tuple[GPUSpec, ...]:
        """Specs of the GPUs the residual model was trained on (those the catalogue knows)."""
        if self._trained is None:
            from predictor.sibling_bounds import catalogue_specs

            self._trained = catalogue_specs(self.artifact.training_gpus)
        return self._trained

    def _sibling_bounded(self, ops: pd.DataFrame, gpu, predicted: np.ndarray) -> np.ndarray:
        """``predicted`` (ms) with rows on an unseen GPU bracketed by the trained GPUs around it
        (:func:`predictor.sibling_bounds.bound_rows`); rows on trained GPUs are unchanged."""
        from predictor.sibling_bounds import bound_rows

        return bound_rows(ops, gpu, predicted, self._trained_gpus(),
                          lambda rows, sibling: self.predict_ops(rows, sibling)["predicted_ms"].to_numpy())

    # --- tables ---------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """A digest of the model behind this predictor (``roofline`` for the baseline): keys the table cache."""
        if self._identity is None:
            import hashlib

            # the sibling bounds change what an unseen GPU's tables hold, so the trained GPUs are part of it
            bounds = f"sibling-bounds-v1:{','.join(sorted(self.artifact.training_gpus))}" if self.artifact else ""
            family = (f"family-v1:{self.framework}:{self._families.digest}:{','.join(self._families.applied[self.framework])}"
                      if self.framework is not None else "")
            self._identity = ("roofline" if self.artifact is None
                              else hashlib.sha256((self.artifact.model_text + bounds + family).encode()).hexdigest()[:32])
        return self._identity

    def tables(self, model: ModelSpec, gpu: GPUSpec, tp: int | ParallelConfig, precision: Precision):
        """The :class:`~predictor.tables.IterationTables` of one configuration.

        Built on first use (about a second), kept in memory, and cached on disk (see
        :func:`predictor.array_cache.cache_dir`) so later processes load them in milliseconds. Models with the
        same shapes share tables.
        """
        from predictor import tables as tb

        arch = tb.architecture(model)
        tp = as_parallel(tp)
        key = (arch, gpu, tp, precision)
        table = self._tables.get(key)
        if table is None:
            model.check_parallel(tp)
            folder = cache_dir()
            path = folder / f"{tb.cache_key(self.identity, model, gpu, tp, precision)}.npz" if folder else None
            table = tb.IterationTables.load(path) if path is not None and path.exists() else None
            if table is None:
                table = tb.IterationTables.build(self.predict_ops, model, gpu, tp, precision)
                if path is not None:
                    try:
                        table.save(path)
                    except OSError:
                        pass  # a read-only or full cache only costs rebuilding next time
            self._tables[key] = table
        return table

    def _configured(self, model, gpu, tp, dtype) -> tuple[ModelSpec, GPUSpec, ParallelConfig, Precision, object]:
        """(model spec, GPU spec, parallel layout, precision, tables) of a configuration; remembered for plain
        name/int arguments, so repeated per-iteration calls skip the catalogue look-ups."""
        key = (model, gpu, tp, dtype) if (type(model) is str and type(gpu) is str and type(tp) is int
                                          and type(dtype) is str) else None
        found = self._configs.get(key) if key is not None else None
        if found is None:
            spec, gpu_spec, par, precision = self._resolve(model, gpu, tp, dtype)
            found = (spec, gpu_spec, par, precision, self.tables(spec, gpu_spec, par, precision))
            if key is not None:
                self._configs[key] = found
        return found

    def _resolve(self, model, gpu, tp, dtype) -> tuple[ModelSpec, GPUSpec, ParallelConfig, Precision]:
        spec, gpu_spec, precision = get_model(model), get_gpu(gpu), parse_dtype(dtype)
        precision.check_native(gpu_spec)  # fp4 compute needs fp4 tensor cores
        if not isinstance(tp, ParallelConfig) and (isinstance(tp, bool) or not isinstance(tp, int | np.integer)
                                                   or tp < 1):
            raise InputError(f"tp: must be a positive integer, got {tp!r}")
        par = as_parallel(tp)
        spec.check_parallel(par)
        return spec, gpu_spec, par, precision

    # --- per iteration --------------------------------------------------------------------------
    def predict_iteration(
        self,
        model: str | ModelSpec,
        gpu: str | GPUSpec,
        tp: int = 1,
        dtype: str | Precision = "fp16",
        prefill: Iterable[tuple[int, int]] = (),
        decode: Iterable[int] = (),
    ) -> IterationPrediction:
        """Predicted time of one iteration (fast table path); ``.ops`` gives the per-op breakdown.

        Parameters
        ----------
        model, gpu : name or spec
        tp : int or ParallelConfig
            Tensor-parallel degree, or the full layout (pipeline, expert, attention-data parallelism).
        dtype : str
            Precision preset or ``w<bits>a<bits>[kv<bits>]``.
        prefill : iterable of (new_tokens, context_len)
            Prefill chunks; each is assumed to complete its prompt and sample a token.
        decode : iterable of int
            Cached context length of each decoding sequence.
        """
        spec, gpu_spec, tp, precision, table = self._configured(model, gpu, tp, dtype)
        chunks = list(prefill)
        contexts = list(decode)
        new_sum = kv_sum = 0
        limit = spec.max_position_embeddings
        fits = True  # every chunk and decode context within the model's context length (else: the checker's message)
        for chunk in chunks:
            new, ctx = chunk if type(chunk) is tuple and len(chunk) == 2 else (None, None)
            if not (type(new) is int and type(ctx) is int and 0 < new <= MAX_TOKENS and 0 <= ctx <= MAX_TOKENS):
                batch = from_lists(chunks, contexts)  # slow path: validates and names the offending index
                chunks = list(zip(*_chunk_lists(chunks), strict=True))
                break
            new_sum += new
            kv_sum += new + ctx
            fits = fits and new + ctx <= limit
        else:
            batch = None
        if batch is not None:  # recompute from the validated, converted chunks
            new_sum = int(batch.prefill_tokens[0])
            kv_sum = int(batch.prefill_kv_tokens[0])
            fits = False
        n_chunks, n_dec = len(chunks), len(contexts)
        # plain ints in range: summed in C; anything else takes the validating path (same sum)
        longest = max(contexts) if contexts and set(map(type, contexts)) == {int} else None
        if not contexts or (longest is not None and min(contexts) >= 0 and longest <= MAX_TOKENS):
            dec_kv = sum(contexts) + n_dec
            fits = fits and (longest is None or longest + 1 <= limit)
        else:
            dec_kv = int(from_lists(decode=contexts).decode_kv_tokens[0])
            fits = False
        tokens = new_sum + n_dec
        if tokens == 0:
            raise InputError("batch: empty iteration; give at least one prefill chunk or decode sequence")
        if not fits:
            check_iteration_context(spec, chunks, contexts)
        q_mean = new_sum / n_chunks if n_chunks else 0.0
        kernel = kernel_ms_scalar(
            table, tp, tokens, n_chunks + n_dec, n_dec, dec_kv / n_dec if n_dec else 0.0,
            n_chunks, q_mean, (kv_sum / n_chunks - q_mean) if n_chunks else 0.0)
        overhead = (self.overhead.iteration_ms(n_chunks + n_dec, tp.gpus) if self.overhead is not NO_OVERHEAD
                    else 0.0)
        return IterationPrediction(
            total_ms=kernel + overhead, kernel_ms=kernel, overhead_ms=overhead,
            _breakdown=lambda: self._breakdown(spec, gpu_spec, tp, precision, from_lists(chunks, contexts)),
        )

    def bind(self, model, gpu, tp: int = 1, dtype="fp16") -> BoundPredictor:
        """A predictor fixed to one configuration, taking iteration aggregates (the simulator's hot path)."""
        spec, gpu_spec, par, precision = self._resolve(model, gpu, tp, dtype)
        return BoundPredictor(self.tables(spec, gpu_spec, par, precision), self.overhead, par.tp, spec, gpu_spec,
                              precision, par)

    def _breakdown(self, model: ModelSpec, gpu: GPUSpec, tp: ParallelConfig, precision: Precision,
                   batch: BatchShape) -> pd.DataFrame:
        from predictor.roofline import roofline

        if tp.pp > 1:  # one micro-batch's ops, each run pipeline_factor times (see kernel_ms_scalar)
            batch = batch.divided(tp.micro_batches)
        ops = build_ops(model, tp, precision, batch)
        if tp.pp > 1:
            ops["count"] = ops["count"] * tp.pipeline_factor
        pred = self.predict_ops(ops, gpu)
        table = pd.DataFrame({
            "op": ops["op"].to_numpy(), "op_kind": ops["op_kind"].to_numpy(), "count": ops["count"].to_numpy(),
            "bound": roofline(ops, gpu)["bound"].astype(str).to_numpy(),
            "roofline_ms": pred["roofline_ms"].to_numpy(), "predicted_ms": pred["predicted_ms"].to_numpy(),
        })
        table["total_ms"] = table["count"] * table["predicted_ms"]
        return table

    def predict_batch(self, model, gpu, tp: int, dtype, batch: BatchShape) -> tuple[np.ndarray, np.ndarray]:
        """Kernel and overhead time (ms arrays) of every iteration in ``batch`` for one configuration."""
        spec, gpu_spec, par, precision = self._resolve(model, gpu, tp, dtype)
        table = self.tables(spec, gpu_spec, par, precision)
        if par.pp > 1:  # the batch as micro-batches through the pipeline
            kernel = par.pipeline_factor * table.kernel_ms(batch.divided(par.micro_batches))
        else:
            kernel = table.kernel_ms(batch)
        seqs = batch.prefill_seqs + batch.decode_seqs
        overhead = (self.overhead.iteration_ms(seqs, par.gpus) if self.overhead is not NO_OVERHEAD
                    else np.zeros(len(batch)))
        return kernel, np.asarray(overhead, dtype=float) * np.ones(len(batch))

    def predict_iterations(self, iterations: pd.DataFrame) -> pd.DataFrame:
        """Many iterations at once (table lookups, vectorised per configuration).

        Parameters
        ----------
        iterations : DataFrame
            Columns ``model, gpu, tp, dtype`` and the aggregates ``prefill_tokens, prefill_attention_pairs,
            decode_seqs, decode_context_tokens`` (optional: ``prefill_seqs, prefill_kv_tokens, sample_tokens``;
            see :func:`predictor.batch.from_frame`).

        Returns
        -------
        DataFrame
            ``total_ms``, ``kernel_ms`` and ``overhead_ms`` aligned with ``iterations``.
        """
        missing = [c for c in ITERATION_KEYS if c not in iterations.columns]
        if missing:
            raise InputError(f"iterations: missing column(s) {missing}; required: {list(ITERATION_KEYS)}")
        check_iteration_keys(iterations)
        kernel = np.zeros(len(iterations))
        overhead = np.zeros(len(iterations))
        for key, idx in _configuration_groups(iterations).items():
            model, gpu, tp, dtype = key
            try:
                tp_int = int(tp)
            except ValueError:
                raise InputError(f"iterations: column 'tp' must hold integers, got {tp!r}") from None
            batch = from_frame(iterations if len(idx) == len(iterations) else iterations.iloc[idx])
            check_iteration_bounds(batch, get_model(model).max_position_embeddings, iterations.index[idx])
            k, o = self.predict_batch(model, gpu, tp_int, dtype, batch)
            kernel[idx], overhead[idx] = k, o
        return pd.DataFrame({"total_ms": kernel + overhead, "kernel_ms": kernel, "overhead_ms": overhead},
                            index=iterations.index)

    # --- static batch ---------------------------------------------------------------------------
    def estimate(self, model, gpu, tp: int = 1, dtype="fp16", batch_size: int = 1, input_len: int = 128,
                 output_len: int = 128, max_num_batched_tokens: int | None = None) -> StaticEstimate:
        """Latency of a static batch: the whole batch's prefill, then ``output_len − 1`` decode steps.

        The prefill is one iteration, or several chunks of at most ``max_num_batched_tokens`` tokens
        (prompts taken in order, a prompt split across iterations when needed). Each decode step runs
        all ``batch_size`` sequences with the context grown by one token per step.

        Returns
        -------
        StaticEstimate
            ``ttft_ms`` (end of prefill), ``tpot_ms`` (mean decode step), ``e2e_ms`` and
            ``output_tokens_per_s`` (batch_size × output_len / e2e).
        """
        for name, value, low in (("batch_size", batch_size, 1), ("input_len", input_len, 1),
                                 ("output_len", output_len, 1)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise InputError(f"{name}: must be an integer >= {low}, got {value!r}")
        if max_num_batched_tokens is not None and (isinstance(max_num_batched_tokens, bool)
                                                   or not isinstance(max_num_batched_tokens, int | np.integer)
                                                   or max_num_batched_tokens < 1):
            raise InputError(f"max_num_batched_tokens: must be a positive integer, got {max_num_batched_tokens!r}")
        check_static_batch(*self._resolve(model, gpu, tp, dtype), batch_size, input_len, output_len)
        prefill = static_prefill_batch(batch_size, input_len, max_num_batched_tokens)
        steps = output_len - 1
        contexts = input_len + np.arange(steps, dtype=float)
        b = float(batch_size)
        zeros = np.zeros(steps)
        decode = BatchShape(prefill_seqs=zeros, prefill_tokens=zeros, prefill_kv_tokens=zeros,
                            prefill_attention_pairs=zeros, prefill_score_elements=zeros,
                            decode_seqs=np.full(steps, b), decode_context_tokens=b * contexts,
                            sample_tokens=np.full(steps, b))
        k, o = self.predict_batch(model, gpu, tp, dtype, BatchShape.concat([prefill, decode]))
        times = k + o
        ttft = float(times[: len(prefill)].sum())
        decode_ms = times[len(prefill):]
        tpot = float(decode_ms.mean()) if steps else 0.0
        e2e = ttft + float(decode_ms.sum())
        return StaticEstimate(ttft_ms=ttft, tpot_ms=tpot, e2e_ms=e2e,
                              output_tokens_per_s=batch_size * output_len / (e2e / 1e3) if e2e > 0 else math.inf)


def _overhead_from_metadata(fitted: object, path: Path) -> OverheadModel:
    """The artifact's fitted overhead model, checked: finite non-negative base_ms, per_seq_ms, multi_gpu_ms."""
    allowed = ("base_ms", "per_seq_ms", "multi_gpu_ms")
    ok = isinstance(fitted, dict) and set(fitted) <= set(allowed) and all(
        not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in fitted.values())
    if not ok:
        raise InputError(f"artifact: metadata.json field 'overhead' in {str(path)!r} must map {', '.join(allowed)} to "
                         f"finite numbers >= 0, got {fitted!r}")
    return OverheadModel(**{k: float(v) for k, v in fitted.items()})


def _configuration_groups(iterations: pd.DataFrame) -> dict[tuple[str, ...], np.ndarray]:
    """Row positions of each (model, gpu, tp, dtype), the values as text; one configuration skips the grouping."""
    columns = [iterations[c] for c in ITERATION_KEYS]
    if len(iterations) and all(bool((col == col.iloc[0]).all()) for col in columns):
        return {tuple(str(col.iloc[0]) for col in columns): np.arange(len(iterations))}
    keys = iterations[list(ITERATION_KEYS)].astype(str)
    return keys.groupby(list(ITERATION_KEYS), sort=False).indices


def _chunk_lists(chunks) -> tuple[list[int], list[int]]:
    """(new_tokens, context) columns of already-validated chunks, as ints."""
    return [int(c[0]) for c in chunks], [int(c[1]) for c in chunks]


def static_prefill_batch(batch_size: int, input_len: int, budget: int | None) -> BatchShape:
    """Prefill iterations of ``batch_size`` prompts of ``input_len`` tokens under a token budget."""
    total = batch_size * input_len
    if budget is None or budget >= total:
        return from_lists([(input_len, 0)] * batch_size)
    rows = []
    done = [0] * batch_size  # tokens already prefilled per prompt
    seq = 0
    while seq < batch_size:
        room, chunks, samples = budget, [], 0
        while room > 0 and seq < batch_size:
            take = min(room, input_len - done[seq])
            chunks.append((take, done[seq]))
            done[seq] += take
            room -= take
            if done[seq] == input_len:
                samples += 1
                seq += 1
        n = np.array([c[0] for c in chunks], float)
        c = np.array([c[1] for c in chunks], float)
        rows.append((len(chunks), n.sum(), (n + c).sum(), (n * (c + n / 2)).sum(), (n * (c + n)).sum(), samples))
    arr = np.array(rows, dtype=float)
    zeros = np.zeros(len(rows))
    return BatchShape(prefill_seqs=arr[:, 0], prefill_tokens=arr[:, 1], prefill_kv_tokens=arr[:, 2],
                      prefill_attention_pairs=arr[:, 3], prefill_score_elements=arr[:, 4], decode_seqs=zeros,
                      decode_context_tokens=zeros, sample_tokens=arr[:, 5])
