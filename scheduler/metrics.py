"""Simulation results: per-request table, summary, Chrome trace and plots.

Per request: arrival, first scheduled, first token and finish times (s); TTFT = first token − arrival;
TPOT = (finish − first token) / (output tokens − 1) (NaN for one-token outputs); E2E = finish − arrival;
queueing delay = first scheduled − arrival; preemptions. Summary: p50/p90/p99 of TTFT, TPOT and E2E (ms),
output tokens/s and requests/s over the makespan, goodput (requests/s meeting both SLOs) and SLO
attainment, time-weighted mean and max KV-cache utilisation, and the batch-size distribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.atomic import atomic_path, atomic_write

STATUS = {0: "waiting", 1: "running", 2: "finished", 3: "rejected"}


def _pct(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if values.size else float("nan")


@dataclass
class SimResult:
    """Everything a simulation produced (times in seconds unless a name says ms)."""

    requests: pd.DataFrame
    iterations: pd.DataFrame
    config: dict
    num_blocks: int
    partial: bool = False
    meta: dict = field(default_factory=dict)
    tbt_counts: np.ndarray | None = None

    @classmethod
    def from_state(cls, state, log, engine, workload, partial: bool = False) -> SimResult:
        ttft = state.first_token - state.arrival
        decode_steps = state.output - 1
        tpot = np.where(decode_steps > 0, (state.finish - state.first_token) / np.maximum(decode_steps, 1), np.nan)
        requests = pd.DataFrame({
            "request_id": np.arange(len(state.arrival)),
            "arrival_s": state.arrival, "first_scheduled_s": state.first_scheduled,
            "first_token_s": state.first_token, "finish_s": state.finish,
            "prompt_tokens": state.prompt, "output_tokens": state.output,
            "ttft_s": ttft, "tpot_s": tpot, "e2e_s": state.finish - state.arrival,
            "queue_s": state.first_scheduled - state.arrival, "preemptions": state.preemptions,
            "status": pd.Categorical([STATUS[s] for s in state.status.tolist()], categories=list(STATUS.values())),
            "reject_reason": [r if r else "" for r in state.reject_reason.tolist()],
        })
        iterations = pd.DataFrame({
            "start_s": np.asarray(log.start_s, float), "duration_s": np.asarray(log.duration_s, float),
            "decode_seqs": np.asarray(log.decode_seqs, np.int64), "prefill_seqs": np.asarray(log.prefill_seqs, np.int64),
            "prefill_tokens": np.asarray(log.prefill_tokens, np.int64),
            "kv_blocks_used": np.asarray(log.kv_blocks_used, np.int64), "running": np.asarray(log.running, np.int64),
        })
        meta = {"workload": workload.name, "predictor": engine.predictor_name, "model": engine.bound.model.name,
                "gpu": engine.bound.gpu.name, "tp": engine.bound.tp, "dtype": engine.bound.precision.label,
                "max_model_len": engine.max_model_len}
        return cls(requests, iterations, engine.config.to_dict(), engine.num_blocks, partial, meta, state.tbt_counts.copy())

    # --- summary ---------------------------------------------------------------------------------
    def summary(self, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
        """Aggregate metrics (latencies in ms, rates per second of simulated time)."""
        r = self.requests
        done = r[r["status"] == "finished"]
        makespan = float(done["finish_s"].max() - r["arrival_s"].min()) if len(done) else 0.0
        out = {"requests": int(len(r)), "finished": int(len(done)),
               "rejected": int((r["status"] == "rejected").sum()), "partial": self.partial,
               "makespan_s": makespan, "iterations": int(len(self.iterations))}
        for name, col in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("e2e", "e2e_s"), ("queue", "queue_s")):
            values = done[col].to_numpy(float) * 1e3
            out[f"{name}_ms"] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                                 "p50": _pct(values, 0.5), "p90": _pct(values, 0.9), "p99": _pct(values, 0.99)}
        out["tbt_ms"] = self.tbt_percentiles()
        tokens = float(done["output_tokens"].sum())
        out["output_tokens_per_s"] = tokens / makespan if makespan > 0 else float("nan")
        out["requests_per_s"] = len(done) / makespan if makespan > 0 else float("nan")
        ok = np.ones(len(done), dtype=bool)
        if slo_ttft_ms is not None:
            ok &= done["ttft_s"].to_numpy() * 1e3 <= slo_ttft_ms
        if slo_tpot_ms is not None:
            tpot = done["tpot_s"].to_numpy() * 1e3
            ok &= np.where(np.isnan(tpot), True, tpot <= slo_tpot_ms)
        out["slo"] = {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms,
                      "attainment": float(ok.mean()) if len(done) else float("nan"),
                      "goodput_requests_per_s": float(ok.sum()) / makespan if makespan > 0 else float("nan")}
        it = self.iterations
        if len(it):
            util = it["kv_blocks_used"].to_numpy(float) / max(self.num_blocks, 1)
            w = it["duration_s"].to_numpy(float)
            batch = (it["decode_seqs"] + it["prefill_seqs"]).to_numpy(float)
            out["kv_utilization"] = {"mean": float(np.average(util, weights=w)) if w.sum() > 0 else float(util.mean()),
                                     "max": float(util.max())}
            out["batch_size"] = {"mean": float(batch.mean()), "p50": float(np.median(batch)),
                                 "p90": float(np.quantile(batch, 0.9)), "max": int(batch.max())}
        out["preemptions"] = int(r["preemptions"].sum())
        out["kv_blocks"] = int(self.num_blocks)
        out["config"] = self.config
        out["meta"] = self.meta
        return out

    def tbt_percentiles(self) -> dict:
        """p50/p90/p99 of the time between consecutive tokens of a request (ms), from the engine's histogram.

        Every decode step adds one gap per sequence (including gaps stretched by preemption or by a
        prefill iteration that paused decodes) — the per-token latency Sarathi-Serve reports as TBT.
        """
        from scheduler.engine import TBT_EDGES_S

        counts = self.tbt_counts
        if counts is None or counts.sum() == 0:
            return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "tokens": 0}
        cdf = np.cumsum(counts) / counts.sum()
        upper = np.concatenate([TBT_EDGES_S, [TBT_EDGES_S[-1]]])  # bin i holds gaps up to edge i
        return {f"p{int(q * 100)}": float(upper[np.searchsorted(cdf, q)] * 1e3) for q in (0.5, 0.9, 0.99)} | {
            "tokens": int(counts.sum())}

    # --- outputs ---------------------------------------------------------------------------------
    def write_requests(self, path: str | Path) -> Path:
        """Per-request table as Parquet (``.parquet``) or CSV (anything else), written atomically."""
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
        done = self.requests[self.requests["status"] == "finished"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
        for ax, col, title in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "TPOT", "end-to-end"), strict=True):
            v = np.sort(done[col].dropna().to_numpy() * 1e3)
            if v.size:
                ax.plot(v, np.linspace(0, 1, v.size))
            ax.set_xlabel(f"{title} (ms)")
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        paths = [out_dir / "latency_cdf.png"]
        with atomic_path(paths[0]) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        it = self.iterations
        fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
        if len(it):
            ax.plot(it["start_s"], it["decode_seqs"] + it["prefill_seqs"], lw=0.6, label="batch size (sequences)")
            ax.set_xlabel("simulated time (s)")
            ax.set_ylabel("sequences in batch")
            ax2 = ax.twinx()
            ax2.plot(it["start_s"], it["kv_blocks_used"] / max(self.num_blocks, 1), color="tab:red", lw=0.6)
            ax2.set_ylabel("KV-cache utilisation", color="tab:red")
            ax2.set_ylim(0, 1.05)
        fig.tight_layout()
        paths.append(out_dir / "batch_kv_over_time.png")
        with atomic_path(paths[1]) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return paths
