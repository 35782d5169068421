"""benchmarks/experiments/serving_unseen_kernels.py: a fold's kernel model leaves the held-out GPU out of its
training GPUs, so the predictor brackets that GPU's ops between its trained siblings, as it does an H200's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from benchmarks.experiments.serving_unseen_kernels import fold_artifact, render
from features.synthetic import generate
from predictor import Predictor
from training.dataset import from_table


def test_a_fold_artifact_treats_the_held_out_gpu_as_unseen(tmp_path):
    data = from_table(generate(3_000, gpus=["a100-80gb", "h100-sxm", "b200"], seed=3, op_kinds=["gemm"]))
    folder = fold_artifact(data, "h100-sxm", tmp_path / "fold")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["training_gpus"] == ["a100-80gb", "b200"] and "kernel_families" not in meta
    predictor = Predictor.load(str(folder))
    assert sorted(g.name for g in predictor._trained_gpus()) == ["a100-80gb", "b200"]
    ops = data.table[data.table["gpu"] == "h100-sxm"].head(200).drop(columns=["gpu"])
    ops = ops[ops["compute_dtype"].isin(["bf16", "fp16"])]
    on = {g: predictor.predict_ops(ops, g)["predicted_ms"].to_numpy() for g in ("h100-sxm", "a100-80gb", "b200")}
    # the H100 beats the A100 on every 16-bit spec and the B200 beats the H100: bracketed between them
    assert (on["h100-sxm"] <= on["a100-80gb"] * (1 + 1e-9)).all()
    assert (on["h100-sxm"] >= on["b200"] * (1 - 1e-9)).all()
    assert fold_artifact(data, "h100-sxm", folder) == folder  # reused, not refitted


def test_the_page_scores_both_predictions_of_the_same_runs():
    seen = pd.DataFrame({"id": ["a", "b", "c"], "framework": ["vllm", "vllm", "sglang"], "system": ["g1", "g1", "g2"],
                         "pred_ttft_ms": [110.0, 200.0, 50.0], "pred_tpot_ms": [10.0, 20.0, 5.0],
                         "kernel_ttft_ms": [50.0, 100.0, 25.0], "kernel_tpot_ms": [5.0, 10.0, 2.5],
                         "roofline_ttft_ms": [20.0, 40.0, 10.0], "roofline_tpot_ms": [2.0, 4.0, 1.0],
                         "measured_ttft_ms": [100.0, 200.0, 50.0], "measured_tpot_ms": [10.0, 20.0, 5.0]})
    unseen = seen.assign(pred_tpot_ms=seen["pred_tpot_ms"] * 1.5).iloc[:2]  # run c was not predicted
    text = render(seen, unseen, "x.csv")
    rows = {line.split(" | ")[0] + "|" + line.split(" | ")[1]: line.split(" | ")[2:] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line and "framework" not in line}
    assert rows["| vllm|g1"][:7] == ["2", "5.0% / 9%", "5.0% / 9%", "80.0% / 80%", "0.0% / 0%", "50.0% / 50%",
                                     "80.0% / 80%"]
    assert rows["| **all**|all"][0] == "2" and "| sglang" not in text
    assert np.isclose(float(rows["| vllm|g1"][7].split("%")[0]), 50.0)
