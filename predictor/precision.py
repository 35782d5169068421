"""Numeric precision of weights, activations and the KV cache.

A dtype string is a preset (see :data:`PRESETS`), a preset with a KV-cache suffix
(``<preset>-kv<bits>``, e.g. ``fp8-kv8`` or ``nvfp4-kv8``), or the pattern
``w<bits>a<bits>[kv<bits>]`` (e.g. ``w4a16kv8``; ``w8a8kv8`` is fp8 weights, activations and KV cache).
The compute dtype (which tensor-core peak applies) follows from the activation bits: 16-bit
activations run on the fp16/bf16 path (weight-only quantisation dequantises in the kernel), 8-bit
activations on fp8 (or int8 for the ``int8`` preset), 4-bit activations on fp4.

Block-scaled formats carry their scales in the weight bytes: ``weight_bits`` of ``nvfp4`` is 4.5
(4-bit E2M1 elements plus one 8-bit E4M3 scale per 16 weights), of ``mxfp4`` 4.25 (one 8-bit E8M0
scale per 32) and of ``fp8_block`` 8 + 32 / (128 · 128) (one fp32 scale per 128 × 128 block).
Per-tensor scales (one number per matrix) are negligible and not counted. Activation and KV bits are
the element widths only (their per-token or per-block scales are not counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from predictor.errors import InputError

WEIGHT_BITS = (4, 8, 16)
ACT_BITS = (4, 8, 16)
KV_BITS = (4, 8, 16)
_PATTERN = re.compile(r"^w(\d+)a(\d+)(?:kv(\d+))?$")
_KV_SUFFIX = re.compile(r"^(.+?)[-_]kv(\d+)$")
_COMPUTE_OF_ACT_BITS = {16: "fp16", 8: "fp8", 4: "fp4"}

NVFP4_WEIGHT_BITS = 4 + 8 / 16
"""Bits per NVFP4 weight: a 4-bit E2M1 element plus its share of one fp8 (E4M3) scale per 16 weights."""
MXFP4_WEIGHT_BITS = 4 + 8 / 32
"""Bits per MXFP4 weight: a 4-bit E2M1 element plus its share of one 8-bit (E8M0) scale per 32 weights."""
FP8_BLOCK_WEIGHT_BITS = 8 + 32 / (128 * 128)
"""Bits per block-scaled fp8 weight: an fp8 element plus its share of one fp32 scale per 128 × 128 block."""


@dataclass(frozen=True)
class Precision:
    """Bit widths and the compute dtype.

    Attributes
    ----------
    weight_bits : float
        Bits stored per linear-layer weight, block scales included (4, 8 or 16 for the plain formats;
        4.5 for NVFP4, 4.25 for MXFP4, about 8.002 for block-scaled fp8). All byte counts use it.
    act_bits : int
        Bits per activation element moved between kernels (4, 8 or 16).
    kv_bits : int
        Bits per KV-cache element (4, 8 or 16).
    compute : str
        Tensor-core path whose peak applies: ``fp16``, ``bf16``, ``fp8``, ``int8`` or ``fp4``.
    """

    weight_bits: float = 16
    act_bits: int = 16
    kv_bits: int = 16
    compute: str = "fp16"

    @property
    def weight_bytes(self) -> float:
        return self.weight_bits / 8

    @property
    def weight_element_bits(self) -> int:
        """Bits of one weight element without its share of block scales (4 for NVFP4 and MXFP4, 8 for fp8_block)."""
        return int(self.weight_bits)

    @property
    def act_bytes(self) -> float:
        return self.act_bits / 8

    @property
    def kv_bytes(self) -> float:
        return self.kv_bits / 8

    @property
    def label(self) -> str:
        """The preset name, ``<preset>-kv<bits>``, or ``w<bits>a<bits>kv<bits>``; parses back to ``self``."""
        for name, preset in PRESETS.items():
            if preset == self:
                return name
        plain = float(self.weight_bits).is_integer() and _COMPUTE_OF_ACT_BITS.get(self.act_bits) == self.compute
        if plain:
            return f"w{int(self.weight_bits)}a{self.act_bits}kv{self.kv_bits}"
        for name, preset in PRESETS.items():
            if replace(preset, kv_bits=self.kv_bits) == self:
                return f"{name}-kv{self.kv_bits}"
        return f"w{self.weight_bits:g}a{self.act_bits}kv{self.kv_bits}"

    def check_native(self, gpu) -> Precision:
        """This precision if ``gpu`` can run it (see :func:`check_native`); raises ``InputError`` otherwise."""
        return check_native(gpu, self)


PRESETS: dict[str, Precision] = {
    "fp16": Precision(16, 16, 16, "fp16"),
    "bf16": Precision(16, 16, 16, "bf16"),
    "fp8": Precision(8, 8, 16, "fp8"),
    "int8": Precision(8, 8, 16, "int8"),
    "w8a16": Precision(8, 16, 16, "fp16"),
    "w4a16": Precision(4, 16, 16, "fp16"),
    # NVFP4 weights and activations on fp4 tensor cores (Blackwell).
    "nvfp4": Precision(NVFP4_WEIGHT_BITS, 4, 16, "fp4"),
    # NVFP4 weights, 16-bit activations: weight-only, as vLLM runs NVFP4 checkpoints without fp4 tensor cores.
    "nvfp4-a16": Precision(NVFP4_WEIGHT_BITS, 16, 16, "bf16"),
    # MXFP4 weights, 16-bit activations: weight-only, as gpt-oss runs on Hopper.
    "mxfp4": Precision(MXFP4_WEIGHT_BITS, 16, 16, "bf16"),
    # MXFP4 weights, fp8 activations on fp8 tensor cores (W4A8).
    "mxfp4-a8": Precision(MXFP4_WEIGHT_BITS, 8, 16, "fp8"),
    # DeepSeek-style block-scaled fp8 weights, fp8 activations (W8A8).
    "fp8_block": Precision(FP8_BLOCK_WEIGHT_BITS, 8, 16, "fp8"),
}
"""Named precisions. ``w4a8`` (4-bit weights, fp8 activations, no scales counted) is the pattern form."""


def _canonical(name: str) -> str:
    return name.replace("_", "-")


_PRESET_INDEX = {_canonical(name): name for name in PRESETS}


def _allowed() -> str:
    return f"{', '.join(PRESETS)}, <preset>-kv<4|8|16> or w<4|8|16>a<4|8|16>[kv<4|8|16>]"


def _parse_pattern(text: str, original: object) -> Precision | None:
    match = _PATTERN.match(text)
    if not match:
        return None
    w, a = int(match.group(1)), int(match.group(2))
    kv = int(match.group(3)) if match.group(3) else 16
    if w not in WEIGHT_BITS or a not in ACT_BITS or kv not in KV_BITS:
        raise InputError(
            f"--dtype: {original!r} has unsupported bit widths; weights {WEIGHT_BITS}, activations {ACT_BITS}, "
            f"kv {KV_BITS}"
        )
    if a == 4 and w != 4:
        raise InputError(f"--dtype: {original!r}: 4-bit activations (fp4 compute) need 4-bit weights; allowed: w4a4")
    return Precision(w, a, kv, _COMPUTE_OF_ACT_BITS[a])


def _check_kv(kv_bits: object, field: str) -> int:
    if kv_bits not in KV_BITS:
        raise InputError(f"{field}: unknown value {kv_bits!r}; allowed: {', '.join(map(str, KV_BITS))}")
    return int(kv_bits)


def parse_dtype(dtype: str | Precision, kv_bits: int | None = None) -> Precision:
    """Parse a dtype string into a :class:`Precision`.

    Parameters
    ----------
    dtype : str
        Preset name (``_`` and ``-`` are interchangeable), ``<preset>-kv<bits>``, or
        ``w<bits>a<bits>[kv<bits>]``.
    kv_bits : int, optional
        Override the KV-cache bit width.
    """
    if isinstance(dtype, Precision):
        prec = dtype
    else:
        text = _canonical(str(dtype).strip().lower())
        suffix = _KV_SUFFIX.match(text)
        if text in _PRESET_INDEX:
            prec = PRESETS[_PRESET_INDEX[text]]
        elif suffix and suffix.group(1) in _PRESET_INDEX:
            kv = _check_kv(int(suffix.group(2)), "--dtype kv suffix")
            prec = replace(PRESETS[_PRESET_INDEX[suffix.group(1)]], kv_bits=kv)
        else:
            prec = _parse_pattern(text, dtype)
            if prec is None:
                raise InputError(f"--dtype: unknown value {dtype!r}; allowed: {_allowed()}")
    if kv_bits is not None:
        prec = replace(prec, kv_bits=_check_kv(kv_bits, "--kv-bits"))
    return prec


def runs_on(gpu) -> list[str]:
    """Names of the presets ``gpu`` can run: every preset but those whose compute needs fp4 tensor cores it lacks."""
    return [name for name, prec in PRESETS.items() if prec.compute != "fp4" or gpu.peak_tflops.fp4 is not None]


def check_native(gpu, precision: Precision) -> Precision:
    """Return ``precision`` if ``gpu`` can run it; raise :class:`InputError` naming what it runs otherwise.

    fp4 compute (4-bit activations) needs an fp4 tensor-core peak. fp8 or int8 compute on a GPU without
    those tensor cores is accepted: it runs as weight-only quantisation on the fp16 path (see
    :meth:`predictor.gpus.GPUSpec.peak_flops`).

    Parameters
    ----------
    gpu : GPUSpec
        The GPU.
    precision : Precision
        The parsed dtype.
    """
    if precision.compute == "fp4" and gpu.peak_tflops.fp4 is None:
        raise InputError(
            f"--dtype: {precision.label} needs fp4 tensor cores, which {gpu.name} lacks; "
            f"it runs: {', '.join(runs_on(gpu))} (or w<4|8|16>a<8|16>[kv<bits>])"
        )
    return precision
