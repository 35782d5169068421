"""GPU catalogue and user GPU files."""

from __future__ import annotations

import pytest

from predictor.errors import InputError
from predictor.gpus import catalogue, get_gpu, load_gpu_file

REQUIRED = ["a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l40s", "a40", "a10g", "l4", "b200", "mi300x"]


def test_catalogue_has_every_required_gpu_with_a_source():
    cat = catalogue()
    for name in REQUIRED:
        assert cat[name].source, name
        assert cat[name].peak_flops("fp16") > 0 and cat[name].hbm_bandwidth_gbps > 0


def test_spec_sheet_numbers_and_ridge():
    a100 = get_gpu("a100")  # alias
    assert (a100.name, a100.peak_flops("fp16"), a100.hbm_bandwidth_gbps) == ("a100-80gb", 312e12, 2039)
    assert a100.ridge_point() == pytest.approx(312e12 / 2039e9)
    assert get_gpu("h100-sxm").peak_flops("fp8") == 1979e12  # data sheet, dense
    assert get_gpu("a100-80gb").peak_flops("fp8") == 312e12  # no fp8 tensor cores: fp16 path


def test_user_gpu_file(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("my-gpu:\n  peak_tflops: {fp16: 100}\n  hbm_bandwidth_gbps: 500\n  memory_gib: 16\n"
                    "  sm_count: 40\n  l2_mb: 4\n  link_bandwidth_gbps: 16\n")
    spec = get_gpu("my-gpu", gpu_file=path)
    assert spec.peak_flops("fp8") == 100e12  # no fp8: falls back to fp16
    assert spec.memory_bytes == 16 * 2**30


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "must map GPU names"),
        ("x: [1, 2", "not valid YAML"),
        ("g:\n  peak_tflops: {fp16: -1}\n  hbm_bandwidth_gbps: 1\n  memory_gib: 1\n  sm_count: 1\n  l2_mb: 1\n"
         "  link_bandwidth_gbps: 1\n", "peak_tflops.fp16"),
        ("g:\n  peak_tflops: {fp16: 1}\n  memory_gib: 1\n  sm_count: 1\n  l2_mb: 1\n  link_bandwidth_gbps: 1\n",
         "hbm_bandwidth_gbps"),
        ("g:\n  peak_tflops: {fp16: 1}\n  hbm_bandwidth_gbps: .nan\n  memory_gib: 1\n  sm_count: 1\n  l2_mb: 1\n"
         "  link_bandwidth_gbps: 1\n", "hbm_bandwidth_gbps"),
        ("g: 5\n", "must be a mapping"),
    ],
)
def test_bad_gpu_files(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_gpu_file(path)
    assert "\n" not in str(info.value)


def test_gpu_file_missing_or_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_gpu_file(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a directory"):
        load_gpu_file(tmp_path)


def test_unknown_gpu_suggests():
    with pytest.raises(InputError, match="did you mean h200"):
        get_gpu("h20")
