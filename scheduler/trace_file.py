"""A user's request trace (CSV), read strictly: every row is a request or an error naming its line.

Columns: ``num_prefill_tokens`` and ``num_decode_tokens`` (whole tokens, 1 to
:data:`features.e2e.MAX_TRACE_TOKENS`) and optionally ``arrived_at`` (seconds from the trace start, 0 to
:data:`predictor.validate.MAX_ARRIVAL_S`; an empty cell means no arrival time). Unlike the published
traces (:func:`features.e2e.load_trace`, which drops unusable rows and reports the count), a user's file
with an empty, NaN, fractional or out-of-range token count is an error: a silently dropped row changes
the workload. Messages name the file, the column and the line, and never quote the file's text (it may
not be a trace at all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from predictor.errors import InputError
from predictor.lazy import pandas as pd
from predictor.validate import MAX_ARRIVAL_S, check_regular_file

TOKEN_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
ARRIVAL_COLUMN = "arrived_at"


def _read_text_table(path: Path, field: str) -> pd.DataFrame:
    with open(path, "rb") as fh:
        if b"\x00" in fh.read(65536):
            raise InputError(f"{field}: {str(path)!r} is binary (holds NUL bytes), expected a CSV trace")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{field}: {str(path)!r} is empty, expected a CSV header and one row per request") from None
    except pd.errors.ParserError as err:
        import re

        line = re.search(r"line (\d+)", str(err))
        where = f" at line {line.group(1)}" if line else ""
        raise InputError(f"{field}: {str(path)!r} is not a valid CSV file (parse error{where})") from None
    except UnicodeDecodeError:
        raise InputError(f"{field}: {str(path)!r} is not UTF-8 text") from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in TOKEN_COLUMNS:
        if col not in df.columns:
            raise InputError(f"{field}: {str(path)!r} has no column {col!r}; a trace needs "
                             f"{', '.join(TOKEN_COLUMNS)} (and optionally {ARRIVAL_COLUMN})")
    if df.empty:
        raise InputError(f"{field}: {str(path)!r} has a header but no requests")
    return df


def _numbers(df: pd.DataFrame, col: str, path: Path, field: str, allow_empty: bool) -> np.ndarray:
    text = df[col].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & ((text != "").to_numpy() | (not allow_empty))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(f"{field}: {str(path)!r} line {pos + 2}: column {col!r} is empty, NaN or not a number "
                         f"({int(bad.sum()):,} such rows); every request needs a value")
    return values


def read_trace_file(path: str | Path, field: str = "--trace") -> pd.DataFrame:
    """A CSV request trace as ``arrival_s`` (s, NaN without arrivals), ``prompt_tokens``, ``output_tokens``.

    Raises
    ------
    InputError
        Not a regular UTF-8 CSV file, a missing column, no rows, or a row whose token count is empty,
        NaN, fractional or outside 1 to ``MAX_TRACE_TOKENS``, or whose arrival time is not a number in
        0 to ``MAX_ARRIVAL_S`` s (the message names the line).
    """
    from features.e2e import MAX_TRACE_TOKENS

    path = check_regular_file(path, field, "a CSV trace")
    df = _read_text_table(path, field)
    tokens = {}
    for col in TOKEN_COLUMNS:
        values = _numbers(df, col, path, field, allow_empty=False)
        bad = (values != np.round(values)) | (values < 1) | (values > MAX_TRACE_TOKENS)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(f"{field}: {str(path)!r} line {pos + 2}: column {col!r} must be a whole number of "
                             f"tokens from 1 to {MAX_TRACE_TOKENS:,} ({int(bad.sum()):,} such rows)")
        tokens[col] = values.astype(np.int64)
    arrival = np.full(len(df), np.nan)
    if ARRIVAL_COLUMN in df.columns:
        arrival = _numbers(df, ARRIVAL_COLUMN, path, field, allow_empty=True)
        with np.errstate(invalid="ignore"):
            bad = np.isinf(arrival) | (arrival < 0) | (arrival > MAX_ARRIVAL_S)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(f"{field}: {str(path)!r} line {pos + 2}: column {ARRIVAL_COLUMN!r} must be a time in "
                             f"seconds within the plausible range 0 to {MAX_ARRIVAL_S:g} s")
    out = pd.DataFrame({"arrival_s": arrival, "prompt_tokens": tokens["num_prefill_tokens"],
                        "output_tokens": tokens["num_decode_tokens"]})
    out.attrs["dropped"] = {}
    return out
