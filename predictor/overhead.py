"""Per-iteration costs that are not GPU kernels: scheduling, input preparation, sampling, output handling.

Model (milliseconds per engine iteration)::

    overhead_ms = base_ms + per_seq_ms × sequences_in_batch + (multi_gpu_ms if tp > 1 else 0)

The coefficients are fitted by :func:`fit_cpu_overheads` from Vidur's CPU-overhead profiles of a
sarathi-serve/vLLM-style engine (A100 and A40 hosts, batch 8–128; ``data/vidur/cpu_overheads.parquet``):
a least-squares line of schedule + sampler + prepare-inputs + process-outputs time against batch size,
and the median Ray communication time of the multi-GPU runs. The fit is stored with the model artifact;
:data:`DEFAULT_OVERHEAD` holds the values of the shipped fit for a predictor without one. They describe
that engine family — a different serving stack has different overheads (see docs/validation.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from predictor.lazy import pandas as pd

COMPONENTS = ("schedule_ms", "sampler_ms", "prepare_inputs_ms", "process_outputs_ms")


@dataclass(frozen=True)
class OverheadModel:
    """Non-kernel time per iteration (ms).

    Attributes
    ----------
    base_ms : float
        Fixed per-iteration CPU time.
    per_seq_ms : float
        Extra CPU time per sequence in the batch.
    multi_gpu_ms : float
        Extra per-iteration time when tensor parallelism spans several GPUs (worker communication).
    """

    base_ms: float = 0.0
    per_seq_ms: float = 0.0
    multi_gpu_ms: float = 0.0

    def iteration_ms(self, num_seqs, tp: int = 1):
        """Overhead of iterations with ``num_seqs`` sequences each (scalar or array)."""
        if isinstance(num_seqs, int | float):
            if num_seqs <= 0:
                return 0.0
            return self.base_ms + self.per_seq_ms * num_seqs + (self.multi_gpu_ms if tp > 1 else 0.0)
        seqs = np.asarray(num_seqs, dtype=float)
        extra = self.multi_gpu_ms if tp > 1 else 0.0
        out = np.where(seqs > 0, self.base_ms + self.per_seq_ms * seqs + extra, 0.0)
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict:
        return asdict(self)


NO_OVERHEAD = OverheadModel()


def fit_cpu_overheads(table: pd.DataFrame) -> OverheadModel:
    """Least-squares fit of the overhead model on Vidur CPU-overhead rows.

    Parameters
    ----------
    table : DataFrame
        Columns ``batch_size``, ``tp``, ``ray_comm_ms`` and :data:`COMPONENTS` (ms per iteration).
    """
    total = table[list(COMPONENTS)].sum(axis=1).to_numpy(float)
    batch = table["batch_size"].to_numpy(float)
    slope, intercept = np.polyfit(batch, total, 1)
    multi = table.loc[table["tp"] > 1, "ray_comm_ms"]
    return OverheadModel(base_ms=float(max(intercept, 0.0)), per_seq_ms=float(max(slope, 0.0)),
                         multi_gpu_ms=float(multi.median()) if len(multi) else 0.0)
