"""Synthetic kernel profiles: determinism, coverage, schema validity and the documented ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import synthetic as syn
from features.schema import COLUMNS, make_rows, validate
from predictor import opcost as oc
from predictor.errors import InputError
from predictor.gpus import get_gpu, gpu_names
from predictor.roofline import roofline


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return syn.generate(6000, seed=7)


def test_same_seed_identical_different_seed_differs():
    a = syn.generate(2000, seed=3)
    b = syn.generate(2000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = syn.generate(2000, seed=4)
    assert not a["measured_ms"].equals(c["measured_ms"])
    assert not a[["m", "n", "k"]].equals(c[["m", "n", "k"]])


def test_every_requested_op_kind_and_gpu_present(frame):
    assert set(frame["op_kind"]) == set(oc.LEGACY_OP_KINDS)  # the default: the classic kinds
    assert set(frame["gpu"]) == set(gpu_names())
    sub = syn.generate(50, gpus=["a100", "h100-sxm"], op_kinds=["gemm", "allreduce", "norm"], seed=1)
    assert set(sub["op_kind"]) == {"gemm", "allreduce", "norm"}
    assert set(sub["gpu"]) == {"a100-80gb", "h100-sxm"}  # aliases resolve to catalogue names


def test_identity_columns(frame):
    assert list(frame.columns) == list(COLUMNS)
    assert (frame["source"] == "synthetic").all() and (frame["framework"] == "synthetic").all()
    assert (frame["model"] == "").all()
    gemm = frame[frame["op_kind"] == "gemm"]
    expected = "synthetic-gemm-n" + gemm["n"].astype(int).astype(str) + "k" + gemm["k"].astype(int).astype(str)
    assert (gemm["shape_family"] == expected).all()
    assert gemm["shape_family"].nunique() < len(gemm)  # families repeat
    assert (frame["shape_family"].str.startswith("synthetic-")).all()


def test_validate_rejects_nothing(frame):
    kept, report = validate(frame, "synthetic")
    assert report.rejected == {}
    assert report.kept + report.merged_duplicates == len(frame)
    assert len(kept) == report.kept


def test_ground_truth_at_least_roofline_finite_positive(frame):
    truth = syn.ground_truth_ms(frame)
    ideal = roofline(frame)["ideal_ms"].to_numpy()
    assert np.isfinite(truth).all() and (truth > 0).all()
    assert (truth >= ideal).all()


def test_noise_free_generate_equals_ground_truth():
    df = syn.generate(3000, seed=11, noise_sigma=0.0)
    assert np.array_equal(df["measured_ms"].to_numpy(), syn.ground_truth_ms(df))


def test_noise_is_small_lognormal():
    noisy = syn.generate(5000, seed=5)
    ratio = noisy["measured_ms"].to_numpy() / syn.ground_truth_ms(noisy)
    assert abs(np.median(np.log(ratio))) < 0.002
    assert 0.017 < np.std(np.log(ratio)) < 0.023


def test_explicit_gpu_argument_matches_gpu_column():
    df = syn.generate(500, gpus=["l40s"], seed=2)
    assert np.array_equal(syn.ground_truth_ms(df), syn.ground_truth_ms(df.drop(columns="gpu"), gpu="l40s"))


def _gemm(n, **kw):
    return make_rows(1, op_kind="gemm", compute_dtype="fp16", gpu="a100-80gb", m=128, n=n, k=8192, **kw)


def test_wave_quantisation_hand_check_a100():
    # A100-80GB: 108 SMs, 312 TFLOP/s fp16, 2039 GB/s. 4-bit weights keep the GEMM compute-bound.
    assert get_gpu("a100-80gb").sm_count == 108
    full = _gemm(128 * 108, weight_bits=4)  # 1 × 108 tiles: exactly one wave
    spill = _gemm(128 * 109, weight_bits=4)  # 1 × 109 tiles: a second, nearly empty wave
    assert syn.kernel_tiles(full)[0] == 108 and syn.kernel_tiles(spill)[0] == 109

    def expected(n, wave_eff):
        flops = 2 * 128 * n * 8192
        nbytes = 8192 * n * 0.5 + 128 * 8192 * 2 + 128 * n * 2
        compute = flops / 312e12 * 1e3 / (0.80 * wave_eff)
        memory = nbytes / 2039e9 * 1e3 / (0.85 * nbytes / (nbytes + 2e6))
        return max(compute, memory) + 0.004

    t_full = syn.ground_truth_ms(full)[0]
    t_spill = syn.ground_truth_ms(spill)[0]
    assert t_full == pytest.approx(expected(128 * 108, 1.0), rel=1e-12)
    assert t_spill == pytest.approx(expected(128 * 109, 109 / 216), rel=1e-12)
    per_flop_ratio = (t_spill / 109) / (t_full / 108)
    assert per_flop_ratio > 1.8


def test_bandwidth_efficiency_saturates_at_085():
    df = make_rows(1, op_kind="add", compute_dtype="fp16", gpu="a100-80gb", m=16384, n=32768)
    memory_ms = 16384 * 32768 * 3 * 2 / 2039e9 * 1e3  # read 2, write 1, 2 bytes each
    assert syn.ground_truth_ms(df)[0] == pytest.approx(memory_ms / 0.85 + 0.004, rel=1e-3)
    assert syn.bandwidth_efficiency(np.array([1e12]))[0] == pytest.approx(0.85, rel=1e-5)
    assert syn.bandwidth_efficiency(np.array([2e6]))[0] == pytest.approx(0.425)


def test_tiny_kernel_hits_launch_floor():
    df = make_rows(1, op_kind="norm", compute_dtype="fp16", gpu="h100-sxm", m=1, n=1024)
    nbytes = 1024 * 2 * 2
    memory_ms = nbytes / 3350e9 * 1e3 / (0.85 * nbytes / (nbytes + 2e6))
    assert syn.ground_truth_ms(df)[0] == pytest.approx(memory_ms + 0.004, rel=1e-12)


def test_collective_hand_check():
    # h100-sxm: 450 GB/s link, 10 us latency. Ring all-reduce over 8 GPUs of 64 MiB.
    df = make_rows(1, op_kind="allreduce", compute_dtype="bf16", gpu="h100-sxm", msg_bytes=2**26, world_size=8)
    link = 2 * 7 / 8 * 2**26
    expected = 10 * (1 + 0.5 * np.log2(8 / 2)) * 1e-3 + link / (0.8 * 450e9) * 1e3
    assert syn.ground_truth_ms(df)[0] == pytest.approx(expected, rel=1e-12)


def test_attention_and_moe_tiles():
    rows = pd.concat([
        make_rows(1, op_kind="attn_prefill", compute_dtype="fp16", batch=2, q_tokens=300, kv_len=300, heads=32,
                  kv_heads=8, head_dim=128),
        make_rows(1, op_kind="attn_decode", compute_dtype="fp16", batch=5, kv_len=100, heads=32, kv_heads=8,
                  head_dim=128),
        make_rows(1, op_kind="moe", compute_dtype="fp16", m=100, n=1000, k=2048, experts=64, experts_local=16,
                  topk=8),
        make_rows(1, op_kind="norm", compute_dtype="fp16", m=10, n=10),
    ], ignore_index=True)
    assert list(syn.kernel_tiles(rows)) == [2 * 32 * 3, 5 * 8, np.ceil(200 / 128) * np.ceil(1000 / 128), 0]
    assert list(syn.wave_efficiency(np.array([108, 109, 0]), np.array([108, 108, 108]))) == [1.0, 109 / 216, 1.0]


def test_sampled_ranges(frame):
    gemm = frame[frame["op_kind"] == "gemm"]
    assert gemm["m"].between(1, 16384).all()
    assert gemm["n"].isin(syn.SHARD_WIDTHS).all() and gemm["k"].isin(syn.SHARD_WIDTHS).all()
    attn = frame[frame["op_kind"].isin(oc.ATTENTION_KINDS)]
    assert attn["batch"].between(1, 256).all() and attn["kv_len"].between(1, 32768).all()
    assert (attn["heads"] % attn["kv_heads"] == 0).all() and attn["head_dim"].isin([64, 128]).all()
    prefill = frame[frame["op_kind"] == "attn_prefill"]
    assert (prefill["kv_len"] >= prefill["q_tokens"]).all() and prefill["q_tokens"].between(1, 8192).all()
    coll = frame[frame["op_kind"].isin(oc.COLLECTIVE_KINDS)]
    assert coll["msg_bytes"].between(4096, 512 * 2**20).all() and coll["world_size"].isin([2, 4, 8]).all()
    moe = frame[frame["op_kind"] == "moe"]
    assert moe["experts"].isin([8, 64, 128]).all() and moe["topk"].isin([1, 2, 8]).all()
    assert (moe["experts_local"] <= moe["experts"]).all()
    # fp8 (w8a8) only on GPUs with fp8 tensor cores; w4a16 GEMMs present
    fp8 = gemm[gemm["compute_dtype"] == "fp8"]
    assert len(fp8) and all(get_gpu(g).peak_tflops.fp8 is not None for g in fp8["gpu"].unique())
    assert ((gemm["weight_bits"] == 4) & (gemm["compute_dtype"] == "fp16")).any()
    assert frame["compute_dtype"].isin(["fp16", "bf16", "fp8"]).all()


def test_bad_arguments():
    with pytest.raises(InputError):
        syn.generate(10, op_kinds=["matmul"])
    with pytest.raises(InputError):
        syn.generate(10, gpus=["no-such-gpu"])
    with pytest.raises(InputError):
        syn.generate(-1)
    with pytest.raises(InputError):
        syn.generate(10, noise_sigma=-0.1)


def test_zero_rows():
    df = syn.generate(0)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
