"""Rebuild the shipped kernel tables in ``data/`` from the published sources.

Run ``inference-sim data build [--shared ../shared/data] [--out DIR]`` (``python -m features.build_data``
with the same options does the same). Writes
``data/vidur/kernels.parquet``, ``data/aiconfigurator/kernels.parquet`` and
``data/ingest_report.json`` (rows kept and rejected per reason), ``data/aiconfigurator/COUNTS.md`` and
``data/aiconfigurator/model_configs.json.gz`` (the serving runs' model configs, :mod:`features.model_configs`). The published files are only read.
"""

from __future__ import annotations

import sys
from pathlib import Path

from features.canonical import DATA_DIR, write_report, write_table
from features.schema import IngestReport
from predictor.atomic import atomic_write
from predictor.errors import InputError

VIDUR_ROOTS = ("data/profiling", "history/6555c85", "history/021ca0c")


def build_kernel_data(shared_dir: str | Path = "../shared/data", out_dir: str | Path | None = None) -> dict:
    """Ingest Vidur and aiconfigurator kernels into ``out_dir`` and return the per-source reports."""
    import pandas as pd

    from features.ingest_aiconfigurator import load_aiconfigurator
    from features.ingest_vidur import load_vidur

    shared_dir = Path(shared_dir)
    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR
    check_shared_dir(shared_dir)
    reports = {}

    vidur_report = IngestReport()
    parts = []
    for sub in VIDUR_ROOTS:
        df, vidur_report = load_vidur(shared_dir / "vidur" / sub, vidur_report)
        parts.append(df)
    write_table(pd.concat(parts, ignore_index=True), out_dir / "vidur" / "kernels.parquet")
    reports["vidur"] = vidur_report

    aic, aic_report = load_aiconfigurator(shared_dir / "aiconfigurator" / "systems")
    write_table(aic, out_dir / "aiconfigurator" / "kernels.parquet")
    reports["aiconfigurator"] = aic_report
    for source in ("vidur", "aiconfigurator"):
        atomic_write(out_dir / source / "LICENSE", (shared_dir / source / "LICENSE").read_bytes())
    write_report(reports, out_dir)
    from features.aic_counts import write_counts
    from features.model_configs import build_model_configs

    build_model_configs(shared_dir / "aiconfigurator" / "model_configs", out_dir / "aiconfigurator" / "model_configs.json.gz")

    write_counts(out_dir)
    return {k: v.to_dict() for k, v in reports.items()}


def check_shared_dir(shared_dir: Path) -> None:
    """Raise :class:`InputError` unless ``shared_dir`` holds the published ``vidur/`` and ``aiconfigurator/``."""
    if not shared_dir.is_dir():
        raise InputError(f"--shared: folder {str(shared_dir)!r} does not exist; give the folder holding the "
                         f"published vidur/ and aiconfigurator/ sources")
    for source in ("vidur", "aiconfigurator"):
        if not (shared_dir / source).is_dir():
            raise InputError(f"--shared: {str(shared_dir)!r} has no {source}/ folder; give the folder holding the "
                             f"published vidur/ and aiconfigurator/ sources")


def main() -> None:
    """``python -m features.build_data [options]``: the same as ``inference-sim data build [options]``."""
    from inference_sim.cli import main as cli_main

    sys.exit(cli_main(["data", "build", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
