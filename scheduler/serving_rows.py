"""Reading one measured serving run (a row of the silicon CSV schema): its model, dtype preset, parallel layout
and GPU count, and :class:`Skip`, the reason a row cannot be predicted (used by :mod:`scheduler.serving_eval`)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from predictor.errors import InputError

MODEL_CONFIGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aiconfigurator" / "model_configs"
QUANT_DTYPES = {"bf16": "bf16", "fp16": "fp16", "float16": "fp16", "bfloat16": "bf16", "auto": "bf16", "none": "bf16",
                "fp8": "fp8", "fp8_block": "fp8", "fp8_e4m3": "fp8", "nvfp4": "nvfp4", "fp4": "nvfp4",
                "int4_wo": "w4a16", "w4a16": "w4a16", "awq": "w4a16", "gptq": "w4a16",
                "w4a16_mxfp4": "w4a16", "mxfp4": "w4a16", "int8": "int8",
                "modelopt": "fp8", "modelopt_fp4": "nvfp4",  # SGLang's names of NVIDIA ModelOpt checkpoints
                # aiconfigurator's other GEMM / MoE modes: weight-only int8, SmoothQuant int8, fp8 without tuned
                # kernels, 4-bit weights with fp8 activations (Hopper), MXFP4 weights with MXFP8 activations (Blackwell)
                "int8_wo": "w8a16", "sq": "int8", "fp8_ootb": "fp8", "w4afp8": "w4a8", "w4a8_mxfp4_mxfp8": "mxfp4-a8"}
REASONS = ("unknown_model", "unknown_gpu", "unsupported_dtype", "unsupported_parallelism", "does_not_fit",
           "concurrency_over_limit", "no_measurement")


class Skip(Exception):
    """A row that cannot be predicted; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


# Name parts that change a checkpoint's weights or tuning, not its architecture (removed from the end, repeatedly;
# a version is a lower-case "v": "-v0.1" is a revision, "-V3" a model)
_VARIANT_SUFFIX = re.compile(r"[-_.](?:instruct|chat|thinking|base|it|hf|fp8|nvfp4|fp4|mxfp4|awq|gptq|int4|int8|"
                             r"w4a16|w8a8|dynamic|static|per-?tensor|block|quantized|exp|(?-i:v)\d+(?:\.\d+)?|\d{4})$",
                             re.IGNORECASE)
# Releases that keep an earlier release's architecture (config.json shapes), by the name they resolve to
_SAME_ARCHITECTURE = ((re.compile(r"^(?:Meta-)?Llama-3\.[23]-(70B|8B)$", re.IGNORECASE), r"Llama-3.1-\1"),
                      (re.compile(r"^MiniMax-M2(?:\.1)?$", re.IGNORECASE), "MiniMax-M2.5"),
                      (re.compile(r"^Kimi-K2(?:-.*)?$", re.IGNORECASE), "Kimi-K2.5"),
                      (re.compile(r"^Qwen2\.5-72B$", re.IGNORECASE), "Qwen2-72B"))


def variant_bases(name: str) -> list[str]:
    """``name`` (no organisation) less its variant suffixes (:data:`_VARIANT_SUFFIX`: tuning, quantisation, dates,
    versions), step by step, then the release whose architecture it keeps (:data:`_SAME_ARCHITECTURE`)."""
    out = [name]
    while (shorter := _VARIANT_SUFFIX.sub("", out[-1])) != out[-1] and shorter:
        out.append(shorter)
    for base in list(out):
        for pattern, target in _SAME_ARCHITECTURE:
            if pattern.match(base):
                out.append(pattern.sub(target, base))
    return list(dict.fromkeys(out))


def _from_configs(model_path: str, org: str, bases: list[str], suffix_from: int, configs: str):
    """The model of the first config found for ``<org>--<base>``, else (for ``bases[suffix_from:]``) of any
    organisation's ``--<base>``: the shipped config first, else the folder's file; None if there is none."""
    from features.model_configs import shipped_config, shipped_stems
    from predictor.models import get_model, parse_hf_config
    from predictor.validate import record_quantization

    folder = Path(configs)
    known = set(shipped_stems()) | {p.name.removesuffix("_config.json") for p in folder.glob("*--*_config.json")}
    stems = [f"{org}--{b}" for b in bases]
    stems += sorted(s for b in bases[suffix_from:] for s in known if s.endswith(f"--{b}"))
    for stem in stems:
        config, file = shipped_config(stem), folder / f"{stem}_config.json"
        if config is None and not file.exists():
            continue
        try:
            return (get_model(file) if config is None else
                    record_quantization(config, parse_hf_config(config, name=model_path, source=f"{stem} config")))
        except InputError as err:
            raise Skip("unknown_model", f"{model_path}: {err}") from None
    return None


@functools.lru_cache(maxsize=256)
def resolve_model(model_path: str, configs: str = str(MODEL_CONFIGS)):
    """The model of ``model_path``: the catalogue (HF ids resolve as it grows), else the ``config.json`` of
    ``<org>--<name>`` shipped in ``data/aiconfigurator/model_configs.json.gz`` (:mod:`features.model_configs`),
    else the one in folder ``configs`` (``<org>--<name>_config.json``); ``Llama-3.1`` is ``Meta-Llama-3.1``, and an
    NVFP4 or FP8 checkpoint shares its base model's architecture. Failing those, a variant of the name
    (:func:`variant_bases`: less its tuning, quantisation, date or version suffixes, or an earlier release of the
    same architecture) is looked up the same ways. Raises :class:`Skip` ``unknown_model``."""
    from predictor.models import get_model

    try:
        return get_model(model_path)
    except InputError as err:
        first = str(err)
    org, _, name = model_path.partition("/")
    bases = [name, name.replace("Llama-3.1", "Meta-Llama-3.1"), name.removesuffix("-NVFP4").removesuffix("-FP8")]
    found = _from_configs(model_path, org, bases, 2, configs)
    if found is not None:
        return found
    # a variant (tuning, quantisation, date, a release of the same architecture) of a catalogue model or a config
    variants = variant_bases(name)[1:]
    for base in variants:
        for candidate in (f"{org}/{base}", base):
            try:
                return get_model(candidate)
            except InputError:
                pass
    found = _from_configs(model_path, org, variants + [v.replace("Llama-3.1", "Meta-Llama-3.1") for v in variants], 0,
                          configs)
    if found is not None:
        return found
    raise Skip("unknown_model", first)


def row_dtype(row, gpu=None) -> str:
    """The dtype preset of a run's quantisation modes (GEMM first; MoE when the GEMMs are unquantised).

    On a ``gpu`` without fp4 tensor cores an fp4 checkpoint runs weight-only (``nvfp4-a16``: 4-bit weights
    dequantised into 16-bit GEMMs), as the serving frameworks run MXFP4/NVFP4 checkpoints on Hopper."""
    from predictor.precision import parse_dtype

    mode = str(row["gemm_quant_mode"]).strip().lower()
    if mode in ("bf16", "fp16", "none", "nan"):
        mode = str(row["moe_quant_mode"]).strip().lower()
    dtype = QUANT_DTYPES.get(mode)
    if dtype is None:
        raise Skip("unsupported_dtype", f"quant mode {mode!r}")
    if dtype == "nvfp4" and gpu is not None and gpu.peak_tflops.fp4 is None:
        dtype = "nvfp4-a16"
    try:
        parse_dtype(dtype)
    except InputError as err:
        raise Skip("unsupported_dtype", str(err)) from None
    return dtype


def row_parallel(row, prefix: str = ""):
    """``tp`` (an int) for plain tensor parallelism, else a :class:`predictor.parallel.ParallelConfig`."""
    from predictor.parallel import ParallelConfig

    get = (lambda k: int(row[f"{prefix}{k}"])) if prefix else (lambda k: int(row[k]))
    keys = ("tp_size", "pp_size", "moe_ep_size", "attention_dp_size", "moe_tp_size") if prefix else \
        ("tp", "pp", "ep", "dp_attention", "moe_tp")
    tp, pp, ep, dp, moe_tp = (get(k) for k in keys)
    if pp == 1 and ep == 1 and dp == 1:
        return tp
    try:
        return ParallelConfig(tp=tp, pp=pp, ep=ep, dp_attention=dp, moe_tp=moe_tp if moe_tp * ep == tp * dp else 0)
    except InputError as err:
        raise Skip("unsupported_parallelism", str(err)) from None


def instance_gpus(row) -> int:
    """GPUs of a run: tp × attention-DP × pp (disaggregated: both pools, every worker)."""
    if row["mode"] == "disagg":
        return int(sum(row[f"{p}_num_workers"] * row[f"{p}_tp_size"] * row[f"{p}_attention_dp_size"]
                       * row[f"{p}_pp_size"] for p in ("prefill", "decode")))
    return int(row["tp"] * row["dp_attention"] * row["pp"])
