"""Rebuild the shipped kernel tables in ``data/`` from the published sources.

Run ``python -m features.build_data [--shared ../shared/data]``. Writes
``data/vidur/kernels.parquet``, ``data/aiconfigurator/kernels.parquet`` and
``data/ingest_report.json`` (rows kept and rejected per reason) and ``data/aiconfigurator/COUNTS.md``. The published files are only read.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from features.canonical import DATA_DIR, write_report, write_table
from features.schema import IngestReport

VIDUR_ROOTS = ("data/profiling", "history/6555c85", "history/021ca0c")


def build_kernel_data(shared_dir: str | Path = "../shared/data", out_dir: str | Path | None = None) -> dict:
    """Ingest Vidur and aiconfigurator kernels into ``out_dir`` and return the per-source reports."""
    import pandas as pd

    from features.ingest_aiconfigurator import load_aiconfigurator
    from features.ingest_vidur import load_vidur

    shared_dir = Path(shared_dir)
    out_dir = Path(out_dir) if out_dir is not None else DATA_DIR
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
        shutil.copyfile(shared_dir / source / "LICENSE", out_dir / source / "LICENSE")
    write_report(reports, out_dir)
    from features.aic_counts import write_counts

    write_counts(out_dir)
    return {k: v.to_dict() for k, v in reports.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default="../shared/data", help="folder holding the published sources")
    parser.add_argument("--out", default=None, help="output data folder (default: the repo's data/)")
    args = parser.parse_args()
    print(build_kernel_data(args.shared, args.out))


if __name__ == "__main__":
    main()
