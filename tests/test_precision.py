"""Precisions: presets and their bits, the w<b>a<b>[kv<b>] pattern, KV suffixes, and what a GPU can run."""

from __future__ import annotations

import json

import pytest

from inference_sim.cli import main
from predictor.errors import InputError
from predictor.gpus import GPUSpec, PeakTflops, get_gpu
from predictor.memory import plan_memory
from predictor.models import get_model
from predictor.precision import PRESETS, Precision, check_native, parse_dtype, runs_on

# (weight_bits with block scales, act_bits, kv_bits, compute), derived by hand from the formats:
#   NVFP4: 4-bit E2M1 + one 8-bit E4M3 scale per 16 weights → 4 + 8/16 = 4.5 bits
#   MXFP4: 4-bit E2M1 + one 8-bit E8M0 scale per 32 weights → 4 + 8/32 = 4.25 bits
#   fp8 block: 8-bit + one 32-bit scale per 128 × 128 block → 8 + 32/16384 = 8.001953125 bits
PRESET_BITS = {
    "fp16": (16, 16, 16, "fp16"),
    "bf16": (16, 16, 16, "bf16"),
    "fp8": (8, 8, 16, "fp8"),
    "int8": (8, 8, 16, "int8"),
    "w8a16": (8, 16, 16, "fp16"),
    "w4a16": (4, 16, 16, "fp16"),
    "nvfp4": (4.5, 4, 16, "fp4"),
    "nvfp4-a16": (4.5, 16, 16, "bf16"),
    "mxfp4": (4.25, 16, 16, "bf16"),
    "mxfp4-a8": (4.25, 8, 16, "fp8"),
    "fp8_block": (8.001953125, 8, 16, "fp8"),
}


@pytest.mark.parametrize(("name", "bits"), sorted(PRESET_BITS.items()))
def test_every_preset_bits_and_compute(name, bits):
    prec = parse_dtype(name)
    assert (prec.weight_bits, prec.act_bits, prec.kv_bits, prec.compute) == bits
    assert prec.label == name
    assert prec.weight_element_bits == int(bits[0])  # 4 for NVFP4 / MXFP4, 8 for fp8_block


def test_presets_table_is_the_documented_one():
    assert set(PRESETS) == set(PRESET_BITS)


def test_nvfp4_weight_bytes_of_a_4096_square_matrix():
    # 16,777,216 weights: 8,388,608 bytes of 4-bit elements + 1,048,576 one-byte scales (one per 16).
    assert 4096 * 4096 * parse_dtype("nvfp4").weight_bytes == 8_388_608 + 1_048_576


@pytest.mark.parametrize(("text", "expected"), [
    ("w4a4", (4, 4, 16, "fp4")),
    ("w4a4kv8", (4, 4, 8, "fp4")),
    ("w4a8", (4, 8, 16, "fp8")),  # W4A8: 4-bit weights on fp8 tensor cores (no scales counted)
    ("w8a8kv8", (8, 8, 8, "fp8")),  # fp8 weights, activations and KV cache
    ("fp8-kv8", (8, 8, 8, "fp8")),
    ("fp8_kv8", (8, 8, 8, "fp8")),
    ("int8-kv8", (8, 8, 8, "int8")),
    ("nvfp4-kv8", (4.5, 4, 8, "fp4")),
    ("mxfp4_kv4", (4.25, 16, 4, "bf16")),
    ("fp8-block", (8.001953125, 8, 16, "fp8")),
    ("FP8_BLOCK-KV8", (8.001953125, 8, 8, "fp8")),
    ("mxfp4_a8", (4.25, 8, 16, "fp8")),
])
def test_patterns_and_kv_suffixes(text, expected):
    prec = parse_dtype(text)
    assert (prec.weight_bits, prec.act_bits, prec.kv_bits, prec.compute) == expected


def test_kv_bits_override_applies_to_new_presets():
    assert parse_dtype("nvfp4", kv_bits=8) == Precision(4.5, 4, 8, "fp4")


@pytest.mark.parametrize(("text", "message"), [
    ("w8a4", "4-bit activations .* need 4-bit weights"),
    ("w16a4", "need 4-bit weights"),
    ("w4a2", "unsupported bit widths"),
    ("fp8-kv5", "allowed: 4, 8, 16"),
    ("fp4", "unknown value 'fp4'; allowed: fp16, .*nvfp4"),
    ("foo-kv8", "unknown value"),
])
def test_bad_dtypes_are_one_line_input_errors(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_dtype(text)
    assert "--dtype" in str(info.value) and "\n" not in str(info.value)


def test_labels_parse_back_and_old_labels_are_unchanged():
    for name in PRESETS:
        for kv in (4, 8, 16):
            prec = parse_dtype(name, kv_bits=kv)
            assert parse_dtype(prec.label) == prec, prec.label
    assert [parse_dtype(d).label for d in ("w4a16kv8", "w8a8kv8", "w16a16kv4", "fp8")] == \
        ["w4a16kv8", "w8a8kv8", "w16a16kv4", "fp8"]
    assert parse_dtype("nvfp4-kv8").label == "nvfp4-kv8"


def test_fp4_on_a_gpu_without_fp4_names_what_it_runs():
    with pytest.raises(InputError) as info:
        check_native(get_gpu("h100-sxm"), parse_dtype("nvfp4"))
    message = str(info.value)
    assert message.startswith("--dtype: nvfp4 needs fp4 tensor cores, which h100-sxm lacks; it runs: fp16, bf16, "
                              "fp8, int8, w8a16, w4a16, nvfp4-a16, mxfp4, mxfp4-a8, fp8_block")
    assert "\n" not in message
    with pytest.raises(InputError, match="w4a4kv8 needs fp4 tensor cores, which a100-80gb lacks"):
        parse_dtype("w4a4kv8").check_native(get_gpu("a100"))


def test_what_runs_where():
    assert "nvfp4" in runs_on(get_gpu("b200")) and "nvfp4" not in runs_on(get_gpu("h200"))
    nvfp4 = parse_dtype("nvfp4")
    for gpu in ("b200", "b300_sxm", "gb200", "gb300", "rtx_pro_6000_server"):
        assert check_native(get_gpu(gpu), nvfp4) is nvfp4
    # Weight-only and fp8 presets run everywhere: fp8 compute without fp8 tensor cores is the fp16 path.
    for dtype in ("mxfp4", "nvfp4-a16", "fp8", "fp8_block", "mxfp4-a8"):
        assert check_native(get_gpu("a100"), parse_dtype(dtype)).compute != "fp4"
    own = GPUSpec(name="own", peak_tflops=PeakTflops(fp16=100, fp4=400), hbm_bandwidth_gbps=1000, memory_gib=80,
                  sm_count=100, l2_mb=50, link_bandwidth_gbps=100)
    assert check_native(own, nvfp4) is nvfp4


def test_plan_memory_refuses_fp4_without_fp4_and_counts_scales():
    model = get_model("llama-3.1-8b")
    with pytest.raises(InputError, match="nvfp4 needs fp4 tensor cores"):
        plan_memory(model, get_gpu("h100-sxm"), 1, parse_dtype("nvfp4"))
    nv, w4 = (plan_memory(model, get_gpu("b200"), 1, parse_dtype(d)).weights_bytes for d in ("nvfp4", "w4a4"))
    assert nv > w4  # the same 4-bit elements plus one byte of scale per 16 weights


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fp4_on_h100_is_exit_2_with_one_line(capsys):
    code, out, err = run(capsys, "roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--dtype", "nvfp4")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--dtype: nvfp4 needs fp4 tensor cores, which h100-sxm lacks; it runs: fp16, bf16, fp8" in err


def test_cli_nvfp4_on_b200_runs_on_the_fp4_peak_with_scaled_weight_bytes(capsys):
    code, out, err = run(capsys, "roofline", "--model", "llama-3.1-8b", "--gpu", "b200", "--dtype", "nvfp4",
                         "--batch-size", "1", "--input-len", "16", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dtype"] == "nvfp4" and report["gpu_spec"]["peak_tflops"] == 9000
    o_proj = next(op for op in report["decode"]["ops"] if op["op"] == "o_proj")
    # One decode token through a 4096 × 4096 projection: weights 4096·4096·4.5/8 = 9,437,184 B, input and
    # output 4096 fp4 elements each at 0.5 B = 2,048 B each → 9,441,280 B; memory-bound at 8 TB/s:
    # 9,441,280 / 8e12 s = 0.00118016 ms. FLOPs 2·4096·4096 = 33,554,432 at 9 PFLOPS → 3.728e-6 ms.
    assert o_proj["bytes"] == 9_441_280
    assert o_proj["ideal_ms"] == pytest.approx(0.00118016, rel=1e-9)
    assert o_proj["compute_ms"] == pytest.approx(33_554_432 / 9000e12 * 1e3, rel=1e-9)
