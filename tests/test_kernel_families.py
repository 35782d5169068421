"""Kernel families: a serving runtime's own kernels, learned beside the pooled residual model, applied per framework."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from features.builder import MODEL_FEATURES
from features.runtimes import NO_RUNTIME, RUNTIME_CODES, runtime_codes
from features.synthetic import generate
from predictor import Predictor
from predictor.artifact import FAMILIES_FILE, METADATA_FILE, load_artifact, save_artifact
from predictor.errors import InputError
from training.dataset import from_table
from training.kernel_families import applied_families, family_positions, fit_families, held_out_by_gpu
from training.models import ResidualModel

SLOWER_GEMM = 1.6  # the "trtllm" rows' GEMMs take this many times the "vllm" rows' time; every other op the same
UNMEASURED = ("norm", "rope")


def test_runtime_codes_read_the_first_part_of_the_framework():
    codes = runtime_codes(["vllm-0.14.0", "sglang-custom-0.5.10", "trtllm-1.2.0rc5", "sarathi-serve", "nccl-2.27.3",
                           "synthetic"])
    assert codes.tolist() == [RUNTIME_CODES["vllm"], RUNTIME_CODES["sglang"], RUNTIME_CODES["trtllm"], NO_RUNTIME,
                              NO_RUNTIME, NO_RUNTIME]
    assert runtime_codes([]).tolist() == []


@pytest.fixture(scope="module")
def two_runtimes(tmp_path_factory):
    """An artifact whose pooled model saw two runtimes that differ only in GEMM time, with its families."""
    rows = generate(8_000, seed=0)
    rows = rows[~rows["op_kind"].isin(UNMEASURED)]  # as in the real tables: no runtime measured these op kinds
    slower = np.where(rows["op_kind"].to_numpy() == "gemm", SLOWER_GEMM, 1.0)
    table = pd.concat([rows.assign(framework="vllm-0.14.0"),
                       rows.assign(framework="trtllm-1.2.0", measured_ms=rows["measured_ms"] * slower),
                       generate(2_000, seed=1)], ignore_index=True)  # rows of no runtime: not learned from
    data = from_table(table)
    base = ResidualModel({"num_leaves": 31}, 80).fit(data.X, data.log_ratio)
    family, info = fit_families(data, base.predict_log_ratio, max_rows=40_000)
    folder = tmp_path_factory.mktemp("families") / "artifact"
    metadata = {"feature_names": list(MODEL_FEATURES), "quick": True, "kernel_families": info}
    save_artifact(folder, base.booster_.model_to_string(), metadata, family.booster_.model_to_string())
    return folder, data


def test_families_learn_only_from_runtime_rows(two_runtimes):
    _, data = two_runtimes
    positions = family_positions(data)
    per_runtime = int((~generate(8_000, seed=0)["op_kind"].isin(UNMEASURED)).sum())
    assert len(positions) == 2 * per_runtime and (runtime_codes(data.table["framework"].iloc[positions]) != NO_RUNTIME).all()


def test_a_framework_view_predicts_its_runtimes_kernels(two_runtimes):
    folder, _ = two_runtimes
    pooled = Predictor.load(folder)
    rows = generate(3_000, seed=7)
    gemm = rows["op_kind"].to_numpy() == "gemm"
    vllm = pooled.for_framework("vllm").predict_ops(rows)["predicted_ms"].to_numpy()
    trt = pooled.for_framework("trtllm").predict_ops(rows)["predicted_ms"].to_numpy()
    mixed = pooled.predict_ops(rows)["predicted_ms"].to_numpy()
    ratio = trt / vllm
    assert abs(np.median(ratio[gemm]) / SLOWER_GEMM - 1) < 0.08  # the GEMMs of "trtllm" are 1.6× those of "vllm"
    assert abs(np.median(ratio[~gemm]) - 1) < 0.03  # every other op is the same
    # the pooled model predicts in between, for the GEMMs only
    between = np.median(mixed[gemm] / vllm[gemm])
    assert 1.1 < between < SLOWER_GEMM / 1.1
    # op kinds no runtime measured (norm, rope, sampling, ...) are left as the pooled model predicts them
    info = load_artifact(folder).metadata["kernel_families"]
    unlearned = ~rows["op_kind"].isin(info["op_kinds"]).to_numpy()
    assert set(rows["op_kind"][unlearned]) == set(UNMEASURED)
    np.testing.assert_array_equal(trt[unlearned], mixed[unlearned])


def test_views_are_kept_and_keyed_apart(two_runtimes):
    folder, _ = two_runtimes
    pooled = Predictor.load(folder)
    trt = pooled.for_framework("trtllm")
    assert trt is pooled.for_framework("trtllm") and trt.framework == "trtllm"
    assert trt.for_framework(None) is pooled and trt.for_framework("legacy") is pooled
    assert trt.for_framework("vllm") is pooled.for_framework("vllm")
    # the table cache is keyed by the family: a view never reads the pooled model's tables
    assert len({pooled.identity, trt.identity, pooled.for_framework("vllm").identity}) == 3
    roofline = Predictor.roofline_only()
    assert roofline.for_framework("trtllm") is roofline


def test_an_artifact_without_families_predicts_pooled_for_every_framework(two_runtimes, tmp_path):
    folder, _ = two_runtimes
    art = load_artifact(folder)
    save_artifact(tmp_path / "plain", art.model_text, art.metadata)  # no families text: the entry is left out
    plain = Predictor.load(tmp_path / "plain")
    assert "kernel_families" not in load_artifact(tmp_path / "plain").metadata
    assert plain.for_framework("trtllm") is plain
    with pytest.raises(ValueError, match="kernel_families"):
        save_artifact(tmp_path / "odd", art.model_text, {k: v for k, v in art.metadata.items()
                                                          if k != "kernel_families"}, art.families_text)


def test_a_changed_or_missing_families_file_is_a_clear_error(two_runtimes, tmp_path):
    folder, _ = two_runtimes
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    text = (changed / FAMILIES_FILE).read_text()
    (changed / FAMILIES_FILE).write_text(text.replace("num_leaves", "num_leaves ", 1))
    with pytest.raises(InputError, match=f"checksum mismatch for {FAMILIES_FILE}"):
        Predictor.load(changed)
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / FAMILIES_FILE).unlink()
    with pytest.raises(InputError, match=f"{FAMILIES_FILE} is missing"):
        Predictor.load(missing)
    assert (missing / METADATA_FILE).is_file()


def test_the_shipped_artifact_has_families_scored_on_held_out_gpus():
    info = load_artifact().metadata["kernel_families"]
    assert set(info["runtimes"]) == {"vllm", "sglang", "trtllm"} and set(info["applied"]) == set(info["runtimes"])
    assert all(set(kinds) <= set(info["op_kinds"]) for kinds in info["applied"].values())
    overall = [r for r in info["held_out_gpu"] if r["runtime"] == "all"]
    assert len(overall) >= 3 and all(r["rows"] > 1000 for r in overall)


def test_a_simulation_with_an_engine_profile_uses_the_kernels_its_profile_names(hybrid):
    from dataclasses import replace

    from predictor.overhead import NO_OVERHEAD
    from scheduler.engine import Simulator
    from scheduler.engine_profiles import SERVING_KERNEL_FAMILY, kernel_only_profile

    step = (0, 0, 0, 0, 32, 32 * 2048)  # a decode step of 32 sequences at 2,048 tokens of context

    def step_ms(profile):
        return Simulator(hybrid, "qwen3-30b-a3b", "h100-sxm", 1, "fp8", profile=profile).bound.iteration_ms(*step)

    def kernels_ms(predictor):
        return replace(predictor.bind("qwen3-30b-a3b", "h100-sxm", 1, "fp8"), overhead=NO_OVERHEAD).iteration_ms(*step)

    families, pooled = {}, {}
    for name in ("vllm", "trtllm"):
        families[name] = step_ms(kernel_only_profile(name, kernel_family=True))
        assert families[name] == kernels_ms(hybrid.for_framework(name))
        pooled[name] = step_ms(kernel_only_profile(name, kernel_family=False))
        assert pooled[name] == kernels_ms(hybrid)
        default = kernel_only_profile(name)
        assert default.kernel_family is SERVING_KERNEL_FAMILY and fit_profile_keeps(default)
    # kernel-only profiles add nothing to the kernels, so with the families the two differ by their kernels alone
    assert families["vllm"] != families["trtllm"] and pooled["vllm"] == pooled["trtllm"]


def test_a_profile_saved_without_the_choice_keeps_its_frameworks_kernels():
    """Profiles written before ``kernel_family`` existed were fitted on the families' simulations."""
    from scheduler.engine_profiles import EngineProfile

    assert EngineProfile.from_dict({"framework": "vllm"}).kernel_family is True


def fit_profile_keeps(base) -> bool:
    """A profile fitted on a kernel-only basis times its kernels as that basis did."""
    from scheduler.engine_profiles import EngineProfile, fit_profile

    rows = pd.DataFrame({"measured_tpot_ms": [10.0, 12, 14, 16], "kernel_tpot_ms": [8.0, 9, 10, 11],
                         "roofline_tpot_ms": [4.0, 5, 6, 7], "measured_ttft_ms": [100.0, 120, 140, 160],
                         "kernel_ttft_ms": [80.0, 90, 100, 110], "roofline_ttft_ms": [40.0, 50, 60, 70],
                         "concurrency": [8, 16, 32, 64], "dp_attention": [1, 1, 1, 1], "gpus": [1, 1, 2, 2]})
    fitted = fit_profile(base.framework, rows, base=base)
    return fitted.kernel_family == base.kernel_family and EngineProfile.from_dict(fitted.to_dict()) == fitted


def _predictions(gpu_errors: dict[str, tuple[float, float]], runtime="trtllm", kind="moe", rows=400) -> pd.DataFrame:
    """Held-out predictions whose pooled and family errors per GPU are the given constants."""
    return pd.concat([pd.DataFrame({"gpu": gpu, "runtime": runtime, "op_kind": kind, "pooled_ape": np.full(rows, a),
                                    "family_ape": np.full(rows, b)}) for gpu, (a, b) in gpu_errors.items()])


def test_a_family_is_applied_where_it_wins_on_most_held_out_gpus():
    wins_three = _predictions({"a": (0.3, 0.2), "b": (0.3, 0.2), "c": (0.3, 0.25), "d": (0.3, 0.4)})
    assert applied_families(wins_three)["trtllm"] == ["moe"]
    # better over all rows together (one GPU has most of them), but on only two GPUs of four: not applied
    one_gpu = _predictions({"a": (0.3, 0.05), "b": (0.3, 0.31), "c": (0.3, 0.31), "d": (0.3, 0.05)}, rows=400)
    one_gpu = pd.concat([one_gpu, _predictions({"a": (0.3, 0.05)}, rows=800)])
    assert applied_families(one_gpu)["trtllm"] == []
    # too few held-out rows to tell
    assert applied_families(_predictions({"a": (0.3, 0.1), "b": (0.3, 0.1)}, rows=100))["trtllm"] == []
    scores = held_out_by_gpu(wins_three, applied_families(wins_three))
    assert set(scores["runtime"]) == {"all", "trtllm"}
    unapplied = held_out_by_gpu(wins_three, {"vllm": [], "sglang": [], "trtllm": []})
    assert (unapplied["family_mdape"] == unapplied["pooled_mdape"]).all()


def test_a_runtime_whose_family_is_applied_nowhere_predicts_pooled(two_runtimes, tmp_path):
    folder, _ = two_runtimes
    art = load_artifact(folder)
    info = {**art.metadata["kernel_families"], "applied": {"vllm": [], "sglang": [], "trtllm": ["gemm"]}}
    save_artifact(tmp_path / "gated", art.model_text, {**art.metadata, "kernel_families": info}, art.families_text)
    gated = Predictor.load(tmp_path / "gated")
    assert gated.for_framework("vllm") is gated
    rows = generate(2_000, seed=3)
    trt = gated.for_framework("trtllm").predict_ops(rows)["predicted_ms"].to_numpy()
    pooled = gated.predict_ops(rows)["predicted_ms"].to_numpy()
    other = rows["op_kind"].to_numpy() != "gemm"
    np.testing.assert_array_equal(trt[other], pooled[other])
    assert (trt[~other] != pooled[~other]).any()


def test_predict_takes_a_kernel_family_and_rejects_an_unknown_one(capsys):
    import json

    from inference_sim.cli import main

    args = ["predict", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--dtype", "fp8", "--decode", "2048,2048",
            "--json"]
    out = {}
    for kernels in (None, "trtllm", "TensorRT-LLM"):
        assert main(args + (["--kernels", kernels] if kernels else [])) == 0
        out[kernels] = json.loads(capsys.readouterr().out)
    assert out[None]["kernels"] == "pooled" and out["trtllm"]["kernels"] == "trtllm"
    assert out["TensorRT-LLM"] == out["trtllm"]  # an alias of the same framework
    moe = {k: sum(op["total_ms"] for op in v["ops"] if op["op_kind"] == "moe") for k, v in out.items()}
    applied = load_artifact().metadata["kernel_families"]["applied"]["trtllm"]
    assert (moe["trtllm"] != moe[None]) == ("moe" in applied)  # changed exactly where the family applies
    assert main(args + ["--kernels", "tgi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --kernels: unknown value 'tgi'; allowed:")


def test_adding_families_to_an_artifact_keeps_its_model_and_refuses_a_replaced_one(two_runtimes, tmp_path, monkeypatch):
    import training.kernel_families as kf

    folder, data = two_runtimes
    art = load_artifact(folder)
    target = tmp_path / "art"
    save_artifact(target, art.model_text, art.metadata)  # the same model, no families
    info = kf.add_to_artifact(target, data, evaluate=False)
    again = load_artifact(target)
    assert again.model_text == art.model_text and again.metadata["kernel_families"] == info
    assert again.families_text is not None and "applied" not in info  # no held-out check: every learned kind
    # a training run that replaces the model while the families fit: nothing is written over it
    real_fit = kf.fit_for_artifact

    def fit_then_replace(*args, **kwargs):
        out = real_fit(*args, **kwargs)
        save_artifact(target, art.model_text.replace("tree\n", "tree\n\n", 1), art.metadata)
        return out

    monkeypatch.setattr(kf, "fit_for_artifact", fit_then_replace)
    with pytest.raises(InputError, match="was replaced while its kernel families were fitted"):
        kf.add_to_artifact(target, data, evaluate=False)
    assert "kernel_families" not in load_artifact(target).metadata


@pytest.mark.parametrize("field, value", [("runtimes", ["vllm"]), ("features", []), ("op_kinds", "gemm"),
                                          ("applied", {"trtllm": "moe"})])
def test_a_malformed_families_entry_is_a_clear_error(two_runtimes, tmp_path, field, value):
    folder, _ = two_runtimes
    art = load_artifact(folder)
    info = {**art.metadata["kernel_families"], field: value}
    save_artifact(tmp_path / "odd", art.model_text, {**art.metadata, "kernel_families": info}, art.families_text)
    with pytest.raises(InputError, match=f"kernel_families.{field} must be"):
        Predictor.load(tmp_path / "odd")
