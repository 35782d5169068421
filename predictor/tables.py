"""Precomputed per-iteration time tables: the scheduler's fast path.

A single LightGBM call costs ~30 µs and per-op model calls for every iteration of a simulation would
be far too slow, so for each (model, GPU, TP, precision) the predictor's kernel times are tabulated
once (built lazily, cached) over the few aggregates they depend on, and looked up afterwards:

* **token ops** — every op whose shapes depend only on the tokens T through the linear layers
  (embedding, norms, QKV/O/MLP GEMMs, RoPE, activations, adds, all-reduces, MoE): a table of the
  iteration's summed time at every integer T up to :data:`DENSE_TOKENS`, log-spaced beyond;
* **sampling ops** — lm_head, logits gather and sampling over the S sampled tokens, likewise;
* **decode attention** — a 2-D table over (decode sequences B, mean KV length per sequence);
* **prefill attention** — a 3-D table over (prefill chunks n, mean new tokens q, mean cached
  context c per chunk). Chunks are looked up at their mean shape, which is exact for equal chunks; for
  very uneven mixes (one long chunk beside short ones) the mean shape has fewer query-key pairs than
  the chunks, and the iteration is under-predicted by up to ~3% against per-op model calls.

Off-grid points are interpolated linearly in log(time) over log coordinates. Each table is made
non-decreasing along every axis (a running maximum): more tokens, sequences or context never take
less time — a physical assumption (a kernel for fewer tokens could always be padded) that also
removes the small non-monotone wiggles of a tree model. Integer token counts up to the dense limits
are looked up exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.array_cache import load_arrays, save_arrays
from predictor.batch import BatchShape
from predictor.gpus import GPUSpec
from predictor.model_spec import ModelSpec
from predictor.ops import build_ops
from predictor.parallel import ParallelConfig, as_parallel
from predictor.precision import Precision
from predictor.table_grids import (  # noqa: F401  (re-exported: grids are part of this module's API)
    DECODE_KV,
    DECODE_SEQS,
    DENSE_SAMPLES,
    DENSE_TOKENS,
    MAX_SAMPLES,
    MAX_TOKENS,
    PREFILL_CHUNKS,
    PREFILL_CONTEXT,
    PREFILL_CONTEXT_POSITIVE,
    PREFILL_TOKENS,
    _grid,
    locate,
)
from predictor.table_lookup import TableLookups

TABLE_FORMAT = 7  # 7: attention work tabulated from its ops (6: ops that do not read the KV cache carry kv_bits 16)
# Coarse op groups for efficiency reporting (work tables); attention's work has tables of its own (decode, prefill).
WORK_GROUPS = ("gemm", "moe", "elementwise", "embedding", "collective", "sampling")
_GROUP_OF = {"gemm": "gemm", "moe": "moe", "norm": "elementwise", "act": "elementwise", "add": "elementwise",
             "rope": "elementwise", "embedding": "embedding", "allreduce": "collective", "allgather": "collective",
             "alltoall": "collective", "p2p": "collective",
             "sampling": "sampling"}
WORK_FIELDS = ("predicted_ms", "roofline_ms", "flops", "bytes")  # bump when grids or table contents change: old cache files are then ignored
SAMPLE_OPS = ("lm_head", "logits_gather", "sampling")
ATTENTION_OPS = ("attn_prefill", "attn_decode")  # the classic attention ops (other phase ops: by suffix)
ATTENTION_WORK = ("roofline_ms", "flops", "bytes")  # the fields of the attention work tables


def _is_prefill(op) -> np.ndarray:
    """Ops tabulated over prefill chunk shapes: names ending in ``_prefill`` (see :mod:`predictor.op_blocks`)."""
    return np.char.endswith(np.asarray(op, dtype=str), "_prefill")


def _is_decode(op) -> np.ndarray:
    """Ops tabulated over decode batch and context: names ending in ``_decode``."""
    return np.char.endswith(np.asarray(op, dtype=str), "_decode")




def _op_names(model: ModelSpec, tp: int | ParallelConfig, precision: Precision) -> set[str]:
    """Names of every op an iteration of this configuration can have."""
    probe = BatchShape(*(np.ones(1) for _ in range(8)))
    return set(build_ops(model, tp, precision, probe)["op"])


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n)


def _running_max(values: np.ndarray) -> np.ndarray:
    """Non-decreasing along every axis."""
    out = values
    for axis in range(values.ndim):
        out = np.maximum.accumulate(out, axis=axis)
    return out


@dataclass
class IterationTables(TableLookups):
    """Tabulated kernel times of one (model, GPU, TP, precision) for a predictor (times in ms).

    Build with :meth:`build`; query with :meth:`kernel_ms` (vectorised) or :meth:`kernel_ms_scalar`.
    """

    tokens_grid: np.ndarray
    tokens_log_ms: np.ndarray
    tokens_ms: np.ndarray
    samples_grid: np.ndarray
    samples_log_ms: np.ndarray
    samples_ms: np.ndarray
    decode_log_ms: np.ndarray      # [seqs, kv]
    prefill_log_ms: np.ndarray     # [chunks, tokens, context]
    num_layers: int
    tokens_work: np.ndarray | None = None   # [token grid, WORK_GROUPS, WORK_FIELDS]
    samples_work: np.ndarray | None = None  # [sample grid, WORK_GROUPS, WORK_FIELDS]
    decode_log_work: np.ndarray | None = None   # [seqs, kv, ATTENTION_WORK]: log of the decode ops' work
    prefill_log_work: np.ndarray | None = None  # [chunks, tokens, context, ATTENTION_WORK]

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, predict_ops, model: ModelSpec, gpu: GPUSpec, tp: int | ParallelConfig,
              precision: Precision) -> IterationTables:
        """Tabulate ``predict_ops`` (a callable ``(ops, gpu) -> DataFrame`` with ``predicted_ms``)."""

        from predictor.roofline import roofline_arrays

        works = {}

        def summed(batch: BatchShape, keep, work_key: str | None = None, grouped: bool = True) -> np.ndarray:
            names = {op for op in _op_names(model, tp, precision) if keep(np.array([op], dtype=object))[0]}
            ops = build_ops(model, tp, precision, batch, only=names)
            predicted = predict_ops(ops, gpu)
            pred = predicted["predicted_ms"].to_numpy()
            it, count = ops["iteration"].to_numpy(), ops["count"].to_numpy()
            if work_key is not None:  # (per op group:) predicted and roofline time, FLOPs and bytes (Σ count ×)
                r = roofline_arrays(ops, gpu)
                values = [pred, predicted["roofline_ms"].to_numpy(), r["flops"], r["bytes"]]  # HBM bytes
                if not grouped:  # attention: roofline time, FLOPs and bytes of all its ops together
                    works[work_key] = np.stack([np.bincount(it, weights=count * v, minlength=len(batch))
                                                for v in values[1:]], axis=-1)
                    return np.bincount(it, weights=count * pred, minlength=len(batch))
                group = np.array([WORK_GROUPS.index(_GROUP_OF[k]) for k in ops["op_kind"].to_numpy(object)])
                cell = it * len(WORK_GROUPS) + group
                size = len(batch) * len(WORK_GROUPS)
                works[work_key] = np.stack([np.bincount(cell, weights=count * v, minlength=size)
                                            for v in values], axis=-1).reshape(len(batch), len(WORK_GROUPS), 4)
            return np.bincount(it, weights=count * pred, minlength=len(batch))

        tokens = _grid(DENSE_TOKENS, MAX_TOKENS, 1.02)
        zeros = _zeros(len(tokens))
        token_batch = BatchShape(prefill_seqs=np.ones_like(tokens), prefill_tokens=tokens, prefill_kv_tokens=tokens,
                                 prefill_attention_pairs=tokens, prefill_score_elements=tokens,
                                 decode_seqs=zeros, decode_context_tokens=zeros, sample_tokens=zeros)
        token_ms = summed(token_batch, lambda op: ~(_is_prefill(op) | _is_decode(op) | np.isin(op, SAMPLE_OPS)),
                          "tokens")

        samples = _grid(DENSE_SAMPLES, MAX_SAMPLES, 1.05)
        zeros = _zeros(len(samples))
        sample_batch = BatchShape(prefill_seqs=zeros, prefill_tokens=zeros, prefill_kv_tokens=zeros,
                                  prefill_attention_pairs=zeros, prefill_score_elements=zeros,
                                  decode_seqs=samples, decode_context_tokens=samples, sample_tokens=samples)
        sample_ms = summed(sample_batch, lambda op: np.isin(op, SAMPLE_OPS), "samples")

        b, kv = np.meshgrid(DECODE_SEQS, DECODE_KV, indexing="ij")
        b, kv = b.ravel(), kv.ravel()
        zeros = _zeros(len(b))
        decode_batch = BatchShape(prefill_seqs=zeros, prefill_tokens=zeros, prefill_kv_tokens=zeros,
                                  prefill_attention_pairs=zeros, prefill_score_elements=zeros,
                                  decode_seqs=b, decode_context_tokens=b * (kv - 1.0), sample_tokens=zeros)
        decode_ms = summed(decode_batch, _is_decode, "decode", grouped=False).reshape(len(DECODE_SEQS), len(DECODE_KV))

        n, q, c = np.meshgrid(PREFILL_CHUNKS, PREFILL_TOKENS, PREFILL_CONTEXT, indexing="ij")
        n, q, c = n.ravel(), q.ravel(), c.ravel()
        zeros = _zeros(len(n))
        prefill_batch = BatchShape(prefill_seqs=n, prefill_tokens=n * q, prefill_kv_tokens=n * (q + c),
                                   prefill_attention_pairs=n * q * (c + q / 2.0),
                                   prefill_score_elements=n * q * (c + q),
                                   decode_seqs=zeros, decode_context_tokens=zeros, sample_tokens=zeros)
        prefill_ms = summed(prefill_batch, _is_prefill, "prefill", grouped=False).reshape(
            len(PREFILL_CHUNKS), len(PREFILL_TOKENS), len(PREFILL_CONTEXT))

        token_ms, sample_ms = _running_max(token_ms), _running_max(sample_ms)
        decode_ms, prefill_ms = _running_max(decode_ms), _running_max(prefill_ms)
        tiny = 1e-9
        # attention's work at the grid points, from its ops (MLA's latent cache, windows, sparse top-k, linear state)
        decode_work = np.log(works["decode"] + tiny).reshape(*decode_ms.shape, len(ATTENTION_WORK))
        prefill_work = np.log(works["prefill"] + tiny).reshape(*prefill_ms.shape, len(ATTENTION_WORK))
        return cls(
            tokens_grid=tokens, tokens_log_ms=np.log(token_ms + tiny), tokens_ms=token_ms,
            samples_grid=samples, samples_log_ms=np.log(sample_ms + tiny), samples_ms=sample_ms,
            decode_log_ms=np.log(decode_ms + tiny), prefill_log_ms=np.log(prefill_ms + tiny),
            num_layers=model.num_layers, tokens_work=works["tokens"], samples_work=works["samples"],
            decode_log_work=decode_work, prefill_log_work=prefill_work,
        )

    # --- persistence (a disk cache; plain arrays, loaded without pickle) ----------------------------
    _ARRAYS = ("tokens_grid", "tokens_log_ms", "tokens_ms", "samples_grid", "samples_log_ms", "samples_ms",
               "decode_log_ms", "prefill_log_ms", "tokens_work", "samples_work", "decode_log_work",
               "prefill_log_work")

    def save(self, path: Path) -> None:
        """Write the arrays and their SHA-256 (checked by :meth:`load`) atomically."""
        save_arrays(path, {"num_layers": np.array(self.num_layers), **{k: getattr(self, k) for k in self._ARRAYS}})

    @classmethod
    def load(cls, path: Path) -> IterationTables | None:
        """A cached table, or None when the file is missing, unreadable or fails its checksum (then rebuilt)."""
        arrays = load_arrays(path, ("num_layers", *cls._ARRAYS))
        if arrays is None:
            return None
        return cls(**{k: arrays[k] for k in cls._ARRAYS}, num_layers=int(arrays["num_layers"]))

    # --- vectorised lookup -------------------------------------------------------------------------
    @staticmethod
    def _interp_1d(x: np.ndarray, grid: np.ndarray, dense: int, exact: np.ndarray, log_vals: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.zeros_like(x)
        pos = x > 0
        if not pos.any():
            return out
        xi = np.clip(x[pos], 1.0, grid[-1] * 64)
        integer = (xi <= dense) & (xi == np.floor(xi))
        res = np.empty_like(xi)
        res[integer] = exact[xi[integer].astype(np.int64) - 1]
        other = ~integer
        if other.any():
            lx = np.log(xi[other])
            lg = np.log(grid)
            inside = np.interp(lx, lg, log_vals)
            # beyond the last grid point, extrapolate with the last segment's slope
            slope = (log_vals[-1] - log_vals[-2]) / (lg[-1] - lg[-2])
            res[other] = np.exp(np.where(lx > lg[-1], log_vals[-1] + slope * (lx - lg[-1]), inside))
        out[pos] = res
        return out

    @staticmethod
    def _locate(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower cell index and weight in log coordinates (clamped to the grid): :func:`predictor.table_grids.locate`."""
        return locate(values, grid)

    def decode_ms(self, seqs: np.ndarray, kv_mean: np.ndarray) -> np.ndarray:
        """Decode attention time of one layer × layers (ms), bilinear in log space."""
        return self._decode_lookup(self.decode_log_ms, seqs, kv_mean)

    def prefill_ms(self, chunks: np.ndarray, q_mean: np.ndarray, ctx_mean: np.ndarray) -> np.ndarray:
        """Prefill attention time × layers (ms), trilinear in log space (context 0 is its own grid line)."""
        return self._prefill_lookup(self.prefill_log_ms, chunks, q_mean, ctx_mean)

    def _decode_lookup(self, table: np.ndarray, seqs, kv_mean) -> np.ndarray:
        """The log-valued decode ``table`` ([seqs, kv, fields…]) at (``seqs``, ``kv_mean``), bilinear in log space,
        proportional beyond the grids' ends; shape ``seqs.shape + fields``, zero where ``seqs`` ≤ 0."""
        seqs, kv_mean = np.asarray(seqs, float), np.asarray(kv_mean, float)
        fields = table.shape[2:]
        out = np.zeros(seqs.shape + fields)
        pos = seqs > 0
        if not pos.any():
            return out
        i, wi = self._locate(seqs[pos], DECODE_SEQS)
        j, wj = self._locate(kv_mean[pos], DECODE_KV)
        wi, wj = _per_field(wi, fields), _per_field(wj, fields)
        t = table
        val = ((1 - wi) * (1 - wj) * t[i, j] + wi * (1 - wj) * t[i + 1, j]
               + (1 - wi) * wj * t[i, j + 1] + wi * wj * t[i + 1, j + 1])
        out[pos] = (np.exp(val) * _per_field(self._beyond(seqs[pos], DECODE_SEQS), fields)
                    * _per_field(self._beyond(kv_mean[pos], DECODE_KV), fields))
        return out

    def _prefill_lookup(self, table: np.ndarray, chunks, q_mean, ctx_mean) -> np.ndarray:
        """The log-valued prefill ``table`` ([chunks, tokens, context, fields…]) at the chunks' mean shape,
        trilinear in log space (context 0 is its own grid line); zero where there is no prefill."""
        chunks, q_mean, ctx_mean = (np.asarray(a, float) for a in (chunks, q_mean, ctx_mean))
        fields = table.shape[3:]
        out = np.zeros(chunks.shape + fields)
        pos = (chunks > 0) & (q_mean > 0)
        if not pos.any():
            return out
        i, wi = self._locate(chunks[pos], PREFILL_CHUNKS)
        j, wj = self._locate(q_mean[pos], PREFILL_TOKENS)
        ctx = ctx_mean[pos]
        k, wk = self._locate(np.maximum(ctx, 1.0), PREFILL_CONTEXT_POSITIVE)
        k = k + 1
        # below one cached token: interpolate linearly between context 0 and context 1
        small = ctx < 1.0
        k = np.where(small, 0, k)
        wi, wj, wk = _per_field(wi, fields), _per_field(wj, fields), _per_field(np.where(small, ctx, wk), fields)
        t = table
        val = 0.0
        for di, a in ((0, 1 - wi), (1, wi)):
            for dj, b in ((0, 1 - wj), (1, wj)):
                for dk, c in ((0, 1 - wk), (1, wk)):
                    val = val + a * b * c * t[i + di, j + dj, k + dk]
        out[pos] = (np.exp(val) * _per_field(self._beyond(chunks[pos], PREFILL_CHUNKS), fields)
                    * _per_field(self._beyond(q_mean[pos], PREFILL_TOKENS), fields)
                    * _per_field(self._beyond(ctx, PREFILL_CONTEXT), fields))
        return out

    @staticmethod
    def _beyond(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Linear scaling for values past the grid's end (attention grows at least linearly there)."""
        return np.maximum(values / grid[-1], 1.0)

    def kernel_ms(self, batch: BatchShape) -> np.ndarray:
        """Kernel time of each iteration in ``batch`` (ms)."""
        token = self._interp_1d(batch.tokens, self.tokens_grid, DENSE_TOKENS, self.tokens_ms, self.tokens_log_ms)
        sample = self._interp_1d(batch.sample_tokens, self.samples_grid, DENSE_SAMPLES, self.samples_ms,
                                 self.samples_log_ms)
        dseqs, kv_mean, pseqs, q_mean, ctx_mean = _mean_shapes(batch)
        return token + sample + self.decode_ms(dseqs, kv_mean) + self.prefill_ms(pseqs, q_mean, ctx_mean)

    # --- work (efficiency metrics) ------------------------------------------------------------------
    @staticmethod
    def _work_1d(x: np.ndarray, grid: np.ndarray, work: np.ndarray) -> np.ndarray:
        """Work of the 1-D tables at ``x`` (linear interpolation; exact at grid points), shape (n, groups, fields)."""
        x = np.asarray(x, float)
        out = np.zeros((x.size, work.shape[1], work.shape[2]))
        pos = x > 0
        if pos.any():
            xi = np.minimum(x[pos], grid[-1])
            i = np.clip(np.searchsorted(grid, xi, side="right") - 1, 0, len(grid) - 2)
            w = np.clip((xi - grid[i]) / (grid[i + 1] - grid[i]), 0.0, 1.0)[:, None, None]
            scale = np.maximum(x[pos] / grid[-1], 1.0)[:, None, None]  # beyond the grid: proportional
            out[pos] = ((1 - w) * work[i] + w * work[i + 1]) * scale
        return out

    def attention_work(self, batch: BatchShape) -> dict[str, np.ndarray]:
        """Roofline time (ms), FLOPs and bytes (:data:`ATTENTION_WORK`, the last axis) of the decode and the prefill
        attention ops (all layers) of each iteration, at its mean shapes: the work of the ops themselves (MLA reads
        its latent cache, a window or a sparse top-k bounds the keys read, linear attention reads its state),
        tabulated on the time tables' grids and interpolated like them."""
        dseqs, kv_mean, pseqs, q_mean, ctx_mean = _mean_shapes(batch)
        return {"decode": self._decode_lookup(self.decode_log_work, dseqs, kv_mean),
                "prefill": self._prefill_lookup(self.prefill_log_work, pseqs, q_mean, ctx_mean)}

    def decode_steps_work(self, decode_seqs: int, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FLOPs, HBM bytes, roofline ms) arrays of decode-only iterations of ``decode_seqs`` sequences whose
        summed cached contexts are ``contexts`` (vectorised twin of :meth:`work_scalar`: only attention
        changes from step to step)."""
        b = decode_seqs
        f0, b0, r0 = self.work_scalar(b, b, 0, 0.0, 0, 0.0, 0.0)  # every op of the step but decode attention
        roof, flops, nbytes = self.decode_work_column(b, (np.asarray(contexts, float) + b) / b).T
        return flops + f0, nbytes + b0, roof + r0

    def work(self, batch: BatchShape) -> dict:
        """Per iteration: kernel ``predicted_ms``, ``roofline_ms``, ``flops`` and ``bytes`` by op group
        (:data:`WORK_GROUPS` plus ``attn_prefill`` and ``attn_decode``), as arrays of shape (n_iterations,).

        Group times are scaled so they add up to the table's kernel time of the iteration.
        """
        tokens = self._work_1d(batch.tokens, self.tokens_grid, self.tokens_work)
        samples = self._work_1d(batch.sample_tokens, self.samples_grid, self.samples_work)
        combined = tokens + samples
        groups = {g: {f: combined[:, k, j] for j, f in enumerate(WORK_FIELDS)} for k, g in enumerate(WORK_GROUPS)}
        attention = self.attention_work(batch)
        dseqs, kv_mean, pseqs, q_mean, ctx_mean = _mean_shapes(batch)
        for name, predicted, phase in (("attn_decode", self.decode_ms(dseqs, kv_mean), "decode"),
                                       ("attn_prefill", self.prefill_ms(pseqs, q_mean, ctx_mean), "prefill")):
            a = attention[phase]
            groups[name] = {"predicted_ms": predicted, "roofline_ms": a[:, 0], "flops": a[:, 1], "bytes": a[:, 2]}
        total = self.kernel_ms(batch)
        raw = sum(g["predicted_ms"] for g in groups.values())
        scale = np.where(raw > 0, total / np.where(raw > 0, raw, 1.0), 1.0)
        for g in groups.values():
            g["predicted_ms"] = g["predicted_ms"] * scale
        return groups

    def work_scalar(self, tokens: float, samples: float, decode_seqs: float, decode_kv_mean: float, prefill_chunks: float,
                    prefill_q_mean: float, prefill_ctx_mean: float) -> tuple[float, float, float]:
        """(FLOPs, HBM bytes, roofline ms) of one iteration, all op groups and attention, per GPU (plain
        Python for the simulator's hot path; the same values as summing :meth:`work` over its groups). The
        arguments are :meth:`kernel_ms_scalar`'s."""
        totals = self.__dict__.get("_totals")
        if totals is None:  # Σ over groups of (roofline_ms, flops, bytes) on the 1-D grids
            totals = self.__dict__["_totals"] = (self.tokens_work[:, :, 1:].sum(axis=1).tolist(),
                                                 self.samples_work[:, :, 1:].sum(axis=1).tolist())
        roof = flops = nbytes = 0.0
        for x, table, grid, dense, work in ((tokens, totals[0], self.tokens_grid, DENSE_TOKENS, self.tokens_work),
                                            (samples, totals[1], self.samples_grid, DENSE_SAMPLES, self.samples_work)):
            if x <= 0:
                continue
            if x <= dense and x == int(x):
                r, f, b = table[int(x) - 1]
            else:
                r, f, b = self._remembered("_work_memo", (grid is self.tokens_grid, x), lambda: self._work_1d(
                    np.array([x]), grid, work)[0, :, 1:].sum(axis=0).tolist())
            roof, flops, nbytes = roof + r, flops + f, nbytes + b
        if decode_seqs > 0:
            r, f, b = self.decode_work_scalar(decode_seqs, decode_kv_mean)
            roof, flops, nbytes = roof + r, flops + f, nbytes + b
        if prefill_chunks > 0 and prefill_q_mean > 0:
            r, f, b = self.prefill_work_scalar(prefill_chunks, prefill_q_mean, prefill_ctx_mean)
            roof, flops, nbytes = roof + r, flops + f, nbytes + b
        return flops, nbytes, roof


def _per_field(values: np.ndarray, fields: tuple) -> np.ndarray:
    """``values`` (one per iteration) broadcast over a table's trailing field axes (unchanged when there are none)."""
    return values.reshape(values.shape + (1,) * len(fields)) if fields else values


def _mean_shapes(batch: BatchShape) -> tuple[np.ndarray, ...]:
    """(decode sequences, mean KV per decode sequence, prefill chunks, mean new tokens and mean cached context per
    chunk) of each iteration: the coordinates of the decode and prefill tables."""
    dseqs = batch.decode_seqs
    kv_mean = np.where(dseqs > 0, batch.decode_kv_tokens / np.maximum(dseqs, 1.0), 0.0)
    pseqs = batch.prefill_seqs
    q_mean = np.where(pseqs > 0, batch.prefill_tokens / np.maximum(pseqs, 1.0), 0.0)
    ctx_mean = np.maximum(np.where(pseqs > 0, batch.prefill_kv_tokens / np.maximum(pseqs, 1.0) - q_mean, 0.0), 0.0)
    return dseqs, kv_mean, pseqs, q_mean, ctx_mean

def architecture(model: ModelSpec) -> ModelSpec:
    """The model with its name and context limit blanked: models that share shapes share tables."""
    return dataclasses.replace(model, name="", max_position_embeddings=0)


def cache_key(predictor_id: str, model: ModelSpec, gpu: GPUSpec, tp: int | ParallelConfig, precision: Precision) -> str:
    """A digest of everything a table depends on (predictor, architecture, GPU numbers, TP, precision, format)."""
    payload = {"format": TABLE_FORMAT, "predictor": predictor_id, "arch": dataclasses.asdict(architecture(model)),
               "gpu": gpu.model_dump(mode="json", exclude={"name", "description", "aliases", "source"}),
               "parallel": as_parallel(tp).to_dict(),
               "precision": dataclasses.asdict(precision)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
