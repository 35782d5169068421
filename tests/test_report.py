"""`inference-sim report` and the claims recorded with the shipped artifact."""

from __future__ import annotations

import json

from inference_sim.cli import main
from predictor import Predictor
from training.report import load_evaluation


def test_report_json_shape_and_files(capsys, tmp_path):
    code = main(["report", "--json", "--out-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload["splits"]) == {"leave_one_model_out", "leave_one_gpu_out", "leave_family_out", "random"}
    for methods in payload["splits"].values():
        assert set(methods) == {"hybrid", "roofline", "roofline_calibrated", "ml_only"}
        for stats in methods.values():
            assert set(stats) == {"mdape", "p90_ape"} and 0 <= stats["mdape"] < 10  # fractions, not percent
    text = (tmp_path / "accuracy.md").read_text()
    assert "Leave one model out" in text and "20 worst held-out rows" in text
    assert (tmp_path / "accuracy_scatter.png").stat().st_size > 0


def test_report_table_and_example(capsys, tmp_path):
    code = main(["report", "--out-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0 and "Example: one decode step" in out and "hybrid" in out


def test_shipped_artifact_meets_its_stated_targets():
    """Guards the committed artifact: leave-one-model-out hybrid MdAPE ≤ 5%, ≥ 5× below roofline-only,
    and below ML-only on every held-out model (figures computed on held-out rows at training time)."""
    evaluation, _, metadata = load_evaluation()
    lomo = evaluation["splits"]["leave_one_model_out"]
    assert lomo["hybrid"]["overall"]["mdape"] <= 0.05
    assert lomo["roofline"]["overall"]["mdape"] >= 5 * lomo["hybrid"]["overall"]["mdape"]
    for model, stats in lomo["hybrid"]["by_held_out"].items():
        assert stats["mdape"] < lomo["ml_only"]["by_held_out"][model]["mdape"], model
    assert metadata["quick"] is False
    assert len(lomo["hybrid"]["by_held_out"]) == 8


def test_shipped_predictor_loads_and_beats_roofline_time():
    p = Predictor.load()
    r = p.predict_iteration("llama-2-7b", "h100-sxm", decode=[512] * 8)
    assert r.total_ms > r.roofline_ms > 0
