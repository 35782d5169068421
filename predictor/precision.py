"""Numeric precision of weights, activations and the KV cache.

A dtype string is either a preset (``fp16``, ``bf16``, ``fp8``, ``int8``, ``w8a16``, ``w4a16``) or
the pattern ``w<bits>a<bits>[kv<bits>]`` (e.g. ``w4a16kv8``). The compute dtype (which tensor-core
peak applies) follows from the activation bits: 16-bit activations run on the fp16/bf16 path
(weight-only quantisation dequantises in the kernel), 8-bit activations run on fp8 (or int8 for the
``int8`` preset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from predictor.errors import InputError

PRESETS = {
    "fp16": (16, 16, 16, "fp16"),
    "bf16": (16, 16, 16, "bf16"),
    "fp8": (8, 8, 16, "fp8"),
    "int8": (8, 8, 16, "int8"),
    "w8a16": (8, 16, 16, "fp16"),
    "w4a16": (4, 16, 16, "fp16"),
}
WEIGHT_BITS = (4, 8, 16)
ACT_BITS = (8, 16)
KV_BITS = (4, 8, 16)
_PATTERN = re.compile(r"^w(\d+)a(\d+)(?:kv(\d+))?$")


@dataclass(frozen=True)
class Precision:
    """Bit widths and the compute dtype.

    Attributes
    ----------
    weight_bits : int
        Bits per linear-layer weight (4, 8 or 16).
    act_bits : int
        Bits per activation element moved between kernels (8 or 16).
    kv_bits : int
        Bits per KV-cache element (4, 8 or 16).
    compute : str
        Tensor-core path whose peak applies: ``fp16``, ``bf16``, ``fp8`` or ``int8``.
    """

    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    compute: str = "fp16"

    @property
    def weight_bytes(self) -> float:
        return self.weight_bits / 8

    @property
    def act_bytes(self) -> float:
        return self.act_bits / 8

    @property
    def kv_bytes(self) -> float:
        return self.kv_bits / 8

    @property
    def label(self) -> str:
        for name, spec in PRESETS.items():
            if spec == (self.weight_bits, self.act_bits, self.kv_bits, self.compute):
                return name
        return f"w{self.weight_bits}a{self.act_bits}kv{self.kv_bits}"


def parse_dtype(dtype: str | Precision, kv_bits: int | None = None) -> Precision:
    """Parse a dtype string into a :class:`Precision`.

    Parameters
    ----------
    dtype : str
        Preset name or ``w<bits>a<bits>[kv<bits>]``.
    kv_bits : int, optional
        Override the KV-cache bit width.
    """
    if isinstance(dtype, Precision):
        prec = dtype
    else:
        text = str(dtype).strip().lower()
        if text in PRESETS:
            prec = Precision(*PRESETS[text])
        else:
            match = _PATTERN.match(text)
            if not match:
                raise InputError(
                    f"--dtype: unknown value {dtype!r}; allowed: {', '.join(PRESETS)} or w<4|8|16>a<8|16>[kv<4|8|16>]"
                )
            w, a = int(match.group(1)), int(match.group(2))
            kv = int(match.group(3)) if match.group(3) else 16
            if w not in WEIGHT_BITS or a not in ACT_BITS or kv not in KV_BITS:
                raise InputError(
                    f"--dtype: {dtype!r} has unsupported bit widths; weights {WEIGHT_BITS}, activations {ACT_BITS}, "
                    f"kv {KV_BITS}"
                )
            prec = Precision(w, a, kv, "fp16" if a == 16 else "fp8")
    if kv_bits is not None:
        if kv_bits not in KV_BITS:
            raise InputError(f"--kv-bits: unknown value {kv_bits!r}; allowed: {', '.join(map(str, KV_BITS))}")
        prec = Precision(prec.weight_bits, prec.act_bits, kv_bits, prec.compute)
    return prec
