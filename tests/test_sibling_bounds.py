"""The physical GPU ordering and the bracketing of unseen GPUs between trained siblings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from predictor.gpus import get_gpu
from predictor.predictor import Predictor
from predictor.sibling_bounds import bracket, catalogue_specs, dominates, sibling_bounds

TRAINED = ("a100-80gb", "a40", "b200", "h100-sxm", "l40s")  # a fixed set for the ordering tests
# the shipped artifact's: every NVIDIA GPU of the kernel data (training.dataset.training_vendor_rows)
SHIPPED_TRAINED = ("a100-80gb", "a40", "b200", "b300", "gb200", "gb300", "h100-sxm", "l40s",
                   "rtx-pro-6000-server")


def names(specs) -> list[str]:
    return sorted(g.name for g in specs)


def test_h200_dominates_h100_not_the_reverse():
    h200, h100 = get_gpu("h200"), get_gpu("h100-sxm")
    for dtype in ("fp16", "bf16", "fp8"):
        assert dominates(h200, h100, dtype) and not dominates(h100, h200, dtype)
    assert dominates(h100, h100, "fp16")  # reflexive


def test_unsupported_dtype_or_other_vendor_is_never_ordered():
    assert not dominates(get_gpu("h200"), get_gpu("a100-80gb"), "fp8")  # A100 has no fp8 tensor cores
    assert dominates(get_gpu("h200"), get_gpu("a100-80gb"), "fp16")
    assert not dominates(get_gpu("mi300x"), get_gpu("a100-80gb"), "fp16")  # AMD vs NVIDIA
    assert not dominates(get_gpu("b200"), get_gpu("h100-sxm"), "fp4")  # H100 has no fp4


def test_nearest_siblings_are_the_pareto_frontier():
    trained = catalogue_specs(TRAINED)
    slower, faster = sibling_bounds(get_gpu("h200"), trained, "fp16")
    assert names(slower) == ["h100-sxm"] and names(faster) == ["b200"]  # not A100 or A40: H100 lies between
    slower, faster = sibling_bounds(get_gpu("h100-pcie"), trained, "fp16")
    assert names(slower) == ["a40"] and names(faster) == ["h100-sxm"]
    # a trained GPU is not its own sibling
    assert sibling_bounds(get_gpu("h100-sxm"), trained, "fp16") == ((get_gpu("a100-80gb"),), (get_gpu("b200"),))


def test_equal_specs_keep_one_sibling():
    h100 = get_gpu("h100-sxm")
    twin = h100.model_copy(update={"name": "h100-twin"})
    slower, faster = sibling_bounds(h100.model_copy(update={"name": "new", "hbm_bandwidth_gbps": 4000}),
                                    [h100, twin], "fp16")
    assert len(slower) == 1 and faster == ()


def test_bracket_clamps_unseen_rows_only_and_upper_bound_wins():
    ops = pd.DataFrame({"compute_dtype": ["fp16"] * 4})
    h100, h200, pcie = get_gpu("h100-sxm"), get_gpu("h200"), get_gpu("h100-pcie")
    trained = catalogue_specs(["h100-sxm", "a40"])
    by_gpu = {"h100-sxm": np.array([1.0, 1.0, 1.0, 1.0]), "a40": np.array([9.0, 9.0, 0.5, 5.0])}

    def predict_on(rows, gpu):  # a fake model: each trained GPU's time per row
        return by_gpu[gpu.name][rows.index.to_numpy()]

    gpu_names = np.array(["h200", "h200", "pcie", "pcie"], dtype=object)
    specs = {"h200": h200, "pcie": pcie}
    out = bracket(ops, gpu_names, specs, np.array([2.0, 0.5, 0.7, 0.7]), trained, predict_on)
    # H200: at most H100's time; H100-PCIe: at least H100-SXM's, at most A40's (the upper bound wins a crossing)
    np.testing.assert_allclose(out, [1.0, 0.5, 0.5, 1.0])
    trained_rows = bracket(ops, np.array(["h"] * 4, dtype=object), {"h": h100}, np.full(4, 9.0), trained, predict_on)
    np.testing.assert_allclose(trained_rows, 9.0)


def test_shipped_artifact_names_its_training_gpus():
    predictor = Predictor.load()
    assert sorted(predictor.artifact.training_gpus) == sorted(SHIPPED_TRAINED)


@pytest.fixture(scope="module")
def hybrid():
    return Predictor.load()


def _decode_ops(predictor, gpu, batch, context):
    return predictor.predict_iteration("llama-3.1-70b", gpu, 2, "fp8", decode=[context] * batch).ops


@pytest.mark.parametrize("batch,context", [(1, 1_000), (16, 1_100), (64, 2_000), (256, 1_500)])
def test_h200_per_op_between_b200_and_h100(hybrid, batch, context):
    h100, h200 = _decode_ops(hybrid, "h100-sxm", batch, context), _decode_ops(hybrid, "h200", batch, context)
    b200 = _decode_ops(hybrid, "b200", batch, context)
    assert (h200["predicted_ms"].to_numpy() <= h100["predicted_ms"].to_numpy() * (1 + 1e-9)).all()
    # at least B200's time, unless the model puts B200 above H100 (then the upper bound wins)
    floor = np.minimum(b200["predicted_ms"].to_numpy(), h100["predicted_ms"].to_numpy())
    assert (h200["predicted_ms"].to_numpy() >= floor * (1 - 1e-9)).all()
    # and the bound is doing work: the raw model orders some of these ops the wrong way round
    raw = Predictor(hybrid.artifact)
    raw._trained = ()
    assert (_decode_ops(raw, "h200", batch, context)["predicted_ms"].to_numpy()
            > h100["predicted_ms"].to_numpy()).any()


def test_trained_gpu_predictions_are_unchanged(hybrid):
    raw = Predictor(hybrid.artifact)
    raw._trained = ()
    ops = _decode_ops(hybrid, "h100-sxm", 16, 1_100)
    np.testing.assert_array_equal(ops["predicted_ms"].to_numpy(),
                                  _decode_ops(raw, "h100-sxm", 16, 1_100)["predicted_ms"].to_numpy())
