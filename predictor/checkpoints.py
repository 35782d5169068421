"""The precision a named checkpoint ships in: the CLI's default ``--dtype`` for a catalogue model.

A catalogue entry (``predictor/catalog/models.yaml``) holds one *architecture* for several checkpoints: a
release, its re-quantisations (``…-FP8``, ``nvidia/…-NVFP4``) and later releases that keep its shapes. Its
``config.json`` is the ``hf_id``'s own, so its ``quantization_config`` says how *that* checkpoint ships
(DeepSeek-V3 and MiniMax-M2.5 in block-scaled fp8, gpt-oss in MXFP4, Kimi-K2.5 in int4 weights). Which
precision a name denotes, in this order:

1. the entry's ``checkpoint_dtypes`` (name → ``--dtype``), for checkpoints whose name does not say it and
   that ship otherwise than the entry's config (Kimi-K2-Instruct in fp8 under the Kimi-K2.5 entry);
2. a precision the name carries as a part of its last path component (``-FP8``, ``-NVFP4``, ``-FP4``,
   ``-MXFP4``, ``-AWQ``, ``-GPTQ``, ``-INT4``, ``-W4A16``, ``-INT8``, ``-W8A8``);
3. the entry's ``config.json`` ``quantization_config`` (:func:`predictor.validate.detect_quantization`);
4. none: the caller's default (fp16).

The Python API does not apply this: it costs the ``dtype`` it is given.
"""

from __future__ import annotations

import functools
import re

# Name parts that say a checkpoint's precision (case-insensitive; mxfp4 before the NVIDIA fp4 that it contains)
_NAMED = (("mxfp4", "mxfp4"), ("nvfp4", "nvfp4"), ("fp4", "nvfp4"), ("fp8", "fp8"), ("awq", "w4a16"),
          ("gptq", "w4a16"), ("int4", "w4a16"), ("w4a16", "w4a16"), ("int8", "int8"), ("w8a8", "int8"))
_PARTS = re.compile(r"[-_.]")


def named_dtype(name: str) -> str | None:
    """The ``--dtype`` a checkpoint's name states (rule 2 of the module docstring), else None."""
    parts = {p.lower() for p in _PARTS.split(str(name).rsplit("/", 1)[-1])}
    return next((dtype for part, dtype in _NAMED if part in parts), None)


def checkpoint_dtype(name: str) -> str | None:
    """The ``--dtype`` of the checkpoint a catalogue name or alias denotes (see the module docstring); None
    when the name is not in the catalogue or its checkpoint is unquantized (16-bit)."""
    from predictor.models import _index, resolve_model_name

    key = resolve_model_name(str(name))
    if key is None:
        return None
    overrides = {str(k).lower(): str(v) for k, v in (_index()[key].get("checkpoint_dtypes") or {}).items()}
    return overrides.get(str(name).lower()) or named_dtype(name) or _config_dtype(key)


@functools.lru_cache(maxsize=None)
def _config_dtype(key: str) -> str | None:
    from predictor.models import catalogue_config
    from predictor.validate import detect_quantization

    found = detect_quantization(catalogue_config(key))
    return found.dtype if found is not None else None
