"""Engine profiles per serving framework: what an engine step costs besides the kernels, and the
scheduler's defaults.

A profile changes how the simulator times an iteration (milliseconds)::

    step_ms = kernel_scale × kernel_ms(padded batch) + roofline_scale × roofline_ms(padded batch)
              + base_ms + per_seq_ms × sequences + (multi_gpu_ms if the instance spans several GPUs)

* ``kernel_ms`` is the predictor's kernel time (hybrid: roofline × learned residual), ``roofline_ms`` the
  ideal time of the same kernels on the GPU's spec sheet. The two scales say how the framework's kernels
  (fusion, its attention / GEMM backends) compare with them; the fit chooses the mix, so a framework whose
  kernels track the spec sheet more closely than the residual model (which was trained on vLLM-measured
  kernels) leans on the roofline term. ``kernel_scale = 1, roofline_scale = 0`` means "as predicted".
* **CUDA-graph padding**: a decode-only step of ``b`` sequences runs the captured graph of the smallest
  capture size ≥ b (sizes 1, 2, 4, then multiples of 8 up to ``cuda_graph_max_batch``), so its kernels are
  timed at the padded size; above the largest size the step runs eagerly at ``b``.
* ``base_ms`` / ``per_seq_ms`` are the non-kernel CPU and launch time per step and per sequence
  (scheduling, input preparation, sampling, detokenisation); ``multi_gpu_ms`` the extra per step when
  the instance spans several GPUs.
* **Admission** (closed-loop runs): a request reaches the engine's queue ``admission_base_ms +
  admission_per_client_ms × clients`` after its client sends it (HTTP, tokenisation, an API server busy
  streaming the other clients' tokens); TTFT still counts from the send.

* **KV-cache size**: each framework sizes its KV cache by its own rule (:data:`SCHEDULING`, the
  rules in :mod:`predictor.memory`): vLLM a fraction of the GPU's memory less weights, workspace and overhead;
  TensorRT-LLM a fraction (0.9) of the memory free once the model is loaded; SGLang a static fraction of the
  memory for weights and KV (its start-up rule). On a model that nearly fills the GPUs this decides how many
  sequences run at once.
* **Budgets with attention data parallelism**: vLLM and TensorRT-LLM run a scheduler per attention-DP rank, each
  with the token budget and ``max_num_seqs``, so an instance of ``d`` ranks has ``d`` times them; SGLang divides
  its global budgets among the ranks (:data:`SCHEDULING`).

The coefficients are **learned from measured serving runs** (:func:`fit_profile`): a bounded, robust least
squares fit, in relative error, of each aggregated run's measured TPOT against the simulator's kernel-only TPOT
and the decode batch per GPU group, per framework. Only aggregated runs: a profile times one aggregated engine,
and a disaggregated run's times also carry its pools' sizes and the KV transfer (many rows do not give the
pools' sizes). Robust (``soft_l1``, scale :data:`ROBUST_SCALE`): runs whose kernels the residual model predicts
several-fold off (wide expert parallelism, a kernel family it has not seen) would otherwise decide the fit. The scheduler defaults (chunked-prefill token budget,
``max_num_seqs``) are the frameworks' documented defaults for large GPUs (vLLM V1: 8,192 batched tokens;
SGLang ``chunked_prefill_size`` 8,192; TRT-LLM ``max_num_tokens`` 8,192), vLLM and TRT-LLM with prefill/decode
mixing and SGLang prefill-first (a prefill iteration pauses the decodes; :data:`SCHEDULING`); so are
their KV-cache memory rules.

``legacy`` is the pre-profile behaviour kept explicitly: the predictor's Vidur-era overhead fit
(:mod:`predictor.overhead`, a 2023 vLLM/Sarathi engine with Ray workers) with no padding and the old
engine defaults (2,048 tokens, 256 sequences).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from predictor.errors import InputError
from predictor.overhead import NO_OVERHEAD, OverheadModel

FRAMEWORKS = ("vllm", "sglang", "trtllm")
PROFILE_NAMES = (*FRAMEWORKS, "legacy")
DEFAULT_FRAMEWORK = "vllm"
PROFILES_PATH = Path(__file__).resolve().parents[1] / "data" / "engine_profiles.json"
# each framework's scheduling defaults beyond the profile's budgets (EngineConfig fields): batching policy, KV-cache
# memory rule, and whether the budgets are per attention-DP rank; the legacy engine keeps EngineConfig's defaults
SCHEDULING = {
    "vllm": {"policy": "continuous", "kv_memory": "total", "budget_per_dp_rank": True},
    "sglang": {"policy": "prefill_first", "kv_memory": "static", "budget_per_dp_rank": False},
    "trtllm": {"policy": "continuous", "kv_memory": "free", "budget_per_dp_rank": True},
}
# Whether serving simulations time kernels with the framework's kernel family (predictor.kernel_family) or with the
# pooled residual model. Pooled: on the measured serving runs, calibrated and held out by GPU and by model, the pooled
# kernels scored better TPOT than the families and about the same TTFT (docs/serving-accuracy.md, "Kernel families on
# and off"; that comparison chose this, so it flatters it a little). Read when a kernel-only profile is made.
SERVING_KERNEL_FAMILY = False
ROBUST_SCALE = 0.2  # relative error at which fit_profile's soft_l1 loss turns from squared to linear
ZERO_BELOW = 1e-4  # a fitted coefficient (ms, or a scale) below this is the solver at its zero bound: read as 0
BACKEND_ALIASES = {"vllm": "vllm", "openai": "vllm", "openai-chat": "vllm", "sglang": "sglang",
                   "sglang-native": "sglang", "sglang-oai": "sglang", "sglang-oai-chat": "sglang",
                   "trtllm": "trtllm", "tensorrt-llm": "trtllm", "trt-llm": "trtllm"}


def framework_name(text: str, field: str = "--framework") -> str:
    """Canonical framework (``vllm``, ``sglang``, ``trtllm``) of a backend name, else :class:`InputError`."""
    key = str(text).strip().lower().replace("_", "-")  # tensorrt_llm as tensorrt-llm
    if key not in BACKEND_ALIASES:
        raise InputError(f"{field}: unknown value {text!r}; allowed: {', '.join(sorted(BACKEND_ALIASES))}")
    return BACKEND_ALIASES[key]


@dataclass(frozen=True)
class EngineProfile:
    """Per-step costs besides kernels and scheduler defaults of one serving framework (see module docstring).

    Attributes
    ----------
    framework, version : str
        Which engine (``legacy`` for the Vidur-era fit) and the versions the fit saw.
    kernel_scale, roofline_scale : float
        Multipliers on the predictor's kernel time and on the roofline (ideal) time of the same step.
    overhead : OverheadModel
        ``base_ms``, ``per_seq_ms``, ``multi_gpu_ms`` per step (ms).
    cuda_graph_max_batch : int
        Largest captured decode batch (0: no CUDA graphs, no padding).
    max_num_batched_tokens, max_num_seqs : int
        Scheduler defaults: token budget per step (chunked prefill, mixed with decodes) and most running requests.
    admission_base_ms, admission_per_client_ms : float
        Send-to-queue time of a request (ms): fixed, and per open client stream (see :meth:`admission_ms`).
    fitted_rows : int
        Measured runs the fit used (0 for a profile not fitted on serving runs).
    kernel_family : bool
        Time the kernels with the framework's kernel family (:meth:`predictor.Predictor.for_framework`); False:
        the pooled model's (the kernels the profile was fitted on, :data:`SERVING_KERNEL_FAMILY`).
    """

    framework: str
    version: str = "any"
    kernel_scale: float = 1.0
    roofline_scale: float = 0.0
    overhead: OverheadModel = NO_OVERHEAD
    cuda_graph_max_batch: int = 512
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    admission_base_ms: float = 0.0
    admission_per_client_ms: float = 0.0
    fitted_rows: int = 0
    kernel_family: bool = True

    def admission_ms(self, concurrency: int) -> float:
        """Time (ms) from a client's send until the request reaches the engine's queue, with ``concurrency``
        streams open (API server, tokenisation, output streaming of the other clients)."""
        return self.admission_base_ms + self.admission_per_client_ms * concurrency

    def padded_batch(self, seqs: int) -> int:
        """Decode batch after CUDA-graph padding (sizes 1, 2, 4, 8, 16, 24, ... up to the largest capture)."""
        if self.cuda_graph_max_batch <= 0 or seqs > self.cuda_graph_max_batch or seqs <= 2:
            return int(seqs)
        return 4 if seqs <= 4 else int(-(-seqs // 8) * 8)

    def engine_config(self, **changes):
        """An :class:`scheduler.engine.EngineConfig` with this framework's scheduler defaults (:data:`SCHEDULING`, the
        memory fraction the framework's own, plus ``changes``)."""
        from scheduler.engine import EngineConfig

        base = {"max_num_batched_tokens": self.max_num_batched_tokens, "max_num_seqs": self.max_num_seqs,
                "chunked_prefill": True, "gpu_memory_utilization": None, **SCHEDULING.get(self.framework, {})}
        return EngineConfig(**(base | changes))

    def apply(self, bound):
        """Wrap a :class:`predictor.predictor.BoundPredictor` so that it times steps with this profile."""
        ideal = None
        if self.roofline_scale > 0:
            layout = getattr(bound, "parallel", None)
            ideal = _roofline().bind(bound.model, bound.gpu, layout if layout is not None else bound.tp,
                                     bound.precision)
        return ProfiledBound(replace(bound, overhead=NO_OVERHEAD), self, ideal)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["overhead"] = self.overhead.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> EngineProfile:
        values = dict(raw)
        values["overhead"] = OverheadModel(**values.get("overhead", {}))
        return cls(**values)


class ProfiledBound:
    """A bound predictor whose iteration times follow an :class:`EngineProfile` (everything else delegates).

    Only the timing calls the engine makes (:meth:`iteration_ms`, :meth:`decode_steps_ms`) change; work,
    efficiency and memory queries go to the wrapped predictor, whose own overhead is off.
    """

    def __init__(self, base, profile: EngineProfile, ideal=None):
        self._base = base
        self._ideal = ideal  # the roofline-only bound predictor (when the profile has a roofline term)
        self.profile = profile
        layout = getattr(base, "parallel", None)
        self._multi = (layout.gpus if layout is not None else base.tp) > 1

    def __getattr__(self, name):
        return getattr(self._base, name)

    def _overhead_ms(self, seqs: int) -> float:
        o = self.profile.overhead
        return o.base_ms + o.per_seq_ms * seqs + (o.multi_gpu_ms if self._multi else 0.0)

    def iteration_ms(self, prefill_chunks: int, prefill_new_tokens: int, prefill_kv_tokens: int,
                     prefill_samples: int, decode_seqs: int, decode_context_tokens: int) -> float:
        """Step time (ms): scaled kernel time (decode-only steps at the CUDA-graph batch) + overhead."""
        if prefill_new_tokens + decode_seqs <= 0:
            return 0.0
        args = (prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                decode_context_tokens)
        if prefill_chunks == 0 and decode_seqs > 0:
            padded = self.profile.padded_batch(decode_seqs)
            args = (0, 0, 0, 0, padded, int(round(decode_context_tokens * padded / decode_seqs)))
        p = self.profile
        kernel = p.kernel_scale * self._base.iteration_ms(*args) if p.kernel_scale > 0 else 0.0
        if self._ideal is not None:
            kernel += p.roofline_scale * self._ideal.iteration_ms(*args)
        return kernel + self._overhead_ms(prefill_chunks + decode_seqs)

    def phase_work(self, *aggregates) -> dict:
        """The wrapped predictor's work by phase and op group, with this profile's per-step overhead (base, per
        sequence, multi-GPU) as the CPU overhead, so that the efficiency report splits a step as it is timed."""
        return self._base.phase_work(*aggregates, overhead_model=self.profile.overhead)

    def decode_steps_ms(self, decode_seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        """Vectorised twin of :meth:`iteration_ms` for ``steps`` consecutive decode-only steps."""
        padded = self.profile.padded_batch(decode_seqs)
        context = int(round(context_tokens * padded / decode_seqs))
        p = self.profile
        kernel = p.kernel_scale * self._base.decode_steps_ms(padded, context, steps)
        if self._ideal is not None:
            kernel = kernel + p.roofline_scale * self._ideal.decode_steps_ms(padded, context, steps)
        return kernel + self._overhead_ms(decode_seqs)


@functools.lru_cache(maxsize=1)
def _roofline():
    """One shared roofline-only predictor (its iteration tables are cached per configuration)."""
    from predictor import Predictor

    return Predictor.roofline_only()


def legacy_profile() -> EngineProfile:
    """The Vidur-era behaviour: the shipped overhead fit, no padding, the old engine defaults."""
    from predictor.predictor import DEFAULT_OVERHEAD

    return EngineProfile("legacy", "vidur-2023", kernel_scale=1.0, overhead=DEFAULT_OVERHEAD, cuda_graph_max_batch=0,
                         max_num_batched_tokens=2048, max_num_seqs=256)


def kernel_only_profile(framework: str = DEFAULT_FRAMEWORK, kernel_family: bool | None = None) -> EngineProfile:
    """Kernels as predicted, no overhead, with ``framework``'s scheduler defaults (the basis of the fit); the
    framework's kernel family or the pooled kernels as ``kernel_family`` says (default :data:`SERVING_KERNEL_FAMILY`,
    read at the call). A profile fitted on it (:func:`fit_profile`) keeps the same kernels."""
    family = SERVING_KERNEL_FAMILY if kernel_family is None else bool(kernel_family)
    return EngineProfile(framework_name(framework), "kernels-only", kernel_family=family)


def load_profiles(path: str | Path | None = None) -> dict[str, EngineProfile]:
    """Fitted profiles by framework (``data/engine_profiles.json``), plus ``legacy``."""
    file = Path(path) if path is not None else PROFILES_PATH
    out = {"legacy": legacy_profile()}
    if file.exists():
        raw = json.loads(file.read_text())
        for name, value in raw.get("profiles", {}).items():
            out[name] = EngineProfile.from_dict(value)
    return out


def get_profile(framework: str = DEFAULT_FRAMEWORK, version: str | None = None,
                profiles: dict[str, EngineProfile] | None = None) -> EngineProfile:
    """The engine profile of ``framework`` (``vllm``, ``sglang``, ``trtllm`` or ``legacy``).

    One profile is fitted per framework over every version in the measured runs; ``version`` is recorded
    on the returned profile (a version the fit did not see gets the framework's profile all the same).
    """
    name = "legacy" if str(framework).strip().lower() == "legacy" else framework_name(framework)
    table = profiles if profiles is not None else load_profiles()
    if name not in table:
        raise InputError(f"--framework: no fitted profile for {name!r} (run python -m benchmarks.experiments.serving_accuracy "
                         f"to fit data/engine_profiles.json); available: {', '.join(sorted(table))}")
    profile = table[name]
    return replace(profile, version=str(version)) if version else profile


def fit_profile(framework: str, rows, base: EngineProfile | None = None) -> EngineProfile:
    """Fit a framework's non-kernel costs on measured runs (bounded robust least squares, relative error).

    Parameters
    ----------
    framework : str
    rows : DataFrame
        One row per measured run with ``measured_tpot_ms`` / ``measured_ttft_ms``, ``kernel_tpot_ms`` /
        ``kernel_ttft_ms`` and ``roofline_tpot_ms`` / ``roofline_ttft_ms`` (the simulator's closed-loop times
        with this framework's scheduler defaults, kernels only — hybrid and roofline — no overhead),
        ``concurrency``, ``dp_attention`` and ``gpus`` (GPUs of the instance). Every row is used as given
        (:func:`fit_profiles` selects the aggregated runs).

    Returns
    -------
    EngineProfile
        Two stages, all coefficients ≥ 0, each minimising Σ ρ((predicted − measured) / measured) with ρ the
        ``soft_l1`` loss at scale :data:`ROBUST_SCALE` (squared below it, linear above):

        1. TPOT (a steady decode step): kernel_scale × kernel + roofline_scale × roofline + base + per_seq ×
           batch (+ multi_gpu), with batch = concurrency / dp_attention (the sequences one GPU group steps)
           and roofline_scale = 1 − kernel_scale, kernel_scale in [0, 1]: the kernels take at least their
           roofline time and at most the hybrid prediction;
        2. TTFT: the same scales on the kernel and roofline TTFT + one step's overhead + admission_base +
           admission_per_client × concurrency.
    """
    ok = rows[np.isfinite(rows["measured_tpot_ms"]) & np.isfinite(rows["kernel_tpot_ms"])
              & np.isfinite(rows["measured_ttft_ms"]) & np.isfinite(rows["kernel_ttft_ms"])
              & np.isfinite(rows["roofline_tpot_ms"]) & np.isfinite(rows["roofline_ttft_ms"])
              & (rows["measured_tpot_ms"] > 0) & (rows["measured_ttft_ms"] > 0)]
    if len(ok) < 4:
        raise InputError(f"fit: {framework} has {len(ok)} usable measured runs; need at least 4")
    base = base or kernel_only_profile(framework)
    batch = ok["concurrency"].to_numpy(float) / ok["dp_attention"].to_numpy(float)
    multi = (ok["gpus"].to_numpy(float) > 1).astype(float)
    y = ok["measured_tpot_ms"].to_numpy(float)
    kernel, roof = ok["kernel_tpot_ms"].to_numpy(float), ok["roofline_tpot_ms"].to_numpy(float)
    # a step is never faster than its roofline: kernels = roofline + kernel_scale × (predicted − roofline),
    # kernel_scale in [0, 1] (so roofline_scale = 1 − kernel_scale), overheads ≥ 0
    design = np.column_stack([kernel - roof, np.ones(len(ok)), batch, multi])
    scale, step_base, per_seq, multi_ms = _robust_fit(design, roof, y, upper=[1.0, np.inf, np.inf, np.inf])
    roof_scale = 1.0 - scale
    ttft = ok["measured_ttft_ms"].to_numpy(float)
    offset = (scale * ok["kernel_ttft_ms"].to_numpy(float) + roof_scale * ok["roofline_ttft_ms"].to_numpy(float)
              + step_base + per_seq * batch + multi_ms * multi)
    admission = _robust_fit(np.column_stack([np.ones(len(ok)), ok["concurrency"].to_numpy(float)]), offset, ttft,
                            upper=[np.inf, np.inf])
    versions = ",".join(sorted(set(map(str, ok["backend_version"])))) if "backend_version" in ok else "any"
    return replace(base, framework=framework, version=versions, kernel_scale=scale, roofline_scale=roof_scale,
                   overhead=OverheadModel(base_ms=step_base, per_seq_ms=per_seq, multi_gpu_ms=multi_ms),
                   admission_base_ms=admission[0], admission_per_client_ms=admission[1],
                   fitted_rows=int(len(ok)))


def _robust_fit(design: np.ndarray, offset: np.ndarray, measured: np.ndarray, upper: list[float]) -> list[float]:
    """Coefficients w in [0, upper] minimising Σ soft_l1(((design @ w + offset) − measured) / measured)
    (deterministic: trust-region reflective from the bounded linear least-squares solution)."""
    from scipy.optimize import least_squares, lsq_linear

    scaled = design / measured[:, None]
    target = (measured - offset) / measured
    bounds = (np.zeros(design.shape[1]), np.asarray(upper, float))
    start = np.clip(lsq_linear(scaled, target, bounds=bounds).x, bounds[0], bounds[1])
    fit = least_squares(lambda w: scaled @ w - target, start, bounds=bounds, loss="soft_l1", f_scale=ROBUST_SCALE,
                        method="trf")
    return [0.0 if v < ZERO_BELOW else float(v) for v in fit.x]  # the solver stays strictly inside its bounds


def fit_profiles(basis, min_rows: int = 8) -> dict[str, EngineProfile]:
    """One :func:`fit_profile` per framework with at least ``min_rows`` predicted aggregated runs in ``basis`` (the
    output of :func:`scheduler.serving_eval.kernel_basis`; every run is taken as aggregated without a ``mode``)."""
    done = basis[basis["skip"] == ""]
    if "mode" in done:
        done = done[done["mode"] == "agg"]  # a profile times one aggregated engine (see the module docstring)
    out = {}
    for framework in FRAMEWORKS:
        rows = done[done["framework"] == framework]
        if len(rows) >= min_rows:
            out[framework] = fit_profile(framework, rows)
    return out
