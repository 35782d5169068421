"""Reading and writing canonical kernel tables (the shipped ``data/*/kernels.parquet`` and users' files).

The shipped tables are written by :mod:`features.build_data` from the published sources; a fresh
clone reads them without ``../shared``. Parquet files are written atomically with zstd compression
and dictionary-encoded string columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features import schema
from features.schema import IngestReport
from predictor.atomic import atomic_path, atomic_write
from predictor.errors import InputError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
KERNEL_SOURCES = ("vidur", "aiconfigurator")
REPORT_FILE = "ingest_report.json"


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical table to Parquet atomically (strings as categories, zstd)."""
    out = df.copy()
    for c in schema.STRING_COLUMNS:
        out[c] = out[c].astype("category")
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False, compression="zstd")
    return Path(path)


def read_table(path: str | Path, *, validate: bool = False, field: str = "--profiles") -> pd.DataFrame:
    """Read a canonical table (Parquet or CSV); with ``validate``, drop invalid rows (see :func:`schema.validate`).

    ``field`` names the option the path came from in error messages.

    Raises
    ------
    InputError
        Missing file, a directory, an unreadable file, or missing/ill-typed columns (named).
    """
    from predictor.validate import check_regular_file

    path = check_regular_file(path, field, "a .parquet or .csv file")  # a FIFO would block the reader
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{field}: {str(path)!r} is empty") from None
    except UnicodeDecodeError:
        raise InputError(f"{field}: {str(path)!r} is not UTF-8 text (a CSV must be UTF-8)") from None
    except Exception as err:  # noqa: BLE001 — pyarrow raises many types for corrupt files
        raise InputError(f"{field}: {str(path)!r} is not a readable Parquet/CSV table ({type(err).__name__})") from None
    if df.empty:
        raise InputError(f"{field}: {str(path)!r} has no rows")
    for c in schema.STRING_COLUMNS:
        if c in df.columns:
            df[c] = df[c].astype(str).replace("nan", "")
    df = schema.add_later_columns(df)
    if validate:
        df, _ = schema.validate(df, source=str(path))
    else:
        schema.check_columns(df, str(path))
    return df


def load_kernels(data_dir: str | Path | None = None, sources: tuple[str, ...] = KERNEL_SOURCES) -> pd.DataFrame:
    """The shipped canonical kernel rows of ``sources``, concatenated."""
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    parts = []
    for source in sources:
        path = data_dir / source / "kernels.parquet"
        if not path.exists():
            raise InputError(f"data: {str(path)!r} is missing; rebuild it with `python -m features.build_data`")
        parts.append(read_table(path))
    return pd.concat(parts, ignore_index=True)


def write_report(reports: dict[str, IngestReport], data_dir: str | Path | None = None) -> Path:
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    payload = {source: rep.to_dict() for source, rep in reports.items()}
    return atomic_write(data_dir / REPORT_FILE, json.dumps(payload, indent=2) + "\n")


def read_report(data_dir: str | Path | None = None) -> dict:
    """Per-source ingestion report (kept, merged duplicates, rejected per reason) of the shipped data."""
    path = (Path(data_dir) if data_dir is not None else DATA_DIR) / REPORT_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
