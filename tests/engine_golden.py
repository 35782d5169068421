"""Pinned outputs of small simulations, to keep engine speed work honest (issue 19: same seed → bit-identical results).

Each scenario runs one small simulation (or cluster) that exercises one engine path — chunked and whole prefills,
static batching, preemption by recompute, KV budgets, contiguous reservations, closed-loop clients, an engine
profile, pipeline parallelism, fast-forward on and off, a disaggregated least-loaded cluster, migration and
failures — and is reduced to a SHA-256 per output array (per-request columns, the iteration log, time-between-tokens
histogram, running statistics and the efficiency report), floats rounded to 2^-30 of each array's largest value first so that the
digests are the same on CPUs whose vector maths differs in the last bit (:func:`_quantised`). The digests of the code before the speed work are stored
in ``tests/data/engine_golden.json``; ``tests/test_engine_golden.py`` recomputes them.

Regenerate (only when a change of results is intended): ``python -m tests.engine_golden --write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "engine_golden.json"
MODEL, GPU = "llama-2-7b", "a100-80gb"


RESOLUTION_BITS = 30  # floats are hashed on a grid of 2^-30 of their array's largest magnitude (see _quantised)


def _quantised(a: np.ndarray) -> np.ndarray:
    """Floats rounded to a grid of 2^-:data:`RESOLUTION_BITS` of the array's largest finite magnitude (a scalar:
    of itself), subnormal magnitudes to 0, NaN and ±inf kept. The same code gives results that differ in the last
    bits on CPUs of another instruction set (numpy's and OpenBLAS's vector kernels for exp, log and sums differ
    by an ulp between AVX2 and AVX-512), and a difference of two times (a queueing delay) carries the ulps of the
    times themselves: both far below this grid, while a change of results that matters moves far above it."""
    a = np.asarray(a, np.float64)
    finite = np.isfinite(a)
    scale = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    if scale < np.finfo(np.float64).tiny:
        return np.where(finite, 0.0, a)
    step = 2.0 ** (math.frexp(scale)[1] - RESOLUTION_BITS)
    return np.where(finite, np.round(np.where(finite, a, 0.0) / step) * step, a)


def _array_digest(values) -> str:
    a = np.asarray(values)
    if a.dtype == object:
        a = np.array([str(v) for v in a.tolist()])
    elif a.dtype.kind == "f":
        a = _quantised(a)
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def _rounded(value):
    """``value`` (nested dicts, lists, tuples, numbers) with every float quantised as :func:`_quantised` does."""
    if isinstance(value, float | np.floating):
        return float(_quantised(value))
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _json_digest(value) -> str:
    return hashlib.sha256(json.dumps(_rounded(value), sort_keys=True, default=repr).encode()).hexdigest()[:16]


def result_digests(result) -> dict[str, str]:
    """SHA-256 prefixes of every output of a :class:`scheduler.metrics.SimResult` (exact bytes of each array)."""
    out = {f"requests.{name}": _array_digest(result.columns[name]) for name in result.columns}
    for name in result.iterations.columns:
        out[f"iterations.{name}"] = _array_digest(result.iterations[name].to_numpy())
    out["itl_counts"] = _array_digest(result.itl_counts)
    st = result.stats
    if st is not None:
        out["stats"] = _json_digest([st.time_s, st.kv_block_seconds, st.kv_token_seconds, int(st.kv_max),
                                     int(st.kv_tokens_at_max)])
        out["stats.batch_counts"] = _array_digest(st.batch_counts)
    out["efficiency"] = _json_digest(result.efficiency)
    return out


def _workload(n: int, seed: int, **kw):
    from scheduler.workload import build_workload

    kind = kw.pop("kind", "poisson")
    if kind == "poisson":
        kw.setdefault("rate", 6.0)
        kw.setdefault("trace", "splitwise_conv")
    return build_workload(kind, n, seed=seed, **kw)


def _fixed_profile(name: str):
    """A profile with every kind of term, fixed here (the shipped one is refitted as measured runs change)."""
    from predictor.overhead import OverheadModel
    from scheduler.engine_profiles import EngineProfile

    return EngineProfile(name, "golden", kernel_scale=0.6, roofline_scale=0.4,
                         overhead=OverheadModel(base_ms=3.0, per_seq_ms=0.01, multi_gpu_ms=1.5),
                         admission_base_ms=40.0, admission_per_client_ms=0.5)


def _engine(predictor, config: dict, profile: str | None = None, tp=1, dtype: str = "fp16"):
    from scheduler.engine import EngineConfig, Simulator

    return Simulator(predictor, MODEL, GPU, tp, dtype, EngineConfig(**config),
                     profile=_fixed_profile(profile) if profile else None)


def _scenarios(hybrid, roofline):
    """name → zero-argument callable returning a dict of digests."""
    from predictor.parallel import ParallelConfig
    from scheduler.techniques.cluster import Cluster, Failure, InstanceSpec, replicas

    def sim(predictor, n=300, seed=0, config=None, profile=None, tp=1, dtype="fp16", workload=None, record=True):
        def go():
            wl = workload() if workload is not None else _workload(n, seed)
            engine = _engine(predictor, config or {}, profile, tp, dtype)
            return result_digests(engine.run(wl, record_iterations=record))
        return go

    def cluster(instances, n=300, seed=1, **kw):
        def go():
            res = Cluster(hybrid, instances(), **kw).run(_workload(n, seed, rate=12.0))
            out = result_digests(res.result)
            out["cluster"] = _json_digest([res.instances, res.migrations, res.handoffs, res.transfer_s.tolist(),
                                           res.restarts.tolist(), res.served_by.tolist(), res.interrupted.tolist()])
            return out
        return go

    from scheduler.engine import EngineConfig

    disagg = lambda: [InstanceSpec(MODEL, GPU, role="prefill", config=EngineConfig(max_num_batched_tokens=8192)),  # noqa: E731
                      InstanceSpec(MODEL, GPU, role="decode"), InstanceSpec(MODEL, GPU, role="decode")]
    return {
        "hybrid_default": sim(hybrid),
        "hybrid_vllm_profile": sim(hybrid, profile="vllm"),
        "hybrid_no_fast_forward": sim(hybrid, config={"fast_forward": False}),
        "hybrid_whole_prefill": sim(hybrid, config={"chunked_prefill": False}),
        "hybrid_static": sim(hybrid, n=120, config={"policy": "static", "max_num_seqs": 32}),
        "hybrid_preemption": sim(hybrid, n=200, config={"num_blocks": 300}),
        "hybrid_preemption_no_chunk": sim(hybrid, n=200, config={"num_blocks": 300, "chunked_prefill": False}),
        "hybrid_kv_budget": sim(hybrid, config={"kv_budget_tokens": 512}),
        "hybrid_kv_budget_preemption": sim(hybrid, n=200, config={"kv_budget_tokens": 700, "num_blocks": 250}),
        "hybrid_contiguous_pow2": sim(hybrid, config={"kv_allocation": "contiguous_pow2"}),
        "hybrid_contiguous": sim(hybrid, n=150, config={"kv_allocation": "contiguous", "max_model_len": 4096}),
        "hybrid_closed_loop_profile": sim(hybrid, profile="vllm", workload=lambda: _workload(
            200, 0, kind="concurrency", concurrency=32, prompt_len=1024, output_len=256)),
        "hybrid_pp2": sim(hybrid, n=200, tp=ParallelConfig(tp=1, pp=2)),
        "hybrid_tp2_kv8": sim(hybrid, n=200, tp=2, dtype="w16a16kv8"),
        "roofline_no_log": sim(roofline, n=300, seed=3, record=False),
        "cluster_disaggregated_least_loaded": cluster(disagg, router="least_loaded"),
        "cluster_migration": cluster(lambda: replicas(MODEL, GPU, 3, config=EngineConfig(num_blocks=400)),
                                     router="least_loaded", migration=True),
        "cluster_failure_migrate": cluster(lambda: replicas(MODEL, GPU, 2), failures=[Failure(1, 10.0, 5.0)],
                                           failure_mode="migrate"),
    }


def compute(names=None) -> dict[str, dict[str, str]]:
    """Digests of every scenario (or of ``names``), with the shipped hybrid and the roofline-only predictors."""
    from predictor import Predictor

    scenarios = _scenarios(Predictor.load(), Predictor.roofline_only())
    return {name: scenarios[name]() for name in (names or scenarios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN_PATH.name}")
    args = parser.parse_args()
    digests = compute()
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    if args.write:
        GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_PATH.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
