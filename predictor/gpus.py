"""GPU specifications: the shipped catalogue and user-supplied YAML files.

A :class:`GPUSpec` holds the spec-sheet numbers the roofline needs. Units are in the field names
(see ``catalog/gpus.yaml`` for the conventions and the sources of every value).
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

from predictor.safe_yaml import load_shipped
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from predictor.errors import InputError, unknown_name

# Order matters: the position is a categorical code elsewhere (feature tables); append, never reorder.
COMPUTE_DTYPES = ("fp16", "bf16", "fp8", "int8", "fp4")


class PeakTflops(BaseModel):
    """Dense tensor-core peaks in TFLOP/s (TOPS for int8); ``None`` where unsupported.

    ``fp4`` is the dense peak of fp4 (E2M1 elements with block scales: NVFP4, MXFP4) matrix
    multiplies, which Blackwell-class tensor cores run and earlier GPUs do not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    fp16: float = Field(gt=0, lt=1e6)
    bf16: float | None = Field(default=None, gt=0, lt=1e6)
    fp8: float | None = Field(default=None, gt=0, lt=1e6)
    int8: float | None = Field(default=None, gt=0, lt=1e6)
    fp4: float | None = Field(default=None, gt=0, lt=1e6)


class GPUSpec(BaseModel):
    """One GPU model's spec-sheet numbers.

    Attributes
    ----------
    name : str
        Catalogue key, e.g. ``"a100-80gb"``.
    peak_tflops : PeakTflops
        Dense tensor-core peak per compute dtype, TFLOP/s.
    hbm_bandwidth_gbps : float
        Device-memory bandwidth, GB/s (1e9 B/s).
    memory_gib : float
        Device memory, GiB.
    sm_count : int
        SMs (NVIDIA) or CUs (AMD).
    l2_mb : float
        Last-level cache, MB.
    link_bandwidth_gbps : float
        Intra-node GPU-to-GPU bandwidth per GPU per direction, GB/s.
    link_latency_us : float
        Per-call collective latency, microseconds.
    scale_up_gpus : int
        GPUs that share that link (8 on an HGX node, 72 in an NVL72 rack); a collective over more GPUs crosses
        the scale-out network.
    internode_bandwidth_gbps : float
        Scale-out (network) bandwidth per GPU per direction, GB/s: what a collective or a KV copy spanning
        more than ``scale_up_gpus`` GPUs runs at (e.g. 50 for one 400 Gb/s NIC per GPU).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    aliases: tuple[str, ...] = ()
    peak_tflops: PeakTflops
    hbm_bandwidth_gbps: float = Field(gt=0, lt=1e6)
    memory_gib: float = Field(gt=0, lt=1e5)
    sm_count: int = Field(gt=0, lt=100_000)
    l2_mb: float = Field(gt=0, lt=1e5)
    link_bandwidth_gbps: float = Field(gt=0, lt=1e6)
    link_latency_us: float = Field(default=10.0, ge=0, lt=1e6)
    scale_up_gpus: int = Field(default=8, ge=1, le=100_000)
    internode_bandwidth_gbps: float = Field(default=25.0, gt=0, lt=1e6)
    source: str = ""

    @field_validator("hbm_bandwidth_gbps", "memory_gib", "l2_mb", "link_bandwidth_gbps", "link_latency_us",
                     "internode_bandwidth_gbps")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    # --- derived quantities (SI units) -------------------------------------------------------
    @property
    def memory_bytes(self) -> float:
        """Device memory in bytes."""
        return self.memory_gib * 2**30

    @property
    def hbm_bandwidth_bytes_per_s(self) -> float:
        return self.hbm_bandwidth_gbps * 1e9

    @property
    def link_bandwidth_bytes_per_s(self) -> float:
        return self.link_bandwidth_gbps * 1e9

    def group_bandwidth_gbps(self, gpus: int) -> float:
        """Per-GPU bandwidth (GB/s) of traffic among ``gpus`` GPUs: the scale-up link within
        ``scale_up_gpus``, the scale-out network beyond (the slower hop bounds a ring)."""
        return self.link_bandwidth_gbps if gpus <= self.scale_up_gpus else min(self.link_bandwidth_gbps,
                                                                                 self.internode_bandwidth_gbps)

    def peak_flops(self, compute_dtype: str) -> float:
        """Dense peak in FLOP/s for ``compute_dtype``.

        Falls back to the fp16 peak when the GPU lacks the type (bf16 → fp16; fp8 or int8 on a
        GPU without those tensor cores runs as weight-only quantisation on the fp16 path, as
        vLLM's Marlin kernels do on Ampere). fp4 falls back the same way here, for row-level
        callers; a user's dtype with fp4 compute on a GPU without an fp4 peak is rejected earlier
        by :func:`predictor.precision.check_native`.
        """
        if compute_dtype not in COMPUTE_DTYPES:
            raise InputError(f"compute dtype: unknown value {compute_dtype!r}; allowed: {', '.join(COMPUTE_DTYPES)}")
        value = getattr(self.peak_tflops, compute_dtype)
        return (value if value is not None else self.peak_tflops.fp16) * 1e12

    def ridge_point(self, compute_dtype: str = "fp16") -> float:
        """Arithmetic intensity (FLOP/byte) where compute and memory time are equal."""
        return self.peak_flops(compute_dtype) / self.hbm_bandwidth_bytes_per_s


def _format_validation_error(source: str, err: ValidationError) -> InputError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    return InputError(f"{source}: field {loc!r}: {first['msg']} (got {first.get('input')!r})")


def _parse_gpu(name: str, raw: object, source: str) -> GPUSpec:
    if not isinstance(raw, dict):
        raise InputError(f"{source}: GPU {name!r} must be a mapping of spec fields, got {type(raw).__name__}")
    try:
        return GPUSpec(name=name, **raw)
    except ValidationError as err:
        raise _format_validation_error(f"{source}: GPU {name!r}", err) from None
    except TypeError as err:
        raise InputError(f"{source}: GPU {name!r}: {err}") from None


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, GPUSpec]:
    """The shipped GPU catalogue, keyed by name."""
    text = resources.files("predictor.catalog").joinpath("gpus.yaml").read_text(encoding="utf-8")
    raw = load_shipped(text)
    return {name: _parse_gpu(name, spec, "gpus.yaml") for name, spec in raw.items()}


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    index = {}
    for name, spec in catalogue().items():
        index[name] = name
        for alias in spec.aliases:
            index[alias.lower()] = name
    return index


def gpu_names() -> list[str]:
    """Catalogue GPU names."""
    return sorted(catalogue())


def load_gpu_file(path: str | Path) -> dict[str, GPUSpec]:
    """Read user GPU specs from a YAML file in the catalogue's format (a mapping name → spec)."""
    from predictor.safe_yaml import load_yaml_file

    path = Path(path)
    raw = load_yaml_file(path, "--gpu-file", "a YAML file of GPU specs")
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"--gpu-file: {str(path)!r} must map GPU names to spec fields (see catalog/gpus.yaml)")
    return {str(name): _parse_gpu(str(name), spec, str(path)) for name, spec in raw.items()}


def get_gpu(name: str | GPUSpec, gpu_file: str | Path | None = None) -> GPUSpec:
    """Look up a GPU by catalogue name or alias, or in a user YAML file.

    Parameters
    ----------
    name : str or GPUSpec
        Catalogue name (``"a100-80gb"``), alias (``"a100"``) or a name defined in ``gpu_file``.
    gpu_file : path, optional
        User YAML file whose entries take precedence over the catalogue.
    """
    if isinstance(name, GPUSpec):
        return name
    if gpu_file is not None:
        user = load_gpu_file(gpu_file)
        if name in user:
            return user[name]
        if len(user) == 1 and not name:
            return next(iter(user.values()))
    key = _alias_index().get(str(name).lower())
    if key is None:
        raise unknown_name("--gpu", str(name), catalogue())
    return catalogue()[key]
