"""Residual training: recovery of a known function, MLflow contents, artifact safety, tracking faults."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from features.synthetic import generate, ground_truth_ms
from predictor import Predictor
from predictor.artifact import CHECKSUM_FILE, METADATA_FILE, MODEL_FILE, load_artifact, save_artifact
from predictor.errors import InputError
from training.dataset import from_table, load_training_data
from training.metrics import error_stats
from training.models import ResidualModel
from training.pipeline import TrainConfig, train
from training.tracking import CHAMPION_ALIAS, EXPERIMENT, REGISTERED_MODEL

# quick_mode: the kernel families are fitted but not scored per held-out GPU (one refit per GPU), which these
# tests of tracking and artifact safety do not need
TINY = dict(max_train_rows=6_000, final_max_rows=8_000, search=False, lomo_models=["llama-2-7b"],
            logo_gpus=["a40"], random_split=False, sample_rows_per_split=500, quick_mode=True,
            candidates=[{"num_leaves": 31, "learning_rate": 0.2, "min_data_in_leaf": 20, "rounds": 40}])


@pytest.fixture(scope="module")
def data():
    return load_training_data()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One real `inference-sim train --quick` run against a temporary SQLite store."""
    from inference_sim.cli import main

    root = tmp_path_factory.mktemp("quick")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    code = main(["train", "--quick", "--out", str(root / "artifact"), "--tracking-uri", uri, "--json"])
    assert code == 0
    return root, uri


def test_pipeline_recovers_a_known_function():
    """Synthetic rows with a documented ground truth: held-out MdAPE against it ≤ 2%."""
    train_rows = generate(60_000, seed=0)
    test_rows = generate(5_000, seed=1)
    train_data, test_data = from_table(train_rows), from_table(test_rows)
    model = ResidualModel({"num_leaves": 127, "learning_rate": 0.1}, 300).fit(train_data.X, train_data.log_ratio)
    predicted = model.predict_ms(test_data.X, test_data.ideal_ms)
    truth = ground_truth_ms(test_rows)
    assert error_stats(predicted, truth)["mdape"] <= 0.02
    assert error_stats(test_data.ideal_ms, truth)["mdape"] > 0.2  # the roofline alone is far off


def test_training_is_deterministic(data):
    idx = np.arange(0, len(data), 97)
    a = ResidualModel(None, 30).fit(data.X.iloc[idx], data.log_ratio[idx]).booster_.model_to_string()
    b = ResidualModel(None, 30).fit(data.X.iloc[idx], data.log_ratio[idx]).booster_.model_to_string()
    assert a == b


def test_quick_run_logs_params_metrics_artifacts_and_registers(quick_run):
    root, uri = quick_run
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    params = run.data.params
    assert {"data.vidur.sha256", "data.aiconfigurator.sha256", "split_signature", "lgbm.num_leaves",
            "num_boost_round", "code_version", "git_commit"} <= set(params)
    metrics = run.data.metrics
    for split in ("leave_one_model_out", "leave_one_gpu_out", "random"):
        for method in ("hybrid", "roofline", "roofline_calibrated", "ml_only"):
            for stat in ("mdape", "p90_ape", "mean_ape", "r2_log"):
                assert f"{split}/{method}/{stat}" in metrics
    assert "leave_one_model_out/hybrid/op_kind/gemm/mdape" in metrics
    assert "leave_one_gpu_out/hybrid/gpu/a40/mdape" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/accuracy.md", "report/accuracy_cdf.png", "report/feature_importance.csv"} <= artifacts
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS).version == versions[0].version


def test_quick_artifact_round_trip(quick_run, data):
    root, _ = quick_run
    artifact = load_artifact(root / "artifact")
    assert artifact.metadata["quick"] is True
    assert artifact.metadata["target"] == "log(measured_ms / roofline_ms)"
    # the GPUs whose rows the final model was fitted on: the predictor brackets every other GPU between them
    assert artifact.training_gpus == tuple(sorted(data.table["gpu"].astype(str).unique()))
    predictor = Predictor.load(root / "artifact")
    rows = data.table.iloc[:500]
    direct = ResidualModel()
    import lightgbm as lgb

    booster = lgb.Booster(model_str=artifact.model_text)
    expected = data.ideal_ms[:500] * np.exp(booster.predict(data.X.iloc[:500][artifact.feature_names]))
    np.testing.assert_allclose(predictor.predict_ops(rows)["predicted_ms"].to_numpy(), expected, rtol=1e-9)
    assert direct.features == tuple(artifact.feature_names)


def test_checksum_mismatch_is_a_clear_error(quick_run, tmp_path):
    root, _ = quick_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / "artifact", copy)
    text = (copy / MODEL_FILE).read_text()
    (copy / MODEL_FILE).write_text(text.replace("num_leaves", "num_leaves ", 1))
    with pytest.raises(InputError, match=f"checksum mismatch for {MODEL_FILE}"):
        Predictor.load(copy)


def test_feature_list_mismatch_is_a_clear_error(quick_run, tmp_path):
    root, _ = quick_run
    art = load_artifact(root / "artifact")
    meta = dict(art.metadata, feature_names=art.feature_names[:-1] + ["mystery_feature"])
    save_artifact(tmp_path / "odd", art.model_text, meta)
    with pytest.raises(InputError, match="feature list .* does not match.*mystery_feature"):
        Predictor.load(tmp_path / "odd")


def test_missing_and_oversized_artifacts(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"{MODEL_FILE} is missing"):
        load_artifact(tmp_path / "empty")


def test_unreachable_tracking_store_still_writes_the_artifact(data, tmp_path):
    warnings = []
    result = train(TrainConfig(**TINY), out_dir=tmp_path / "art", tracking_uri="http://127.0.0.1:9",
                   warn=warnings.append, data=data)
    assert result.replaced and (tmp_path / "art" / CHECKSUM_FILE).exists()
    assert result.run_id is None and result.tracking_error
    assert len(warnings) == 1 and "continuing without tracking" in warnings[0]
    Predictor.load(tmp_path / "art")


def test_a_worse_run_never_replaces_a_better_artifact(data, tmp_path):
    out = tmp_path / "art"
    first = train(TrainConfig(**TINY), out_dir=out, tracking=False, data=data)
    assert first.replaced
    art = load_artifact(out)
    better = json.loads(json.dumps(art.metadata))
    better["metrics"]["leave_one_model_out"]["hybrid"]["mdape"] = 1e-6  # pretend the shipped one is excellent
    save_artifact(out, art.model_text, better)
    before = (out / METADATA_FILE).read_bytes()
    second = train(TrainConfig(**TINY), out_dir=out, tracking=False, data=data)
    assert not second.replaced and "worse" in second.reason
    assert (out / METADATA_FILE).read_bytes() == before
    forced = train(TrainConfig(**TINY), out_dir=out, tracking=False, force=True, data=data)
    assert forced.replaced and (out / METADATA_FILE).read_bytes() != before


def test_predictor_loads_from_mlflow_uris(quick_run, monkeypatch):
    """models:/<name>@champion and runs:/<id> resolve to the run's logged artifact folder (verified on load)."""
    root, uri = quick_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    champion = Predictor.load("models:/inference-sim-residual@champion")
    run_id = MlflowClient(uri).get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS).run_id
    by_run = Predictor.load(f"runs:/{run_id}")
    local = Predictor.load(root / "artifact")
    args = dict(model="llama-2-7b", gpu="a100-80gb", decode=[100, 200])
    assert champion.predict_iteration(**args).total_ms == by_run.predict_iteration(**args).total_ms
    assert champion.predict_iteration(**args).total_ms == local.predict_iteration(**args).total_ms
    assert champion.artifact.metadata["overhead"]["base_ms"] > 0


def test_unknown_mlflow_model_is_a_clear_error(quick_run, monkeypatch):
    _, uri = quick_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(InputError, match="cannot load 'models:/nope@champion'"):
        Predictor.load("models:/nope@champion")


def test_mlflow_download_is_removed_after_loading(monkeypatch, tmp_path):
    """A runs:/ (or models:/) load downloads into a temporary folder that is gone once the model is in memory."""
    import tempfile

    import mlflow

    from predictor.artifact import SHIPPED_DIR

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("download-removal")  # not an experiment id left active by an earlier test's store
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(SHIPPED_DIR), "artifact")
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    predictor = Predictor.load(f"runs:/{run.info.run_id}")
    assert predictor.is_hybrid
    assert list(downloads.glob("inference-sim-artifact-*")) == []  # MLflow may keep its own scratch files there


def test_leave_family_out_holds_out_a_seeded_half_of_each_groups_families():
    """The folds, computed on distinct families and spread to rows, equal a row-by-row reading of the families."""
    import pandas as pd

    from training.splits import FAMILY_GROUPS, leave_family_out

    rng = np.random.default_rng(3)
    names = ["moe:a", "moe:b", "moe:c", "moe:d", "mla_prefill:x", "mla_decode:y", "mla_decode:z", "gemm:q", "other"]
    table = pd.DataFrame({"shape_family": rng.choice(names, 5000)})
    for seed in (0, 1):
        folds = leave_family_out(table, 0.5, seed)
        assert [f.held_out for f in folds] == ["moe", "mla"]  # gemm has one family: no fold
        assert all(np.array_equal(a.test_idx, b.test_idx) for a, b in zip(folds, leave_family_out(table, 0.5, seed)))
        family = table["shape_family"]
        for fold in folds:
            member = family.str.startswith(FAMILY_GROUPS[fold.held_out]).to_numpy()
            keys = family.str.split(":", n=1).str[1]
            held = set(keys.iloc[fold.test_idx])
            candidates = set(keys[member])
            assert len(held) == max(1, round(0.5 * len(candidates))) and held < candidates
            expected = np.flatnonzero(member & keys.isin(held).to_numpy())
            assert np.array_equal(fold.test_idx, expected)
            assert np.array_equal(np.sort(np.concatenate([fold.train_idx, fold.test_idx])), np.arange(len(table)))
