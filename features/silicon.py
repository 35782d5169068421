"""Measured serving results as one table: aiconfigurator's silicon CSV and ``vllm bench serve`` JSON.

Both are read into :data:`COLUMNS` (one row per measured run; times in ms):

* **Silicon CSV** (the columns of ``silicon_sample_without_h200.csv``): ``id``, ``backend``,
  ``backend_version``, ``model_path``, ``system``, ``mode`` (``agg`` | ``disagg``), ``isl``, ``osl``,
  ``gemm_quant_mode``, ``moe_quant_mode``, ``batch_size`` (per attention-DP rank: the instance's clients are
  ``batch_size`` × ``attention_dp_size``), ``tp_size``,
  ``pp_size``, ``attention_dp_size``, ``moe_tp_size``, ``moe_ep_size``, ``silicon_ttft_ms``,
  ``silicon_tpot_ms``; for disaggregated rows also ``prefill_*`` / ``decode_*`` pool sizes
  (``num_workers``, ``tp_size``, ``batch_size``). A degree of 0 or empty means 1. A disaggregated row without
  ``prefill_num_workers`` or ``decode_num_workers`` (the CSV's ``source_file`` rows) is simulated with one
  worker per pool; column ``pool_workers_given`` is False for it (True for every other row).
* **vLLM bench JSON** (``vllm bench serve --save-result``; one object or a list of them). Keys read:
  ``backend`` (default ``vllm``), ``model_id``, ``max_concurrency`` (else ``num_prompts``: all at once),
  ``random_input_len`` / ``random_output_len`` (else ``total_input_tokens`` / ``total_output_tokens``
  over ``completed``), ``mean_ttft_ms``, ``mean_tpot_ms``; and, since the result file does not record
  the hardware, ``system`` (or ``gpu``), ``tensor_parallel_size`` (or ``tp_size``) and ``quantization``
  (or ``dtype``), as ``--metadata system=h100_sxm tensor_parallel_size=4`` writes them, and the layout of a
  data- or expert-parallel server under vLLM's own names: ``data_parallel_size`` (attention data parallelism
  inside the server), ``enable_expert_parallel`` (experts split over all tp × dp GPUs) or
  ``expert_parallel_size``, ``pipeline_parallel_size``; ``max_concurrency`` counts the whole server's clients.
  ``sglang.bench_serving`` results (JSON Lines, ``.jsonl``: one result per line) are read the same way; they name
  no model but record the server's arguments in ``server_info``: ``model_path``, ``tp_size`` (every GPU of the
  server), ``dp_size`` with ``enable_dp_attention`` (attention DP of tp_size / dp_size GPUs each), ``ep_size``,
  ``quantization``, ``version``. The CLI's
  ``--gpu``/``--tp`` fill them in when absent. Without ``quantization``, the run is taken at the precision its
  checkpoint ships in, as vLLM loads it (:func:`predictor.checkpoints.checkpoint_dtype`: fp8 for
  DeepSeek-V3, MXFP4 for gpt-oss; a name's ``-FP8`` / ``-NVFP4``; else bf16).

A folder is read as every ``.csv``, ``.json`` and ``.jsonl`` file directly in it (a benchmark sweep's results).

Bad input raises :class:`predictor.errors.InputError` naming the field: a CSV missing a column, a
negative or non-integer concurrency, an unknown backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.errors import InputError, unknown_name
from scheduler.engine_profiles import framework_name

CSV_REQUIRED = ("backend", "backend_version", "model_path", "system", "mode", "isl", "osl", "gemm_quant_mode",
                "moe_quant_mode", "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size",
                "moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms")
POOL_FIELDS = ("num_workers", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "batch_size")
COLUMNS = ("id", "framework", "backend_version", "model_path", "system", "mode", "isl", "osl", "gemm_quant_mode",
           "moe_quant_mode", "concurrency", "tp", "pp", "dp_attention", "moe_tp", "ep", "measured_ttft_ms",
           "measured_tpot_ms")


def _checkpoint_precision(model_id: str) -> str:
    """The precision a model id's checkpoint ships in: a catalogue name's, else one its name states, else bf16."""
    from predictor.checkpoints import checkpoint_dtype, named_dtype

    return checkpoint_dtype(model_id) or named_dtype(model_id) or "bf16"


def read_serving_results(path: str | Path, *, gpu: str | None = None, tp: int | None = None) -> pd.DataFrame:
    """Measured serving runs from a silicon CSV or a vLLM bench JSON file (see the module docstring).

    Parameters
    ----------
    path : path
        ``.csv`` (silicon schema) or ``.json`` (vLLM bench result), or a folder: every ``.csv`` and ``.json`` file
        directly in it (a benchmark sweep's results), read in name order into one table (ids that repeat across
        files are prefixed with their file's name).
    gpu, tp : optional
        System and tensor-parallel degree for JSON results that do not record them.
    """
    file = Path(path)
    if not file.exists():
        raise InputError(f"--serving: {str(file)!r} does not exist")
    if file.is_dir():
        return _from_folder(file, gpu, tp)
    if file.suffix.lower() in JSON_SUFFIXES:
        return _from_bench_json(file, gpu, tp)
    if file.suffix.lower() != ".csv":
        raise InputError(f"--serving: {str(file)!r} must end in .csv (silicon schema), .json or .jsonl (bench results)")
    return _from_silicon_csv(file)


def _from_folder(folder: Path, gpu: str | None, tp: int | None) -> pd.DataFrame:
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in (".csv", *JSON_SUFFIXES))
    if not files:
        raise InputError(f"--serving: folder {str(folder)!r} holds no .csv, .json or .jsonl file")
    tables = [read_serving_results(f, gpu=gpu, tp=tp) for f in files]
    out = pd.concat(tables, ignore_index=True)
    if out["id"].duplicated().any():
        out["id"] = [f"{f.name}:{i}" for f, t in zip(files, tables, strict=True) for i in t["id"]]
    return out


def _degree(values: pd.Series) -> np.ndarray:
    """Parallel degrees with 0 / empty meaning 1."""
    out = pd.to_numeric(values, errors="coerce").fillna(0).to_numpy(float)
    return np.where(out < 1, 1, out).astype(np.int64)


def _positive_ints(values, where: str, what: str = "") -> np.ndarray:
    """Positive integers (clients, ISL or OSL tokens) of column ``where``, else :class:`InputError` naming the row
    (``what``: the quantity, when the column's name does not say it)."""
    out = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    bad = ~np.isfinite(out) | (out < 1) | (out != np.round(out))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = pd.Series(values).iloc[i]
        shown = value.item() if isinstance(value, np.generic) else value  # 0, not np.int64(0)
        raise InputError(f"{where}: {what + ' ' if what else ''}must be a positive integer, got {shown!r} (row {i + 1})")
    return out.astype(np.int64)


MODES = ("agg", "disagg")


def _modes(values) -> pd.Series:
    """The ``mode`` column in lower case, else :class:`InputError` naming the row and the allowed values."""
    out = values.astype(str).str.strip().str.lower()
    bad = ~out.isin(MODES).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{unknown_name('mode', values.iloc[i], MODES)} (row {i + 1})")
    return out


def _frameworks(values, where: str) -> list[str]:
    out = []
    for i, value in enumerate(values):
        try:
            out.append(framework_name(value, where))
        except InputError as err:
            raise InputError(f"{err} (row {i + 1})") from None
    return out


def _from_silicon_csv(file: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(file, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"--serving: {str(file)!r} is not a readable CSV ({' '.join(str(err).split())[:100]})") from None
    missing = [c for c in CSV_REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(f"--serving: {str(file)!r} lacks column {missing[0]!r} of the silicon schema"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    conc = _silicon_concurrency(raw)
    out = pd.DataFrame({
        "id": _unique_ids(raw["id"].astype(str)) if "id" in raw else [f"row{i + 1}" for i in range(len(raw))],
        "framework": _frameworks(raw["backend"], "backend"),
        "backend_version": raw["backend_version"].fillna("unknown").astype(str),
        "model_path": raw["model_path"].astype(str), "system": raw["system"].astype(str),
        "mode": _modes(raw["mode"]),
        "isl": _positive_ints(raw["isl"], "isl"), "osl": _positive_ints(raw["osl"], "osl"),
        "gemm_quant_mode": raw["gemm_quant_mode"].fillna("bf16").astype(str),
        "moe_quant_mode": raw["moe_quant_mode"].fillna("bf16").astype(str),
        "concurrency": _positive_ints(conc, "batch_size", "concurrency (clients)"),
        "tp": _degree(raw["tp_size"]), "pp": _degree(raw["pp_size"]), "dp_attention": _degree(raw["attention_dp_size"]),
        "moe_tp": _degree(raw["moe_tp_size"]), "ep": _degree(raw["moe_ep_size"]),
        "measured_ttft_ms": pd.to_numeric(raw["silicon_ttft_ms"], errors="coerce"),
        "measured_tpot_ms": pd.to_numeric(raw["silicon_tpot_ms"], errors="coerce"),
    })
    for pool in ("prefill", "decode"):
        for name in POOL_FIELDS:
            column = f"{pool}_{name}"
            out[column] = _degree(raw[column]) if column in raw else 1
    out["pool_workers_given"] = _workers_given(raw, out["mode"])
    return out


def _workers_given(raw: pd.DataFrame, mode: pd.Series) -> np.ndarray:
    """False for a disaggregated row that gives no ``prefill_num_workers`` or ``decode_num_workers``."""
    given = np.ones(len(raw), bool)
    for pool in ("prefill", "decode"):
        column = f"{pool}_num_workers"
        given &= pd.to_numeric(raw[column], errors="coerce").notna().to_numpy() if column in raw else False
    return given | (mode != "disagg").to_numpy()


def _unique_ids(ids: pd.Series) -> pd.Series:
    """Run ids made unique (predictions join back on them): each repeat of an id gets its row number,
    ``<id>@row<n>``; the first occurrence keeps its id."""
    repeat = ids.duplicated(keep="first").to_numpy()
    if not repeat.any():
        return ids
    rows = pd.Series([f"@row{i + 1}" for i in range(len(ids))], index=ids.index)
    return ids.where(~repeat, ids + rows)


def _silicon_concurrency(raw: pd.DataFrame) -> pd.Series:
    """Clients of each run on the instance simulated. ``batch_size`` is aiconfigurator's batch per attention-DP rank,
    so an aggregated run's clients are ``batch_size`` × ``attention_dp_size`` (in the shipped CSV the harness's
    recorded concurrency is that product wherever both are given, but for runs of several replicas, where it counts
    every replica's clients). Without a batch size (disaggregated rows): the ``silicon_concurrency=N`` of
    ``silicon_data_source`` (what the harness ran), else the ``_c<N>_`` of the id, else ``decode_batch_size`` ×
    ``decode_num_workers`` × ``decode_attention_dp_size``. A ``batch_size`` that is given must be a positive integer."""
    _positive_ints(raw["batch_size"].fillna(1), "batch_size", "concurrency (clients)")  # one that is given must be valid
    conc = pd.to_numeric(raw["batch_size"], errors="coerce") * _ranks(raw, "attention_dp_size")
    gap = conc.isna()
    if gap.any() and "silicon_data_source" in raw:
        conc[gap] = pd.to_numeric(raw.loc[gap, "silicon_data_source"].astype(str)
                                  .str.extract(r"silicon_concurrency=(\d+)")[0], errors="coerce")
    gap = conc.isna()
    if gap.any() and "id" in raw:
        conc[gap] = pd.to_numeric(raw.loc[gap, "id"].astype(str).str.extract(r"_c(\d+)(?:_|$)")[0], errors="coerce")
    gap = conc.isna()
    if gap.any() and "decode_batch_size" in raw and "decode_num_workers" in raw:
        pool = (pd.to_numeric(raw["decode_batch_size"], errors="coerce")
                * pd.to_numeric(raw["decode_num_workers"], errors="coerce").fillna(1)
                * _ranks(raw, "decode_attention_dp_size"))
        conc[gap] = pool[gap]
    return conc


def _ranks(raw: pd.DataFrame, column: str):
    """A parallel degree column (:func:`_degree`; 1 when absent)."""
    return _degree(raw[column]) if column in raw else 1


JSON_SUFFIXES = (".json", ".jsonl")


def _truthy(value) -> bool:
    """A flag of a bench result (``--metadata`` writes strings)."""
    return str(value).strip().lower() in ("1", "true", "yes")


def _metadata_degree(item: dict, keys: tuple[str, ...], default: int, file: Path, i: int) -> int:
    """A parallel degree of a bench result (the first of ``keys`` present; ``--metadata`` writes strings)."""
    for key in keys:
        value = item.get(key)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not (number >= 1 and number == int(number)):
            raise InputError(f"{key}: must be a positive integer, got {value!r} ({str(file)!r} item {i + 1})")
        return int(number)
    return int(default)


def _json_items(file: Path) -> list:
    """The results of a bench file: one JSON value (an object or a list of them), else JSON Lines (one object per
    line, as ``sglang.bench_serving --output-file`` appends them)."""
    try:
        text = file.read_text()
    except UnicodeDecodeError as err:
        raise InputError(f"--serving: {str(file)!r} is not valid JSON ({' '.join(str(err).split())[:100]})") from None
    try:
        raw = json.loads(text)
        return raw if isinstance(raw, list) else [raw]
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise InputError(f"--serving: {str(file)!r} is not valid JSON "
                             f"({' '.join(str(whole).split())[:100]})") from None
        items = []
        for n, line in lines:
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"--serving: {str(file)!r} line {n} is not valid JSON "
                                 f"({' '.join(str(err).split())[:100]})") from None
        return items


def _from_bench_json(file: Path, gpu: str | None, tp: int | None) -> pd.DataFrame:
    rows = []
    for i, item in enumerate(_json_items(file)):
        if not isinstance(item, dict):
            raise InputError(f"--serving: {str(file)!r} item {i + 1} is not a JSON object")
        info = item.get("server_info") if isinstance(item.get("server_info"), dict) else {}
        if "model_id" not in item and info.get("model_path"):
            item = {**item, "model_id": info["model_path"]}
        for key in ("model_id", "mean_ttft_ms", "mean_tpot_ms"):
            if key not in item:
                raise InputError(f"--serving: {str(file)!r} item {i + 1} lacks key {key!r} of a vllm bench result"
                                 + (" (or server_info.model_path of an sglang one)" if key == "model_id" else ""))
        completed = item.get("completed") or item.get("num_prompts") or 1
        isl = item.get("random_input_len") or round(item.get("total_input_tokens", 0) / completed)
        osl = item.get("random_output_len") or round(item.get("total_output_tokens", 0) / completed)
        system = item.get("system") or item.get("gpu") or gpu
        if not system:
            raise InputError(f"--gpu: {str(file)!r} item {i + 1} does not say which GPU ran it; give --gpu "
                             f"(or save it with --metadata system=<gpu>)")
        # defaults from SGLang's server arguments: tp_size counts every GPU, with DP attention dp_size ranks of it
        server = {key: _metadata_degree(info, (key,), 1, file, i) for key in ("dp_size", "pp_size", "ep_size")}
        gpus = _metadata_degree(info, ("tp_size",), tp or 1, file, i)
        ranks = server["dp_size"] if _truthy(info.get("enable_dp_attention")) else 1
        degree = _metadata_degree(item, ("tensor_parallel_size", "tp_size"), max(gpus // ranks, 1), file, i)
        dp = _metadata_degree(item, ("data_parallel_size", "dp_size"), ranks, file, i)
        pp = _metadata_degree(item, ("pipeline_parallel_size", "pp_size"), server["pp_size"], file, i)
        experts = degree * dp if _truthy(item.get("enable_expert_parallel")) else server["ep_size"]
        ep = _metadata_degree(item, ("expert_parallel_size", "ep_size"), experts, file, i)
        # vLLM loads a checkpoint at its own precision; the result file does not say which (predictor.checkpoints)
        quant = str(item.get("quantization") or item.get("dtype") or info.get("quantization")
                    or _checkpoint_precision(str(item["model_id"])))
        rows.append({
            "id": str(item.get("id", f"{file.stem}#{i + 1}")), "framework": item.get("backend", "vllm"),
            "backend_version": str(item.get("backend_version", item.get("version", info.get("version", "unknown")))),
            "model_path": str(item["model_id"]), "system": str(system), "mode": "agg", "isl": isl, "osl": osl,
            "gemm_quant_mode": quant, "moe_quant_mode": quant,
            "concurrency": item.get("max_concurrency") or item.get("num_prompts"),
            "tp": degree, "pp": pp, "dp_attention": dp, "moe_tp": max(degree * dp // ep, 1), "ep": ep,
            "measured_ttft_ms": float(item["mean_ttft_ms"]), "measured_tpot_ms": float(item["mean_tpot_ms"]),
        })
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    out["framework"] = _frameworks(out["framework"], "backend")
    out["concurrency"] = _positive_ints(out["concurrency"], "max_concurrency")
    out["isl"] = _positive_ints(out["isl"], "random_input_len")
    out["osl"] = _positive_ints(out["osl"], "random_output_len")
    for column in ("tp", "pp", "dp_attention", "moe_tp", "ep"):
        out[column] = _degree(out[column])
    for pool in ("prefill", "decode"):
        for name in POOL_FIELDS:
            out[f"{pool}_{name}"] = 1
    out["pool_workers_given"] = True
    return out
