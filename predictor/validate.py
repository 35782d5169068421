"""One validation layer for the API, CLI and file boundaries: the limits they check, in one place.

Every check raises :class:`~predictor.errors.InputError` with one line naming the field (or file, column
and row) and the limit, never a zero, a NaN or a silently clipped value. The limits:

* **files** (``--model`` config.json, traces, YAML): a regular file (a FIFO, socket or device would block
  or never end), at most :data:`MAX_CONFIG_BYTES` for a config.json, JSON nested within Python's recursion
  limit. Messages name the file but never echo its contents.
* **iteration aggregates** (:meth:`Predictor.predict_iterations`): ``model, gpu, tp, dtype`` present on
  every row; no empty row (no prefill token and no decode sequence); ``prefill_attention_pairs`` within
  ``[prefill_tokens² / (2 · prefill_seqs), prefill_tokens × max_context]`` (each chunk of ``n`` new tokens
  after ``c`` cached ones has ``n·(c + n/2)`` pairs and ``c + n <= max_context``); ``decode_context_tokens``
  at most ``decode_seqs × (max_context − 1)``; whole numbers of sequences.
* **context length**: a prefill chunk's ``context + new`` tokens and a decode step's ``context + 1``
  tokens fit the model's ``max_position_embeddings``; a static batch's ``input_len + output_len`` too.
* **KV capacity**: a static batch's ``batch_size`` sequences of ``input_len + output_len`` tokens fit the
  KV cache of the default memory plan (:func:`predictor.memory.plan_memory`: 90% of GPU memory, 8,192-token
  activation workspace, 16-token blocks).
* **arrivals**: rates within [:data:`MIN_RATE_PER_S`, :data:`MAX_RATE_PER_S`] requests/s and arrival times
  within [0, :data:`MAX_ARRIVAL_S`] s (beyond ~1e9 s a float64 clock loses sub-microsecond resolution, and
  at 1e300 s adding a millisecond changes nothing: latencies would read 0 ms).
* **quantized checkpoints**: a config.json with ``quantization_config`` is detected
  (:func:`detect_quantization`); the CLI costs it at those bits when ``--dtype`` is not given, and warns
  once on stderr when ``--dtype`` contradicts it; the Python API warns once per file
  (:class:`QuantizationWarning`) since its ``dtype`` argument always has a value.
* **JSON output**: NaN and infinities become ``null`` with a reason (:func:`json_safe`).
"""

from __future__ import annotations

import json
import math
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.errors import InputError

MAX_CONFIG_BYTES = 10_000_000
MAX_ARRIVAL_S = 1e9
MIN_RATE_PER_S = 1e-6
MAX_RATE_PER_S = 1e9
ITERATION_KEYS = ("model", "gpu", "tp", "dtype")


# --- files ----------------------------------------------------------------------------------------
def check_regular_file(path: str | Path, field: str, what: str = "a file") -> Path:
    """``path`` as a :class:`Path` after checking it is an existing regular file (not a folder, FIFO, …)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{field}: file {str(path)!r} does not exist") from None
    except OSError as err:
        raise InputError(f"{field}: cannot read {str(path)!r} ({err.strerror or type(err).__name__})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{field}: {str(path)!r} is a directory, expected {what}")
    if not stat.S_ISREG(mode):
        raise InputError(f"{field}: {str(path)!r} is not a regular file (a FIFO, socket or device), expected {what}")
    return path


def read_json_file(path: str | Path, field: str, max_bytes: int = MAX_CONFIG_BYTES) -> object:
    """Parse a JSON file given by a user; one-line errors that name ``path`` but quote none of its text.

    Raises
    ------
    InputError
        Not a regular file, over ``max_bytes``, not UTF-8, not JSON, or nested too deep to parse.
    """
    path = check_regular_file(path, field, "a JSON file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{field}: {str(path)!r} is {size:,} bytes, over the {max_bytes:,}-byte limit for a config.json")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{field}: {str(path)!r} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{field}: {str(path)!r} is not valid JSON (line {err.lineno}: {err.msg})") from None
    except RecursionError:
        raise InputError(f"{field}: {str(path)!r} is nested too deeply to be a config.json") from None


def check_artifact_path(path: object) -> None:
    """``Predictor.load``'s ``path``: None, a str or an os.PathLike (a folder or an MLflow URI)."""
    import os

    if path is not None and not isinstance(path, str | os.PathLike):
        raise InputError(f"path: expected an artifact folder (str or Path) or an MLflow URI (models:/…, runs:/…), "
                         f"got {type(path).__name__}")
    if isinstance(path, str) and (not path.strip() or "\x00" in path):
        raise InputError(f"path: expected an artifact folder or an MLflow URI, got {path!r}")


# --- quantized checkpoints ------------------------------------------------------------------------
class QuantizationWarning(UserWarning):
    """A config.json declares quantized weights but is costed at another precision."""


@dataclass(frozen=True)
class Quantization:
    """What a ``quantization_config`` declares: ``method`` (awq, gptq, fp8, …), weight bits and our dtype."""

    method: str
    weight_bits: int
    dtype: str | None  # a --dtype value, None when the scheme has no equivalent here


_QUANTIZED: dict[str, Quantization] = {}
_WARNED: set[str] = set()


def _compressed_tensors(cfg: dict) -> tuple[int | None, int | None, str | None]:
    """(weight bits, activation bits, weight type) of the first ``config_groups`` entry of compressed-tensors."""
    for group in (cfg.get("config_groups") or {}).values():
        if isinstance(group, dict) and isinstance(group.get("weights"), dict):
            acts = group.get("input_activations") if isinstance(group.get("input_activations"), dict) else {}
            return group["weights"].get("num_bits"), acts.get("num_bits"), group["weights"].get("type")
    return None, None, None


def detect_quantization(config: object) -> Quantization | None:
    """The quantization a HF ``config.json`` (parsed) declares in ``quantization_config``, or None.

    AWQ, GPTQ and other integer schemes map to ``w<bits>a16``; fp8 (and compressed-tensors or ModelOpt
    8-bit float weights and activations) to ``fp8``; bitsandbytes to ``w4a16``/``w8a16``; MXFP4 (gpt-oss)
    to ``mxfp4`` and NVFP4 (ModelOpt) to ``nvfp4``. A scheme with no
    equivalent here has ``dtype=None``. A multimodal wrapper's block may sit in its ``text_config`` (Kimi-K2.5).
    """
    if isinstance(config, dict) and not isinstance(config.get("quantization_config"), dict) \
            and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    if not isinstance(config, dict) or not isinstance(config.get("quantization_config"), dict):
        return None
    q = config["quantization_config"]
    method = str(q.get("quant_method") or q.get("quantization_method") or "unknown").lower()
    bits, act_bits, kind = q.get("bits") or q.get("w_bit") or q.get("weight_bits"), None, None
    if method == "compressed-tensors":
        bits, act_bits, kind = _compressed_tensors(q)
    elif method == "bitsandbytes":
        bits = 4 if q.get("load_in_4bit") else 8
    elif method in ("fp8", "fbgemm_fp8"):
        bits, act_bits, kind = 8, 8, "float"
    elif method == "modelopt":  # NVIDIA ModelOpt: quant_algo FP8 or NVFP4
        method = f"modelopt {str(q.get('quant_algo', '')).lower()}".strip()
        bits, act_bits, kind = {"modelopt fp8": (8, 8, "float"), "modelopt nvfp4": (4, 4, "float")}.get(method,
                                                                                                     (None, None, None))
    elif method in ("mxfp4", "nvfp4"):
        bits = 4
    fp4 = {"mxfp4": "mxfp4", "nvfp4": "nvfp4", "modelopt nvfp4": "nvfp4"}.get(method)
    if fp4 is not None:
        return Quantization(method, 4, fp4)
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in (2, 3, 4, 8, 16):
        return Quantization(method, 0, None)
    if bits == 8 and act_bits == 8:
        dtype = "fp8" if kind in ("float", None) else "int8"
    else:
        dtype = f"w{bits}a16" if bits in (4, 8, 16) else None
    return Quantization(method, bits, dtype)


def record_quantization(config: object, spec):
    """Remember what ``config`` (a parsed config.json) declares for ``spec`` (returned unchanged) and warn once
    (:class:`QuantizationWarning`) that API calls cost it at the ``dtype`` they pass."""
    found = detect_quantization(config)
    if found is None:
        return spec
    _QUANTIZED[spec.name] = found
    if spec.name not in _WARNED:
        _WARNED.add(spec.name)
        warnings.warn(quantization_note(spec.name, found, None), QuantizationWarning, stacklevel=3)
    return spec


def quantization_of(spec) -> Quantization | None:
    """The quantization recorded for a model read from a config.json, if any."""
    return _QUANTIZED.get(getattr(spec, "name", None))


def quantization_note(name: str, found: Quantization, dtype: str | None) -> str:
    """One line saying what the config declares and what it is costed as."""
    declared = f"{found.method} {found.weight_bits}-bit weights" if found.weight_bits else f"{found.method} weights"
    use = f"--dtype {found.dtype}" if found.dtype else "the --dtype that matches it"
    if dtype is None:
        return (f"{name}: quantization_config declares {declared}; the API costs it at the dtype you pass "
                f"(default fp16); pass {use} to cost the quantized checkpoint")
    return f"{name}: quantization_config declares {declared} but --dtype {dtype} is costed; pass {use} to match it"


def resolve_dtype(spec, dtype: str | None) -> tuple[str, str | None]:
    """(dtype to cost, warning line or None) for the CLI: ``--dtype`` when given, else the checkpoint's own
    quantization (else fp16). The warning is set when a given ``--dtype`` contradicts the checkpoint."""
    found = quantization_of(spec)
    if dtype is None:
        return (found.dtype if found is not None and found.dtype else "fp16"), (
            quantization_note(spec.name, found, "fp16") if found is not None and not found.dtype else None)
    if found is not None and found.dtype != dtype:
        return dtype, quantization_note(spec.name, found, dtype)
    return dtype, None


# --- iterations -----------------------------------------------------------------------------------
def check_iteration_keys(iterations) -> None:
    """Every row of ``iterations`` names its ``model, gpu, tp, dtype`` (no None, NaN or empty string)."""
    import pandas as pd

    for col in ITERATION_KEYS:
        values = iterations[col]
        bad = (values.isna() | values.isin(("", " ", "nan", "NaN", "None"))).to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            label = iterations.index[pos]
            raise InputError(f"iterations: column {col!r} is missing (None/NaN) at row {label!r} (position {pos}); "
                             f"every row needs {', '.join(ITERATION_KEYS)}")
    if not pd.api.types.is_integer_dtype(iterations["tp"]):
        tp = pd.to_numeric(iterations["tp"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(tp) | (tp != np.round(tp)) | (tp < 1)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(f"iterations: column 'tp' must hold integers >= 1, got {iterations['tp'].iloc[pos]!r} "
                             f"at row {iterations.index[pos]!r}")


def _fail_row(index, mask: np.ndarray, message: str) -> None:
    if mask.any():
        pos = int(np.flatnonzero(mask)[0])
        rows = int(mask.sum())
        raise InputError(f"iterations: row {index[pos]!r}{f' (and {rows - 1} more)' if rows > 1 else ''}: {message}")


def check_iteration_bounds(batch, max_context: int, index) -> None:
    """Aggregates of ``batch`` (a :class:`~predictor.batch.BatchShape`) that iterations can have.

    Parameters
    ----------
    batch : BatchShape
        The iterations of one configuration.
    max_context : int
        The model's context length (tokens).
    index : sequence
        Row labels for the messages.
    """
    tokens, pairs, seqs = batch.prefill_tokens, batch.prefill_attention_pairs, batch.prefill_seqs
    dec, dec_ctx = batch.decode_seqs, batch.decode_context_tokens
    _fail_row(index, (tokens == 0) & (dec == 0),
              "empty iteration (prefill_tokens = 0 and decode_seqs = 0); drop it, it has no time to predict")
    for name, values in (("decode_seqs", dec), ("prefill_seqs", seqs), ("prefill_tokens", tokens)):
        _fail_row(index, values != np.round(values), f"{name} must be a whole number")
    _fail_row(index, seqs > tokens, "prefill_seqs exceeds prefill_tokens (every chunk has >= 1 new token)")
    _fail_row(index, (tokens == 0) & (pairs > 0), "prefill_attention_pairs > 0 with prefill_tokens = 0")
    upper = tokens * float(max_context)
    _fail_row(index, pairs > upper * (1 + 1e-9),
              f"prefill_attention_pairs exceeds prefill_tokens × max_context = prefill_tokens × {max_context:,} "
              f"(each chunk's pairs are new·(context + new/2) with context + new <= {max_context:,})")
    lower = np.where(tokens > 0, tokens**2 / (2 * np.maximum(seqs, 1)), 0.0)
    _fail_row(index, pairs < lower * (1 - 1e-9),
              "prefill_attention_pairs is below prefill_tokens² / (2 × prefill_seqs), the fewest causal pairs "
              "those chunks can have")
    _fail_row(index, (dec == 0) & (dec_ctx > 0), "decode_context_tokens > 0 with decode_seqs = 0")
    _fail_row(index, dec_ctx > dec * float(max_context - 1),
              f"decode_context_tokens exceeds decode_seqs × (max_context − 1) = decode_seqs × {max_context - 1:,}")


def check_iteration_context(spec, chunks, contexts) -> None:
    """One iteration's chunks ``(new, context)`` and decode contexts fit ``spec.max_position_embeddings``."""
    limit = int(spec.max_position_embeddings)
    longest = max(contexts, default=-1)
    if longest + 1 > limit:
        i = list(contexts).index(longest)
        raise InputError(f"decode[{i}]: context {longest:,} + 1 new token exceeds {spec.name}'s context length "
                         f"{limit:,} (max_position_embeddings)")
    for i, (new, ctx) in enumerate(chunks):
        if new + ctx > limit:
            raise InputError(f"prefill[{i}]: context {ctx:,} + {new:,} new tokens exceeds {spec.name}'s context "
                             f"length {limit:,} (max_position_embeddings)")


def check_static_batch(spec, gpu, tp, precision, batch_size: int, input_len: int, output_len: int) -> None:
    """A static batch fits the model's context and the KV cache of the default memory plan, each of its
    ``batch_size`` sequences holding its tokens and its per-sequence state (``tp``: the TP degree or a
    :class:`~predictor.parallel.ParallelConfig`).

    Raises
    ------
    InputError
        ``input_len + output_len`` over ``max_position_embeddings``, or ``batch_size`` sequences of that
        length needing more KV blocks than the plan (:func:`predictor.memory.plan_memory`) leaves.
    """
    from predictor.memory import plan_memory, sequence_blocks

    limit = int(spec.max_position_embeddings)
    length = int(input_len) + int(output_len)
    if length > limit:
        raise InputError(f"input_len + output_len: {length:,} tokens exceed {spec.name}'s context length {limit:,} "
                         f"(max_position_embeddings)")
    # each sequence's blocks: its tokens', and its per-sequence state's (windows up to its length, recurrent states)
    plan = plan_memory(spec, gpu, tp, precision, state_on_demand=True)
    per_sequence = sequence_blocks(spec, tp, precision, length, plan.block_size)
    state_blocks = per_sequence - -(-length // plan.block_size)
    layout = getattr(tp, "label", f"tp={tp}")
    fit = plan.num_blocks // per_sequence
    if batch_size > fit:
        state = (f" and per-sequence state of {state_blocks * plan.block_size:,} token slots each" if state_blocks
                 else "")
        raise InputError(f"batch_size: {batch_size:,} sequences of {length:,} tokens need "
                         f"{batch_size * length:,} KV tokens{state}; the KV cache of {gpu.name} at {layout} "
                         f"({precision.label}) holds {plan.max_tokens:,} tokens, so at most {fit:,} such sequences")


# --- workloads ------------------------------------------------------------------------------------
def check_rate(rate: float | None, field: str = "--rate") -> None:
    """A request rate inside the plausible range [MIN_RATE_PER_S, MAX_RATE_PER_S] requests/s (None passes)."""
    if rate is None:
        return
    if not (isinstance(rate, int | float | np.floating) and math.isfinite(rate)
            and MIN_RATE_PER_S <= rate <= MAX_RATE_PER_S):
        raise InputError(f"{field}: {rate!r} requests/s is outside the plausible range {MIN_RATE_PER_S:g} to "
                         f"{MAX_RATE_PER_S:g} requests/s")


def check_arrivals(arrival_s: np.ndarray, field: str) -> None:
    """Arrival times (s) finite and within [0, MAX_ARRIVAL_S] (float64 keeps sub-µs steps there)."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arrival_s) | (arrival_s < 0) | (arrival_s > MAX_ARRIVAL_S)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(f"{field}: arrival time {arrival_s[pos]:g} s (request {pos}) is outside the plausible range "
                         f"0 to {MAX_ARRIVAL_S:g} s")


# --- output ---------------------------------------------------------------------------------------
def json_safe(value, path: str = "", nulls: list[str] | None = None):
    """``value`` with every NaN or infinite float replaced by None; the dotted paths replaced go to ``nulls``."""
    if isinstance(value, dict):
        return {k: json_safe(v, f"{path}.{k}" if path else str(k), nulls) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, f"{path}[{i}]", nulls) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if nulls is not None:
            nulls.append(path)
        return None
    return value
