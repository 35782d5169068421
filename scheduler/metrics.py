"""Simulation results: per-request table, summary, Chrome trace and plots.

Per request: arrival, first scheduled, first token and finish times (s); TTFT = first token − arrival;
TPOT = (finish − first token) / (output tokens − 1) (NaN for one-token outputs); E2E = finish − arrival;
queueing delay = first scheduled − arrival; preemptions. Summary: p50/p90/p99 of TTFT, TPOT and E2E (ms),
output tokens/s and requests/s over the makespan, goodput (requests/s meeting both SLOs) and SLO
attainment, time-weighted mean and max KV-cache utilisation, KV-cache waste (reserved token slots holding no
token, time-weighted and at the peak of reservation), the batch-size distribution, and efficiency (MFU, MBU,
attained FLOP/s and bytes/s, roofline distance and bottleneck, overall, per phase and per op group: see
:mod:`scheduler.efficiency`). Per request, ``mfu``, ``mbu`` and ``roofline_distance`` are those of the
iterations it took part in (their FLOPs and bytes over their summed duration: a time-weighted mean).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from predictor.atomic import atomic_path, atomic_write, save_figure
from predictor.lazy import pandas as pd

STATUS = {0: "waiting", 1: "running", 2: "finished", 3: "rejected"}


def _pct(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if values.size else float("nan")


_BASE = {"arrival_s": "arrival", "first_scheduled_s": "first_scheduled", "first_token_s": "first_token",
         "finish_s": "finish", "prompt_tokens": "prompt", "output_tokens": "output", "preemptions": "preemptions",
         "status_code": "status", "reject_reason": "reject_reason"}
COLUMN_ORDER = ("request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "prompt_tokens",
                "output_tokens", "ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "mfu", "mbu",
                "roofline_distance", "status_code", "reject_reason")


def tpot_s(first_token_s: np.ndarray, finish_s: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Time per output token (s): (finish − first token) / (output tokens − 1); NaN for one-token outputs."""
    steps = output_tokens - 1
    return np.where(steps > 0, (finish_s - first_token_s) / np.maximum(steps, 1), np.nan)


def _derived(name: str, col, work: np.ndarray, peaks: tuple[float, float]) -> np.ndarray:
    """One derived per-request column from the base columns (``col(name)``), the work sums and the GPU peaks."""
    if name == "ttft_s":
        return col("first_token_s") - col("arrival_s")
    if name == "tpot_s":
        return tpot_s(col("first_token_s"), col("finish_s"), col("output_tokens"))
    if name == "e2e_s":
        return col("finish_s") - col("arrival_s")
    if name == "queue_s":
        return col("first_scheduled_s") - col("arrival_s")
    busy_s = np.where(work[:, 0] > 0, work[:, 0], np.nan) / 1e3
    if name == "mfu":
        return work[:, 1] / busy_s / peaks[0]
    if name == "mbu":
        return work[:, 2] / busy_s / peaks[1]
    return busy_s * 1e3 / np.where(work[:, 3] > 0, work[:, 3], np.nan)  # roofline_distance


def _work_and_peaks(state, n: int, take) -> tuple[np.ndarray, tuple[float, float]]:
    work = take(state.work) if getattr(state, "work", None) is not None else np.zeros((n, 4))
    peaks = state.peaks if getattr(state, "peaks", None) is not None else (math.nan, math.nan)
    return work, peaks


def request_columns(state, ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-request result columns (all requests, or ``ids``) from the engine's state arrays."""
    take = (lambda a: a) if ids is None else (lambda a: a[ids])
    base = {k: take(getattr(state, attr)) for k, attr in _BASE.items()}
    work, peaks = _work_and_peaks(state, len(base["arrival_s"]), take)
    rows = np.arange(len(state.arrival)) if ids is None else np.asarray(ids)
    rid = getattr(state, "rid", None)  # a windowed run's rows carry their request ids
    out = {"request_id": rows if rid is None else rid[rows]}
    for name in COLUMN_ORDER[1:]:
        out[name] = base[name] if name in base else _derived(name, base.__getitem__, work, peaks)
    return out


class RequestColumns(Mapping):
    """The per-request columns of a whole run, as :func:`request_columns` gives them, without keeping the derived
    ones: TTFT, TPOT, E2E, queueing delay, MFU, MBU and roofline distance are computed on each access from the
    engine's arrays (which this holds, uncopied). A finished run's result then costs no memory beyond the
    engine's own per-request arrays (about 70 bytes per request less at the peak of a long run)."""

    def __init__(self, state):
        self._base = {k: getattr(state, attr) for k, attr in _BASE.items()}
        self._work, self._peaks = _work_and_peaks(state, len(self._base["arrival_s"]), lambda a: a)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._base:
            return self._base[name]
        if name == "request_id":
            return np.arange(len(self._base["arrival_s"]))
        if name not in COLUMN_ORDER:
            raise KeyError(name)
        return _derived(name, self._base.__getitem__, self._work, self._peaks)

    def __iter__(self):
        return iter(COLUMN_ORDER)

    def __len__(self) -> int:
        return len(COLUMN_ORDER)


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    out = {k: v for k, v in columns.items() if k not in ("status_code", "reject_reason")}
    out["status"] = pd.Categorical.from_codes(columns["status_code"].astype(np.int8), categories=list(STATUS.values()))
    out["reject_reason"] = [r if r else "" for r in columns["reject_reason"].tolist()]
    return pd.DataFrame(out)


class RequestStream:
    """Writes finished requests to Parquet in batches during a run (bounded memory for very long runs).

    Rows go to a temporary file next to ``path``; :meth:`close` writes the requests still unfinished (when
    the run was cut short) and renames it into place, so ``path`` only ever holds a complete file.
    """

    BATCH = 65_536

    def __init__(self, path):
        from predictor.atomic import atomic_path

        self.path = Path(path)
        self._target = atomic_path(self.path)  # the project's one atomic writer: temp sibling, fsync, rename
        self.tmp = self._target.__enter__()
        self.pending: list[int] = []
        self.written: np.ndarray | None = None  # per-request flag: row already in the file
        self.writer = None
        self.rows = 0

    def add(self, state, r: int) -> None:
        self.pending.append(r)
        if len(self.pending) >= self.BATCH:
            self._flush(state)

    def _flush(self, state, ids=None) -> None:
        if self.written is None:
            self.written = np.zeros(len(state.status), bool)
        ids = np.asarray(self.pending if ids is None else ids, np.int64)
        ids = ids[~self.written[ids]]
        if ids.size == 0:
            self.pending = []
            return
        self.write(request_columns(state, ids))
        self.written[ids] = True
        self.pending = []

    def write(self, columns: dict) -> None:
        """Append rows given as columns (:func:`request_columns`); a windowed run writes each retired row once."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(_frame(columns), preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self, state, partial: bool) -> Path:
        # Every row not yet in the file, whatever its status: rejected requests, requests still waiting or
        # running when the run was cut short, finished ones still queued, and any request an interrupt caught
        # between being marked done and being queued. Each row is written exactly once.
        if self.written is None:
            self.written = np.zeros(len(state.status), bool)
        self._flush(state, np.flatnonzero(~self.written))
        return self.finish(state)

    def finish(self, state) -> Path:
        """Close the file and move it into place (an empty table, with the columns, when no row was written)."""
        if self.writer is None:
            self.write(request_columns(state, np.zeros(0, np.int64)))
        self.writer.close()
        self._target.__exit__(None, None, None)
        return self.path


def request_fields(c, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
    """The per-request entries of a summary from a run's per-request columns ``c``: counts, makespan (s),
    mean / p50 / p90 / p99 of TTFT, TPOT, E2E and queueing delay (ms) over finished requests, output tokens and
    requests per second, SLO attainment and goodput, preemptions. (A windowed run accumulates the same entries
    in :class:`scheduler.metrics_stream.RequestTotals`.)"""
    status = c["status_code"]
    done = status == 2
    arrival = c["arrival_s"]
    makespan = float(c["finish_s"][done].max() - arrival.min()) if done.any() else 0.0
    out = {"requests": int(status.size), "finished": int(done.sum()), "rejected": int((status == 3).sum()),
           "makespan_s": makespan}
    for name in ("ttft", "tpot", "e2e", "queue"):
        values = c[f"{name}_s"][done] * 1e3
        finite = values[np.isfinite(values)]
        out[f"{name}_ms"] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                             "p50": _pct(values, 0.5), "p90": _pct(values, 0.9), "p99": _pct(values, 0.99)}
    tokens = float(c["output_tokens"][done].sum())
    out["output_tokens_per_s"] = tokens / makespan if makespan > 0 else float("nan")
    out["requests_per_s"] = float(done.sum()) / makespan if makespan > 0 else float("nan")
    out["slo"] = slo_entry(slo_ttft_ms, slo_tpot_ms, slo_met(c, done, slo_ttft_ms, slo_tpot_ms), int(done.sum()),
                           makespan)
    out["preemptions"] = int(c["preemptions"].sum())
    return out


def slo_met(c, done: np.ndarray, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> int:
    """How many finished requests (mask ``done`` over columns ``c``) meet both SLOs (ms; None: no SLO; a one-token
    output, whose TPOT is NaN, meets the TPOT SLO)."""
    ok = np.ones(int(done.sum()), dtype=bool)
    if slo_ttft_ms is not None:
        ok &= c["ttft_s"][done] * 1e3 <= slo_ttft_ms
    if slo_tpot_ms is not None:
        tpot = c["tpot_s"][done] * 1e3
        ok &= np.where(np.isnan(tpot), True, tpot <= slo_tpot_ms)
    return int(ok.sum())


def slo_entry(slo_ttft_ms: float | None, slo_tpot_ms: float | None, met: int, finished: int, makespan_s: float) -> dict:
    """A summary's ``slo`` entry: the thresholds, attainment (share of finished requests meeting both) and goodput
    (requests meeting both per second of makespan)."""
    return {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms,
            "attainment": met / finished if finished else float("nan"),
            "goodput_requests_per_s": met / makespan_s if makespan_s > 0 else float("nan")}


@dataclass
class SimResult:
    """Everything a simulation produced (times in seconds unless a name says ms).

    ``columns`` holds the per-request results as arrays; :attr:`requests` turns them into a DataFrame on
    first use. ``stats`` holds KV-utilisation and batch-size statistics accumulated during the run.
    """

    columns: dict
    iteration_columns: object  # the iteration log: a dict of arrays, or a DataFrame (see :attr:`iterations`)
    config: dict
    num_blocks: int
    partial: bool = False
    meta: dict = field(default_factory=dict)
    itl_counts: np.ndarray | None = None
    stats: object = None
    efficiency_source: object = None  # the efficiency dict, or the engine's recorder (reported on first use)
    totals: object = None  # a windowed run's RequestTotals (its columns then hold no rows; see scheduler.engine_window)
    _requests: pd.DataFrame | None = None

    @property
    def efficiency(self) -> dict:
        """MFU, MBU, attained rates and bottlenecks of the run (:func:`predictor.efficiency.report`; computed on
        first use: callers that read only latencies do not pay for it)."""
        source = self.efficiency_source
        if source is None:
            return {}
        if not isinstance(source, dict):
            source = self.efficiency_source = source.report()
        return source

    @property
    def iterations(self) -> pd.DataFrame:
        """One row per logged iteration (``start_s``, ``duration_s`` in s; sequence, token and KV-block counts);
        built on first use (a run whose caller reads only its summary never imports pandas)."""
        if not isinstance(self.iteration_columns, pd.DataFrame):
            self.iteration_columns = pd.DataFrame(self.iteration_columns)
        return self.iteration_columns

    @property
    def requests(self) -> pd.DataFrame:
        if self._requests is None:
            self._requests = _frame(self.columns)
        return self._requests

    @classmethod
    def from_state(cls, state, log, engine, workload, partial: bool = False) -> SimResult:
        iterations = {
            "start_s": np.asarray(log.start_s, float), "duration_s": np.asarray(log.duration_s, float),
            "decode_seqs": np.asarray(log.decode_seqs, np.int64), "prefill_seqs": np.asarray(log.prefill_seqs, np.int64),
            "prefill_tokens": np.asarray(log.prefill_tokens, np.int64),
            "kv_blocks_used": np.asarray(log.kv_blocks_used, np.int64), "running": np.asarray(log.running, np.int64),
        }
        meta = {"workload": workload.name, "predictor": engine.predictor_name, "model": engine.bound.model.name,
                "gpu": engine.bound.gpu.name, "tp": engine.bound.tp, "dtype": engine.bound.precision.label,
                "parallel": engine.bound.parallel.to_dict(), "gpus": engine.bound.parallel.gpus,
                "max_model_len": engine.max_model_len,
                "memory": engine.memory.to_dict() if engine.memory is not None else None}
        return cls(RequestColumns(state), iterations, engine.config.to_dict(), engine.num_blocks, partial, meta,
                   state.itl_counts.copy(), engine.stats, engine.efficiency)

    # --- summary ---------------------------------------------------------------------------------
    def summary(self, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
        """Aggregate metrics (latencies in ms, rates per second of simulated time)."""
        f = (self.totals.fields(slo_ttft_ms, slo_tpot_ms) if self.totals is not None
             else request_fields(self.columns, slo_ttft_ms, slo_tpot_ms))
        out = {k: f[k] for k in ("requests", "finished", "rejected")} | {
            "partial": self.partial, "makespan_s": f["makespan_s"],
            "iterations": int(self.stats.batch_counts.sum()) if self.stats is not None else int(len(self.iterations))}
        out |= {f"{name}_ms": f[f"{name}_ms"] for name in ("ttft", "tpot", "e2e", "queue")}
        out["itl_ms"] = self.itl_percentiles()
        out |= {k: f[k] for k in ("output_tokens_per_s", "requests_per_s", "slo")}
        st = self.stats
        if st is not None and st.batch_counts.sum():
            counts = st.batch_counts
            cdf = np.cumsum(counts) / counts.sum()
            sizes = np.arange(len(counts))
            out["kv_utilization"] = {"mean": st.kv_block_seconds / st.time_s / max(self.num_blocks, 1) if st.time_s else 0.0,
                                     "max": st.kv_max / max(self.num_blocks, 1)}
            if hasattr(st, "kv_waste"):
                out["kv_waste"] = {k: float(v) for k, v in st.kv_waste().items()}
            out["batch_size"] = {"mean": float((sizes * counts).sum() / counts.sum()),
                                 "p50": float(sizes[np.searchsorted(cdf, 0.5)]), "p90": float(sizes[np.searchsorted(cdf, 0.9)]),
                                 "max": int(sizes[counts > 0].max())}
        out["preemptions"] = f["preemptions"]
        if self.efficiency:
            out["efficiency"] = self.efficiency
        out["kv_blocks"] = int(self.num_blocks)
        out["config"] = self.config
        out["meta"] = self.meta
        return out

    def itl_percentiles(self) -> dict:
        """p50/p90/p99 of the time between consecutive tokens of a request (ms), from the engine's histogram.

        Every decode step adds one gap per sequence (including gaps stretched by preemption or by a
        prefill iteration that paused decodes) — the per-token latency vLLM benchmarks report as ITL (Sarathi-Serve: TBT).
        """
        from scheduler.engine import ITL_EDGES_S

        counts = self.itl_counts
        if counts is None or counts.sum() == 0:
            return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "tokens": 0}
        cdf = np.cumsum(counts) / counts.sum()
        upper = np.concatenate([ITL_EDGES_S, [ITL_EDGES_S[-1]]])  # bin i holds gaps up to edge i
        return {f"p{int(q * 100)}": float(upper[np.searchsorted(cdf, q)] * 1e3) for q in (0.5, 0.9, 0.99)} | {
            "tokens": int(counts.sum())}

    # --- outputs ---------------------------------------------------------------------------------
    def write_requests(self, path: str | Path) -> Path:
        """Per-request table as Parquet (``.parquet``) or CSV (anything else), written atomically."""
        if self.totals is not None:
            from predictor.errors import InputError

            raise InputError("requests: a windowed run keeps no per-request rows; give run() stream_requests_to "
                             "(simulate --windowed --out) to write them as they finish")
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".parquet":
                self.requests.to_parquet(tmp, index=False)
            else:
                self.requests.to_csv(tmp, index=False)
        return path

    def chrome_trace(self, path: str | Path) -> Path:
        """One slice per iteration (Chrome trace event format; open in Perfetto or chrome://tracing)."""
        it = self.iterations
        events = [{"name": "iteration", "ph": "X", "pid": 0, "tid": 0, "ts": s * 1e6, "dur": d * 1e6,
                   "args": {"decode_seqs": int(dc), "prefill_seqs": int(ps), "prefill_tokens": int(pt),
                            "kv_blocks_used": int(kv)}}
                  for s, d, dc, ps, pt, kv in zip(it["start_s"], it["duration_s"], it["decode_seqs"], it["prefill_seqs"],
                                                  it["prefill_tokens"], it["kv_blocks_used"], strict=True)]
        meta = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": f"{self.meta.get('model')} on "
                                                                           f"{self.meta.get('gpu')}"}}]
        return atomic_write(path, json.dumps({"traceEvents": meta + events, "displayTimeUnit": "ms"}))

    def plots(self, out_dir: str | Path) -> list[Path]:
        """Latency CDFs and batch size / KV use over time (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        done = self.columns["status_code"] == 2
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
        for ax, col, title in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "TPOT", "end-to-end"), strict=True):
            if self.totals is not None:  # a windowed run: the CDF of its latency histogram
                x_ms, cdf = self.totals.cdf(col[:-2])
                if x_ms.size:
                    ax.step(x_ms, cdf, where="post")
            v = self.columns[col][done]
            v = v[np.isfinite(v)] * 1e3
            if v.size:
                ax.ecdf(v)
            ax.set_xlabel(f"{title} (ms)")
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
        paths = [save_figure(fig, out_dir / "latency_cdf.png")]
        it = self.iterations
        if not len(it):
            return paths
        fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
        if len(it):
            ax.plot(it["start_s"], it["decode_seqs"] + it["prefill_seqs"], lw=0.6, label="batch size (sequences)")
            ax.set_xlabel("simulated time (s)")
            ax.set_ylabel("sequences in batch")
            ax2 = ax.twinx()
            ax2.plot(it["start_s"], it["kv_blocks_used"] / max(self.num_blocks, 1), color="tab:red", lw=0.6)
            ax2.set_ylabel("KV-cache utilisation", color="tab:red")
            ax2.set_ylim(0, 1.05)
        paths.append(save_figure(fig, out_dir / "batch_kv_over_time.png"))
        return paths
