"""GPU catalogue and user GPU files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from predictor.errors import InputError
from predictor.gpus import COMPUTE_DTYPES, catalogue, get_gpu, load_gpu_file

REQUIRED = ["a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l40s", "a40", "a10g", "l4", "b200", "mi300x",
            "a100-pcie", "a30", "b300", "gb200", "gb300", "rtx-pro-6000-server", "arc-pro-b60"]


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


# --- aiconfigurator systems, fp4 peaks ------------------------------------------------------------
SYSTEMS = Path("/work/shared/data/aiconfigurator/systems")
SILICON = SYSTEMS.parent / "silicon_sample_without_h200.csv"
# catalogue name → aiconfigurator system file taken as the source of memory, bandwidth, peaks and link.
FROM_SYSTEM_FILES = {"a100-pcie": "a100_pcie", "a30": "a30", "b300": "b300_sxm", "gb200": "gb200", "gb300": "gb300",
                     "rtx-pro-6000-server": "rtx_pro_6000_server", "arc-pro-b60": "b60"}


def test_compute_dtypes_append_fp4_without_reordering():
    assert COMPUTE_DTYPES == ("fp16", "bf16", "fp8", "int8", "fp4")


def test_every_aiconfigurator_system_name_resolves():
    names = {"a100_pcie", "a100_sxm", "a30", "b200_sxm", "b300_sxm", "b60", "gb200", "gb300", "h100_pcie", "h100_sxm",
             "h200_sxm", "l4", "l40s", "rtx_pro_6000_server"}  # the 14 system files of the aiconfigurator snapshot
    if SYSTEMS.is_dir():
        assert {p.stem for p in SYSTEMS.glob("*.yaml")} == names
    resolved = {name: get_gpu(name).name for name in names}
    assert resolved["h200_sxm"] == "h200" and resolved["b300_sxm"] == "b300" and resolved["b60"] == "arc-pro-b60"
    assert len(set(resolved.values())) == len(names)  # no two systems share an entry


def test_every_system_of_the_silicon_runs_resolves():
    if not SILICON.is_file():
        pytest.skip(f"{SILICON} not present")
    with SILICON.open(newline="") as f:
        systems = {row["system"] for row in csv.DictReader(f)}
    assert systems == {"b200_sxm", "b300_sxm", "gb200", "gb300", "h100_sxm"}
    assert {get_gpu(s).name for s in systems} == {"b200", "b300", "gb200", "gb300", "h100-sxm"}


@pytest.mark.parametrize(("name", "system"), sorted(FROM_SYSTEM_FILES.items()))
def test_new_entries_carry_their_system_file_values(name, system):
    """Memory, bandwidth, dense peaks and link of the entry equal the system file's (B/s and FLOP/s there)."""
    path = SYSTEMS / f"{system}.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    raw = yaml.safe_load(path.read_text())
    gpu_raw, node = raw["gpu"], raw["node"]
    spec = get_gpu(name)
    assert system in (spec.name, *spec.aliases) and f"systems/{system}.yaml" in spec.source
    assert spec.memory_bytes == pytest.approx(gpu_raw["mem_capacity"], abs=0.005 * 2**30)
    assert spec.hbm_bandwidth_gbps * 1e9 == gpu_raw["mem_bw"]
    assert spec.peak_tflops.bf16 * 1e12 == pytest.approx(gpu_raw["bfloat16_tc_flops"], rel=1e-4)
    assert spec.peak_tflops.int8 * 1e12 == pytest.approx(gpu_raw["int8_tc_flops"], rel=1e-4)
    fp8, fp4 = gpu_raw.get("fp8_tc_flops"), gpu_raw.get("fp4_tc_flops")
    if fp8 == gpu_raw["bfloat16_tc_flops"]:  # b60: the file's "fp8" is the bf16 fallback, no fp8 engines
        assert spec.peak_tflops.fp8 is None
    else:
        assert (spec.peak_tflops.fp8 or 0) * 1e12 == pytest.approx(fp8 or 0, rel=1e-4)
    assert (spec.peak_tflops.fp4 or 0) * 1e12 == pytest.approx(fp4 or 0, rel=1e-4)
    # Link per GPU per direction; the b60 entry keeps the PCIe 5.0 x8 line rate (32 GB/s), the file's
    # intra_node_bw (28.4 GB/s) being a measured effective rate.
    link = node["pcie_bw"] if system == "b60" else node["intra_node_bw"]
    assert spec.link_bandwidth_gbps * 1e9 == link


def test_new_gpus_peaks_and_ridge_points_by_hand():
    b300, gb200, rtx, b60, a30 = (get_gpu(n) for n in ("b300_sxm", "gb200", "rtx_pro_6000_server", "b60", "a30"))
    # B300: 14 PFLOPS dense fp4 over 7.75 TB/s → 14e15 / 7.75e12 = 1806.45 FLOP/byte; fp16 2.25e15 / 7.75e12 = 290.32.
    assert b300.peak_flops("fp4") == 14000e12
    assert b300.ridge_point("fp4") == pytest.approx(1806.4516, rel=1e-6)
    assert b300.ridge_point("fp16") == pytest.approx(290.3226, rel=1e-6)
    assert b300.peak_flops("int8") == 153.5e12  # Blackwell Ultra cut int8 below its fp16 peak
    # GB200: fp8 5 PFLOPS over 8 TB/s → 625 FLOP/byte exactly; fp4 10 PFLOPS → 1250.
    assert (gb200.ridge_point("fp8"), gb200.ridge_point("fp4")) == (625.0, 1250.0)
    # RTX PRO 6000 Server: 1871.2 TFLOPS fp4 over 1792 GB/s → 1044.20; 96 GB card, 97,887 MiB usable.
    assert rtx.ridge_point("fp4") == pytest.approx(1044.1964, rel=1e-6)
    assert rtx.memory_gib == pytest.approx(97887 / 1024, abs=0.005)
    # Arc Pro B60: no fp8 or fp4 engines, both run on the 98.3 TFLOPS fp16 path; 98.3e12 / 456e9 = 215.57.
    assert b60.peak_flops("fp8") == b60.peak_flops("fp4") == 98.3e12
    assert b60.ridge_point() == pytest.approx(215.5702, rel=1e-6)
    # A30: 165 TFLOPS over 933 GB/s → 176.85.
    assert a30.ridge_point() == pytest.approx(176.8489, rel=1e-6)


def test_fp4_peaks_only_on_blackwell_class_gpus():
    with_fp4 = {name for name, spec in catalogue().items() if spec.peak_tflops.fp4 is not None}
    assert with_fp4 == {"b200", "b300", "gb200", "gb300", "rtx-pro-6000-server"}
    assert get_gpu("b200").peak_flops("fp4") == 9000e12  # twice its fp8 peak, as the data sheet lists
    assert get_gpu("h100-sxm").peak_flops("fp4") == 989e12  # no fp4 tensor cores: the fp16 path


def test_user_gpu_file_with_an_fp4_peak(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("my-gpu:\n  peak_tflops: {fp16: 100, fp8: 200, fp4: 400}\n  hbm_bandwidth_gbps: 500\n"
                    "  memory_gib: 16\n  sm_count: 40\n  l2_mb: 4\n  link_bandwidth_gbps: 16\n")
    assert get_gpu("my-gpu", gpu_file=path).ridge_point("fp4") == 400e12 / 500e9


def test_collectives_beyond_the_scale_up_domain_run_at_the_network_rate():
    from predictor import Predictor
    from predictor.models import get_model

    predictor, model = Predictor.roofline_only(), get_model("llama-3.1-70b")
    node = get_gpu("b200")
    rack = node.model_copy(update={"scale_up_gpus": 72})
    assert (node.scale_up_gpus, node.internode_bandwidth_gbps) == (8, 100)
    assert node.group_bandwidth_gbps(8) == node.link_bandwidth_gbps and node.group_bandwidth_gbps(16) == 100
    step = lambda gpu, tp: predictor.predict_iteration(model, gpu, tp, "fp8", prefill=[(4096, 0)]).total_ms  # noqa: E731
    assert step(node, 8) == step(rack, 8)  # within one node nothing changes
    # 4,096 tokens x 8,192 hidden x 1 byte, 2 all-reduces per layer x 80 layers: ~5 GB per GPU over 100 GB/s vs 900 GB/s
    assert step(node, 16) - step(rack, 16) > 20.0
