"""Loaders for published end-to-end measurements, CPU overheads, request traces and workload stats.

Each loader reads one published CSV, checks its structure and applies the cleaning rules of its
source (see ``data/<source>/PROVENANCE.md``). Structural problems (missing file or column, an
empty file, text in a numeric column) raise a one-line :class:`~predictor.errors.InputError`
naming the file and, where relevant, the column. Rows that are well formed but unusable are
dropped and counted per reason; loaders that return only a frame put those counts in
``frame.attrs["dropped"]``.

Sources
-------
* Splitwise ``perf_model.csv``: whole-model serving runs (TTFT of a batch, time per output token).
* Vidur ``cpu_overheads.csv``: CPU-side engine overheads per scheduler iteration.
* Vidur ``processed_traces/*.csv``: request traces (arrival time, prompt and output lengths).
* SamuLLM ``output_lengths.csv`` and ``model_init_costs.csv``: output-length distributions and
  engine start-up times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from predictor.errors import InputError
from predictor.gpus import get_gpu
from predictor.lazy import pandas as pd
from predictor.models import resolve_model_name

# --- Splitwise --------------------------------------------------------------------------------
SPLITWISE_REQUIRED = (
    "model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size",
    "prompt_time", "token_time", "e2e_time",
)
SPLITWISE_KEYS = ("model", "gpu", "tp", "prompt_size", "batch_size", "token_size")
SPLITWISE_COLUMNS = (*SPLITWISE_KEYS, "prompt_time_ms", "token_time_ms", "e2e_time_ms", "repeats")
#: Splitwise hardware label → catalogue GPU. ``h100-80gb-pcap`` is deliberately absent (derived rows).
SPLITWISE_HARDWARE = {"a100-80gb": "a100-80gb", "h100-80gb": "h100-sxm"}
SPLITWISE_DERIVED_HARDWARE = ("h100-80gb-pcap",)
#: Output lengths above this make the published e2e_time unreliable (generation stopped early).
SPLITWISE_E2E_MAX_TOKENS = 128
SPLITWISE_DROP_REASONS = (
    "derived_not_measured", "unknown_hardware", "unsupported_model", "kv_overflow_anomaly", "invalid_value",
)

# --- Vidur CPU overheads ----------------------------------------------------------------------
#: Upstream column → our column (ms per scheduler iteration).
CPU_OVERHEAD_SOURCE_COLUMNS = {
    "schedule_median": "schedule_ms",
    "sampler_e2e_median": "sampler_ms",
    "prepare_inputs_e2e_median": "prepare_inputs_ms",
    "process_model_outputs_median": "process_outputs_ms",
    "ray_comm_time_mean": "ray_comm_ms",
}
CPU_OVERHEAD_COLUMNS = ("gpu", "model", "batch_size", "tp", *CPU_OVERHEAD_SOURCE_COLUMNS.values())
#: Vidur profiling folder name → catalogue GPU.
VIDUR_GPU_FOLDERS = {"a100": "a100-80gb", "a40": "a40", "h100": "h100-sxm"}

# --- traces and SamuLLM -----------------------------------------------------------------------
TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
#: Largest token count a trace row may hold (the same limit as prompts and outputs elsewhere).
MAX_TRACE_TOKENS = 10_000_000
OUTPUT_LENGTH_COLUMNS = ("model", "output_len", "prob", "max_model_len")
INIT_COST_COLUMNS = ("model_path", "model", "tp", "init_cost_s")
#: Largest allowed |sum(prob) - 1| per model before re-normalising an output-length distribution.
PROB_SUM_TOLERANCE = 1e-6


# --- shared helpers ---------------------------------------------------------------------------
def read_csv_checked(path: str | Path, required: Iterable[str]) -> pd.DataFrame:
    """Read a CSV and check that it has data rows and every ``required`` column.

    Parameters
    ----------
    path : str or Path
        CSV file.
    required : iterable of str
        Column names that must be present (surrounding whitespace in the header is ignored).

    Returns
    -------
    pandas.DataFrame
        The file as read, with stripped column names.

    Raises
    ------
    InputError
        The file is missing, is a directory, is empty or unreadable, has no data rows, or lacks a
        required column (the first missing one is named).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")
    try:
        df = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty, expected a CSV header and data rows") from None
    except pd.errors.ParserError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "parse error"
        raise InputError(f"{path}: not a valid CSV file ({first})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            found = ", ".join(c for c in df.columns if not c.startswith("Unnamed")) or "none"
            raise InputError(f"{path}: missing required column {col!r}; found columns: {found}")
    if df.empty:
        raise InputError(f"{path}: no data rows (only a header)")
    return df


def numeric_columns(df: pd.DataFrame, columns: Iterable[str], path: str | Path) -> pd.DataFrame:
    """Convert ``columns`` to float64, rejecting text that is not a number.

    Empty cells become NaN (callers decide whether to drop them). Any other value that is not a
    number raises an :class:`InputError` naming the file, the column, the value and its line.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with the given columns as float64.
    """
    out = df.copy()
    for col in columns:
        raw = out[col]
        if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
            out[col] = raw.astype("float64")
            continue
        conv = pd.to_numeric(raw, errors="coerce")
        text = raw.astype("string").str.strip()
        bad = conv.isna() & raw.notna() & text.ne("").fillna(False)
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy(dtype=bool))[0])
            raise InputError(
                f"{path}: column {col!r} has a non-numeric value {raw.iloc[pos]!r} at line {pos + 2}"
            )
        out[col] = conv.astype("float64")
    return out


def _whole_positive(values: pd.Series) -> pd.Series:
    """Mask of finite values that are whole numbers >= 1."""
    v = values.to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (v >= 1) & (np.floor(v) == v)
    return pd.Series(ok, index=values.index)


def _positive(values: pd.Series) -> pd.Series:
    """Mask of finite values > 0."""
    v = values.to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (v > 0)
    return pd.Series(ok, index=values.index)


def _catalogue_name(raw: str) -> str | None:
    """Catalogue name for ``raw``, trying the part after the last ``/`` when the full id is unknown.

    The fallback covers upstream files that put a model under another organisation's prefix
    (e.g. ``meta-llama/CodeLlama-34b-Instruct-hf`` for ``codellama/CodeLlama-34b-Instruct-hf``).
    """
    name = resolve_model_name(raw)
    if name is None and "/" in raw:
        name = resolve_model_name(raw.rsplit("/", 1)[1])
    return name


def _resolve_names(names: pd.Series, unknown: str | None) -> pd.Series:
    """Catalogue name for each raw model name; ``unknown`` (or the raw name when None) otherwise."""
    uniq = {n: _catalogue_name(str(n)) for n in names.unique()}
    mapped = names.map(uniq)
    return mapped.fillna(names if unknown is None else unknown).astype(object)


# --- Splitwise --------------------------------------------------------------------------------
def load_splitwise(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Load SplitwiseSim's ``perf_model.csv`` as one row per measured configuration.

    Cleaning, applied in this order to the raw rows (each drop counted once, under its reason):

    ``derived_not_measured``
        ``h100-80gb-pcap`` rows: prompt times are a fixed 1.3x scaling of the H100 rows and the
        other times are copies, so they are not independent measurements.
    ``unknown_hardware``
        A hardware label other than ``a100-80gb`` (→ ``a100-80gb``) or ``h100-80gb`` (→ ``h100-sxm``).
    ``unsupported_model``
        A model the catalogue cannot represent (``bloom-176b``).
    ``kv_overflow_anomaly``
        Llama-2-70B at TP2 with batch 64: the batch did not fit in the KV cache, so the times
        include queueing and are not comparable.
    ``invalid_value``
        A size (TP, prompt, batch, output tokens) that is not a whole number >= 1, or a prompt or
        token time that is missing or not > 0.

    The remaining rows are grouped by configuration and each time is the median of the repeats.
    ``e2e_time_ms`` is set to NaN where ``token_size > 128`` (upstream runs stopped early there);
    a non-positive e2e time also becomes NaN.

    Parameters
    ----------
    path : str or Path
        ``perf_model.csv``.

    Returns
    -------
    frame : pandas.DataFrame
        Columns ``model`` (catalogue name), ``gpu`` (catalogue name), ``tp``, ``prompt_size``
        (tokens per request), ``batch_size`` (requests), ``token_size`` (output tokens per request),
        ``prompt_time_ms`` (prefill of the whole batch = TTFT of the batch, ms), ``token_time_ms``
        (time per generation iteration = TPOT, ms), ``e2e_time_ms`` (request latency, ms; NaN where
        unreliable) and ``repeats`` (raw rows behind the medians). Sorted by the key columns.
    info : dict
        ``input_rows``, ``kept_rows`` (raw rows aggregated), ``output_rows``,
        ``e2e_masked_rows`` (output rows whose e2e was set to NaN) and ``dropped``
        (reason → raw rows, every reason listed).

    Raises
    ------
    InputError
        Missing file or column, empty file, or a non-numeric value in a numeric column.
    """
    df = read_csv_checked(path, SPLITWISE_REQUIRED)
    nums = ("tensor_parallel", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time", "e2e_time")
    df = numeric_columns(df, nums, path)
    df["model"] = df["model"].astype("string").str.strip().fillna("")
    hardware = df["hardware"].astype("string").str.strip().str.lower().fillna("")
    dropped = dict.fromkeys(SPLITWISE_DROP_REASONS, 0)
    n_input = len(df)

    keep = pd.Series(True, index=df.index)

    def drop(reason: str, mask: pd.Series) -> None:
        hit = keep & mask
        dropped[reason] += int(hit.sum())
        keep[hit] = False

    drop("derived_not_measured", hardware.isin(SPLITWISE_DERIVED_HARDWARE))
    drop("unknown_hardware", ~hardware.isin(list(SPLITWISE_HARDWARE)))
    resolved = _resolve_names(df["model"].astype(object), unknown="")
    drop("unsupported_model", resolved.eq(""))
    drop(
        "kv_overflow_anomaly",
        resolved.eq("llama-2-70b") & df["tensor_parallel"].eq(2) & df["batch_size"].eq(64),
    )
    sizes_ok = np.logical_and.reduce(
        [_whole_positive(df[c]) for c in ("tensor_parallel", "prompt_size", "batch_size", "token_size")]
    )
    times_ok = _positive(df["prompt_time"]) & _positive(df["token_time"])
    drop("invalid_value", ~(sizes_ok & times_ok))

    kept = pd.DataFrame({
        "model": resolved[keep],
        "gpu": hardware[keep].map(SPLITWISE_HARDWARE).astype(object),
        "tp": df.loc[keep, "tensor_parallel"].astype("int64"),
        "prompt_size": df.loc[keep, "prompt_size"].astype("int64"),
        "batch_size": df.loc[keep, "batch_size"].astype("int64"),
        "token_size": df.loc[keep, "token_size"].astype("int64"),
        "prompt_time_ms": df.loc[keep, "prompt_time"],
        "token_time_ms": df.loc[keep, "token_time"],
        "e2e_time_ms": df.loc[keep, "e2e_time"].where(_positive(df.loc[keep, "e2e_time"])),
    })
    grouped = kept.groupby(list(SPLITWISE_KEYS), sort=True)
    out = grouped[["prompt_time_ms", "token_time_ms", "e2e_time_ms"]].median()
    out["repeats"] = grouped.size().astype("int64")
    out = out.reset_index()
    masked = out["token_size"] > SPLITWISE_E2E_MAX_TOKENS
    out.loc[masked, "e2e_time_ms"] = np.nan
    out = out[list(SPLITWISE_COLUMNS)].reset_index(drop=True)
    info = {
        "input_rows": n_input,
        "kept_rows": int(keep.sum()),
        "output_rows": len(out),
        "e2e_masked_rows": int(masked.sum()),
        "dropped": dropped,
    }
    return out, info


# --- Vidur CPU overheads ----------------------------------------------------------------------
def _gpu_from_folder(path: Path) -> str:
    folder = path.parent.name.lower()
    if folder in VIDUR_GPU_FOLDERS:
        return VIDUR_GPU_FOLDERS[folder]
    try:
        return get_gpu(folder).name
    except InputError:
        raise InputError(
            f"{path}: cannot infer the GPU from folder {path.parent.name!r}; pass gpus=... "
            f"(known folders: {', '.join(VIDUR_GPU_FOLDERS)})"
        ) from None


def _gpu_name(name: str, path: Path) -> str:
    key = VIDUR_GPU_FOLDERS.get(str(name).lower(), str(name))
    try:
        return get_gpu(key).name
    except InputError as err:
        raise InputError(f"{path}: gpu {name!r}: {err}") from None


def load_cpu_overheads(
    paths: str | Path | Sequence[str | Path],
    gpus: str | Sequence[str | None] | Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Load Vidur ``cpu_overheads.csv`` files (the 2024-05 schema) into one tidy frame.

    Parameters
    ----------
    paths : path or sequence of paths
        One or more ``cpu_overheads.csv`` files.
    gpus : str, sequence, mapping or None
        GPU of each file: one name for all files, one per path (``None`` entries are inferred), or
        a mapping path → name. Names may be catalogue names, aliases or Vidur folder names
        (``a100`` → ``a100-80gb``). When not given, the GPU comes from the file's folder name.

    Returns
    -------
    pandas.DataFrame
        Columns ``gpu`` (catalogue name), ``model`` (catalogue name, or the raw HF id when the
        catalogue lacks it), ``batch_size`` (requests in the iteration), ``tp``, and the per-
        iteration overheads in ms: ``schedule_ms``, ``sampler_ms``, ``prepare_inputs_ms``,
        ``process_outputs_ms`` (medians over iterations) and ``ray_comm_ms`` (mean; the only
        statistic published). Rows with a missing or negative overhead, or a batch size or TP that
        is not a whole number >= 1, are dropped; ``attrs["dropped"]`` counts them as
        ``invalid_value``. Sorted by gpu, model, tp, batch_size.

    Raises
    ------
    InputError
        Missing file or column, empty file, non-numeric value, or a GPU that cannot be determined.
    """
    path_list = [paths] if isinstance(paths, str | Path) else list(paths)
    if not path_list:
        raise InputError("cpu overheads: no files given")
    if gpus is None or isinstance(gpus, str):
        gpu_list = [gpus] * len(path_list)
    elif isinstance(gpus, Mapping):
        by_path = {str(Path(k)): v for k, v in gpus.items()}
        gpu_list = [by_path.get(str(Path(p))) for p in path_list]
    else:
        gpu_list = list(gpus)
        if len(gpu_list) != len(path_list):
            raise InputError(f"cpu overheads: {len(path_list)} files but {len(gpu_list)} GPU names")

    required = ("model_name", "batch_size", "tensor_parallel_degree", *CPU_OVERHEAD_SOURCE_COLUMNS)
    frames, invalid = [], 0
    for raw_path, gpu in zip(path_list, gpu_list):
        path = Path(raw_path)
        gpu_name = _gpu_name(gpu, path) if gpu else _gpu_from_folder(path)
        df = read_csv_checked(path, required)
        df = numeric_columns(df, ("batch_size", "tensor_parallel_degree", *CPU_OVERHEAD_SOURCE_COLUMNS), path)
        values = df[list(CPU_OVERHEAD_SOURCE_COLUMNS)].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            values_ok = (np.isfinite(values) & (values >= 0)).all(axis=1)
        ok = values_ok & _whole_positive(df["batch_size"]) & _whole_positive(df["tensor_parallel_degree"])
        invalid += int((~ok).sum())
        df = df[ok]
        names = df["model_name"].astype("string").str.strip().fillna("").astype(object)
        frame = pd.DataFrame({
            "gpu": gpu_name,
            "model": _resolve_names(names, unknown=None),
            "batch_size": df["batch_size"].astype("int64"),
            "tp": df["tensor_parallel_degree"].astype("int64"),
        })
        for src, dst in CPU_OVERHEAD_SOURCE_COLUMNS.items():
            frame[dst] = df[src]
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["gpu", "model", "tp", "batch_size"], kind="stable").reset_index(drop=True)
    out = out[list(CPU_OVERHEAD_COLUMNS)]
    out.attrs["dropped"] = {"invalid_value": invalid}
    return out


# --- request traces ---------------------------------------------------------------------------
def load_trace(path: str | Path) -> pd.DataFrame:
    """Load a Vidur processed request trace.

    Parameters
    ----------
    path : str or Path
        CSV with ``num_prefill_tokens`` and ``num_decode_tokens`` (tokens) and optionally
        ``arrived_at`` (seconds from the start of the trace; finite and >= 0 wherever given).

    Returns
    -------
    pandas.DataFrame
        Columns ``arrival_s`` (float seconds; NaN when the file has no arrivals), ``prompt_tokens``
        and ``output_tokens`` (int64, >= 1), in file order. Rows whose token counts are missing, not
        whole numbers, < 1 or > :data:`MAX_TRACE_TOKENS` are dropped; ``attrs["dropped"]`` counts them
        as ``invalid_tokens``.

    Raises
    ------
    InputError
        Missing file or column, empty file, a non-numeric value, or an arrival time that is negative
        or infinite.
    """
    df = read_csv_checked(path, ("num_prefill_tokens", "num_decode_tokens"))
    has_arrivals = "arrived_at" in df.columns
    nums = ("num_prefill_tokens", "num_decode_tokens", *(("arrived_at",) if has_arrivals else ()))
    df = numeric_columns(df, nums, path)
    ok = _whole_positive(df["num_prefill_tokens"]) & _whole_positive(df["num_decode_tokens"])
    # beyond any context window (and beyond int64 when cast): unusable, like a missing count
    ok &= (df["num_prefill_tokens"] <= MAX_TRACE_TOKENS) & (df["num_decode_tokens"] <= MAX_TRACE_TOKENS)
    if has_arrivals:  # a negative or infinite arrival time is corrupt (an empty cell stays NaN: no arrival)
        arrivals = df["arrived_at"].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            bad_arrival = np.isinf(arrivals) | (arrivals < 0)
        if bad_arrival.any():
            pos = int(np.flatnonzero(bad_arrival)[0])
            raise InputError(f"{path}: column 'arrived_at' must hold finite times >= 0 (seconds), got "
                             f"{float(df['arrived_at'].iloc[pos])!r} at line {pos + 2}")
    df = df[ok]
    out = pd.DataFrame({
        "arrival_s": df["arrived_at"] if has_arrivals else np.full(len(df), np.nan),
        "prompt_tokens": df["num_prefill_tokens"].astype("int64"),
        "output_tokens": df["num_decode_tokens"].astype("int64"),
    }).reset_index(drop=True)
    out.attrs["dropped"] = {"invalid_tokens": int((~ok).sum())}
    return out


# --- SamuLLM ----------------------------------------------------------------------------------
def _effective_rows(df: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    df = numeric_columns(df, ("effective",), path)
    eff = df[df["effective"] == 1]
    if eff.empty:
        raise InputError(f"{path}: column 'effective' marks no row as 1 (nothing to load)")
    return eff


def load_output_lengths(path: str | Path) -> pd.DataFrame:
    """Load SamuLLM's per-model output-length distributions (``output_lengths.csv``).

    Only rows with ``effective == 1`` (the values upstream's sampler uses) are kept. For each model
    the probabilities must already sum to 1 within 1e-6; they are then divided by their sum so they
    sum to 1 to float precision.

    Parameters
    ----------
    path : str or Path
        CSV with ``model, output_len, prob, max_model_len, effective``.

    Returns
    -------
    pandas.DataFrame
        Columns ``model`` (raw upstream name, e.g. ``Llama-2-7b-chat-hf``), ``output_len`` (output
        tokens, int64, 1..max_model_len), ``prob`` (probability of that length) and
        ``max_model_len`` (context limit = output cap in tokens; its bin holds the mass of requests
        that never emitted EOS). Sorted by model and output_len.

    Raises
    ------
    InputError
        Missing file or column, empty file, non-numeric value, no effective rows, a missing or
        negative probability, a length outside 1..max_model_len, a repeated (model, output_len),
        or a model whose probabilities do not sum to 1 within 1e-6.
    """
    df = read_csv_checked(path, ("model", *OUTPUT_LENGTH_COLUMNS[1:], "effective"))
    df = _effective_rows(df, path)
    df = numeric_columns(df, ("output_len", "prob", "max_model_len"), path)
    model = df["model"].astype("string").str.strip().fillna("").astype(object)
    if model.eq("").any():
        raise InputError(f"{path}: column 'model' has an empty value")
    prob = df["prob"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        if not (np.isfinite(prob) & (prob >= 0)).all():
            raise InputError(f"{path}: column 'prob' has a missing or negative value")
    if not (_whole_positive(df["output_len"]) & _whole_positive(df["max_model_len"])).all():
        raise InputError(f"{path}: columns 'output_len' and 'max_model_len' must be whole numbers >= 1")
    if (df["output_len"] > df["max_model_len"]).any():
        raise InputError(f"{path}: column 'output_len' exceeds 'max_model_len' in some rows")
    out = pd.DataFrame({
        "model": model,
        "output_len": df["output_len"].astype("int64"),
        "prob": df["prob"],
        "max_model_len": df["max_model_len"].astype("int64"),
    })
    if out.duplicated(["model", "output_len"]).any():
        first = out.loc[out.duplicated(["model", "output_len"]), "model"].iloc[0]
        raise InputError(f"{path}: model {first!r} lists the same output_len more than once among effective rows")
    if (out.groupby("model")["max_model_len"].nunique() > 1).any():
        raise InputError(f"{path}: column 'max_model_len' differs within a model")
    totals = out.groupby("model")["prob"].transform("sum")
    off = (totals - 1.0).abs() > PROB_SUM_TOLERANCE
    if off.any():
        name = out.loc[off, "model"].iloc[0]
        raise InputError(
            f"{path}: probabilities of model {name!r} sum to {totals[off].iloc[0]:.9g}, not 1 "
            f"(tolerance {PROB_SUM_TOLERANCE:g})"
        )
    out["prob"] = out["prob"] / totals
    return out.sort_values(["model", "output_len"], kind="stable").reset_index(drop=True)


def load_model_init_costs(path: str | Path) -> pd.DataFrame:
    """Load SamuLLM's measured vLLM engine start-up times (``model_init_costs.csv``).

    Only rows with ``effective == 1`` are kept. Should a (model_path, tp) pair still appear more
    than once, the last row wins (upstream's sequential dict updates) and the earlier ones count as
    ``superseded_duplicate``; rows whose TP is not a whole number >= 1 or whose cost is missing
    or not > 0 count as ``invalid_value`` in ``attrs["dropped"]``.

    Parameters
    ----------
    path : str or Path
        CSV with ``model_path, tp_size, init_cost_s, effective``.

    Returns
    -------
    pandas.DataFrame
        Columns ``model_path`` (HF id as measured), ``model`` (catalogue name, or ``""`` when the
        catalogue lacks it), ``tp`` (int64) and ``init_cost_s`` (seconds to construct the engine:
        weight loading, memory profiling and KV-cache allocation). Sorted by model_path and tp.

    Raises
    ------
    InputError
        Missing file or column, empty file, non-numeric value, or no effective rows.
    """
    df = read_csv_checked(path, ("model_path", "tp_size", "init_cost_s", "effective"))
    df = _effective_rows(df, path)
    df = numeric_columns(df, ("tp_size", "init_cost_s"), path)
    names = df["model_path"].astype("string").str.strip().fillna("").astype(object)
    ok = _whole_positive(df["tp_size"]) & _positive(df["init_cost_s"]) & names.ne("")
    out = pd.DataFrame({
        "model_path": names[ok],
        "model": _resolve_names(names[ok], unknown=""),
        "tp": df.loc[ok, "tp_size"].astype("int64"),
        "init_cost_s": df.loc[ok, "init_cost_s"],
    })
    dup = out.duplicated(["model_path", "tp"], keep="last")
    out = out[~dup].sort_values(["model_path", "tp"], kind="stable").reset_index(drop=True)
    out.attrs["dropped"] = {"invalid_value": int((~ok).sum()), "superseded_duplicate": int(dup.sum())}
    return out
