"""The attention ops' work (FLOPs, HBM bytes, roofline time) behind the efficiency report (MFU, MBU, roofline
distance, bottleneck) is tabulated from the ops themselves, for every attention kind.

Before, it came from one GQA formula for every model: DeepSeek-V3's decode was charged K and V for 128 heads per
cached token instead of its 576-wide latent, so a simulated H200 decode showed an MBU above 100%; windows, sparse
top-k and linear attention were charged every cached token too.
"""

from __future__ import annotations

import numpy as np
import pytest

from predictor import Predictor
from predictor.gpus import get_gpu
from predictor.models import get_model
from predictor.parallel import ParallelConfig
from predictor.precision import parse_dtype

# one configuration per attention kind: MLA + MoE, GQA, sliding windows with sinks, gated delta-net hybrid,
# DSA sparse attention, Mamba-2 hybrid, DeepSeek-V4's compressed attention
CASES = [("deepseek-v3", "h100-sxm", ParallelConfig(tp=8, ep=8), "fp8"),
         ("llama-3.1-8b", "a100-80gb", 1, "fp16"),
         ("gpt-oss-120b", "h100-sxm", 4, "mxfp4"),
         ("qwen3.5-397b-a17b", "b200", ParallelConfig(tp=8, ep=8), "fp8"),
         ("glm-5", "b200", ParallelConfig(tp=8, ep=8), "fp8"),
         ("nemotron-3-nano-30b-a3b", "h100-sxm", 1, "bf16"),
         ("deepseek-v4-flash", "b200", ParallelConfig(tp=4, ep=4), "fp8")]
SHAPES = [(0, 0, 0, 0, 64, 64 * 1300),              # decode only
          (2, 4096, 6000, 2, 0, 0),                  # two prefill chunks, one with cached context
          (1, 2000, 3000, 1, 100, 100 * 8000),       # mixed
          (0, 0, 0, 0, 3, 3 * 40_000)]               # long-context decode


@pytest.fixture(scope="module")
def roofline():
    return Predictor.roofline_only()


@pytest.mark.parametrize("model, gpu, layout, dtype", CASES)
def test_the_work_s_roofline_time_is_the_roofline_predictors_iteration_time(roofline, model, gpu, layout, dtype):
    """Summed over ops, the work's roofline time is by definition the roofline-only predictor's time."""
    bound = roofline.bind(get_model(model), get_gpu(gpu), layout, dtype)
    for shape in SHAPES:
        flops, nbytes, roof_ms = bound.work_scalar(*shape)
        assert roof_ms == pytest.approx(bound.iteration_ms(*shape), rel=1e-6), shape
        assert flops > 0 and nbytes > 0


@pytest.mark.parametrize("model, gpu, layout, dtype", [c for c in CASES if c[0] in
                                                       ("deepseek-v3", "llama-3.1-8b", "gpt-oss-120b")])
def test_decode_reads_each_cached_token_once_at_its_cache_width(roofline, model, gpu, layout, dtype):
    """Past every window, one more cached token per sequence costs one read of what the cache holds per token on
    one GPU: MLA's latent (not 128 heads of K and V), every layer's K and V under GQA, only the full-attention
    layers' under sliding windows."""
    spec, precision = get_model(model), parse_dtype(dtype)
    tp = layout.tp if isinstance(layout, ParallelConfig) else layout
    bound = roofline.bind(spec, get_gpu(gpu), layout, dtype)
    seqs, low, high = 8, 16_384, 32_768
    _, bytes_low, _ = bound.work_scalar(0, 0, 0, 0, seqs, seqs * low)
    _, bytes_high, _ = bound.work_scalar(0, 0, 0, 0, seqs, seqs * high)
    per_token = (bytes_high - bytes_low) / (seqs * (high - low))
    assert per_token == pytest.approx(spec.kv_cache_bytes_per_token(precision.kv_bits, tp), rel=0.02)


def test_decode_steps_work_follows_a_window_model_past_its_window(roofline):
    """The vectorised twin of a run of decode steps (the simulator's fast-forward) on windowed attention."""
    bound = roofline.bind(get_model("gpt-oss-120b"), get_gpu("h100-sxm"), 4, "mxfp4")
    contexts = 37 * (3000 + np.arange(40))
    flops, nbytes, roof = bound.decode_steps_work(37, contexts)
    scalar = np.array([bound.work_scalar(0, 0, 0, 0, 37, int(c)) for c in contexts])
    np.testing.assert_allclose(np.c_[flops, nbytes, roof], scalar, rtol=1e-9)
