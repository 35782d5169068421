"""Kernel families: what each serving runtime's own kernels add to the pooled residual model.

The residual model learns log(measured / roofline) from every kernel table pooled, with no feature naming the
runtime that measured a row: for one shape on one GPU it predicts an average over vLLM's, SGLang's and
TRT-LLM's kernels, which differ (:mod:`features.runtimes`). A second LightGBM, the *kernel family* model, learns
on those runtimes' rows what is left, log(measured / pooled prediction), from the same features plus the
runtime (:data:`features.runtimes.RUNTIME_FEATURE`, categorical). :meth:`predictor.Predictor.for_framework`
applies it; the default predictor (no framework) is the pooled model alone, unchanged.

Physical features and a runtime code, not a per-GPU table, so that a family learned on the GPUs of the kernel
tables carries to a GPU without them. :func:`held_out_predictions` measures exactly that, refitting both models
without each GPU in turn; a runtime's family is applied only to the op kinds where it beat the pooled model there
(:func:`applied_families`), and :func:`held_out_by_gpu` scores the families so applied.

``python -m training.kernel_families [ARTIFACT_DIR]`` fits the families of an existing artifact (default: the
shipped one) and rewrites it (same residual model; families, their metadata and the checksums added).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.builder import MODEL_FEATURES
from features.runtimes import NO_RUNTIME, RUNTIME_CODES, RUNTIME_FEATURE, runtime_codes
from predictor.predictor import MIN_RATIO_TO_ROOFLINE  # the pooled prediction the families correct is clamped
from training.dataset import TrainingData, balanced_sample
from training.models import DEFAULT_ROUNDS, ResidualModel

FAMILY_FEATURES = (*MODEL_FEATURES, RUNTIME_FEATURE)
FAMILY_PARAMS = {"num_leaves": 63}
FAMILY_ROUNDS = 300
FAMILY_ROWS = 150_000
FAMILY_BALANCE = ("framework", "gpu", "op_kind")  # every runtime version, GPU and op kind capped alike
MIN_APPLIED_ROWS = 1_000  # held-out rows a runtime's op kind needs before its family may be applied


def family_positions(data: TrainingData) -> np.ndarray:
    """Positions of the rows measured under a serving runtime (the only rows a family learns from)."""
    return np.flatnonzero(runtime_codes(data.table["framework"]) != NO_RUNTIME)


def family_matrix(X: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
    """The family model's features: the residual model's and the runtime code."""
    out = X.loc[:, list(MODEL_FEATURES)].copy()
    out[RUNTIME_FEATURE] = np.asarray(codes, dtype=np.int64)
    return out


def _pooled_log_ratio(base: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame) -> np.ndarray:
    return np.log(np.maximum(np.exp(base(X)), MIN_RATIO_TO_ROOFLINE))


def fit_families(data: TrainingData, base: Callable[[pd.DataFrame], np.ndarray], positions: np.ndarray | None = None,
                 seed: int = 0, max_rows: int = FAMILY_ROWS) -> tuple[ResidualModel, dict]:
    """The family model over ``positions`` (default: every runtime row), balanced to ``max_rows``.

    Parameters
    ----------
    base : callable
        The pooled residual model: feature matrix → predicted log(measured / roofline).

    Returns
    -------
    (model, info)
        ``info`` is the artifact metadata's ``kernel_families`` entry: features, runtime codes, the op kinds
        learned (others are left uncorrected), rows, parameters.
    """
    positions = family_positions(data) if positions is None else np.asarray(positions)
    rows = balanced_sample(data.table, positions, max_rows, seed, by=FAMILY_BALANCE)
    X = data.X.iloc[rows]
    target = data.log_ratio[rows] - _pooled_log_ratio(base, X)
    model = ResidualModel({**FAMILY_PARAMS, "seed": seed}, FAMILY_ROUNDS, FAMILY_FEATURES, monotone_decreasing=())
    model.fit(family_matrix(X, runtime_codes(data.table["framework"].iloc[rows])), target)
    kinds = data.table["op_kind"].iloc[rows].astype(str)
    info = {"features": list(FAMILY_FEATURES), "runtimes": dict(RUNTIME_CODES),
            "op_kinds": sorted(kinds.unique().tolist()), "training_rows": int(len(rows)),
            "params": model._lgb_params() | {"num_threads": None}, "num_boost_round": FAMILY_ROUNDS}
    return model, info


def _ape(log_pred: np.ndarray, log_measured: np.ndarray) -> np.ndarray:
    return np.abs(np.exp(log_pred - log_measured) - 1.0)


def held_out_predictions(data: TrainingData, params: dict, rounds: int, seed: int = 0, max_rows: int = FAMILY_ROWS,
                         test_rows: int = 100_000) -> pd.DataFrame:
    """Leave one GPU out: the pooled model and the families refitted without it, predicting its runtime rows.

    One row per scored kernel row: ``gpu``, ``runtime``, ``op_kind``, ``pooled_ape`` (the pooled model alone) and
    ``family_ape`` (with the row's runtime family), absolute percentage errors as fractions. At most ``test_rows``
    rows of a GPU are scored (a seeded sample).
    """
    gpu = data.table["gpu"].astype(str).to_numpy()
    kinds = data.table["op_kind"].astype(str).to_numpy()
    codes = runtime_codes(data.table["framework"])
    names = np.array(sorted(RUNTIME_CODES, key=RUNTIME_CODES.get), dtype=object)
    out = []
    for held in sorted(set(gpu[codes != NO_RUNTIME])):
        train = balanced_sample(data.table, np.flatnonzero(gpu != held), max_rows, seed)
        base = ResidualModel(params, rounds).fit(data.X.iloc[train], data.log_ratio[train])
        family, _ = fit_families(data, base.predict_log_ratio, np.flatnonzero((gpu != held) & (codes != NO_RUNTIME)),
                                 seed, max_rows)
        test = np.flatnonzero((gpu == held) & (codes != NO_RUNTIME))
        if len(test) > test_rows:
            test = np.sort(np.random.default_rng(seed).choice(test, test_rows, replace=False))
        X = data.X.iloc[test]
        pooled = _pooled_log_ratio(base.predict_log_ratio, X)
        corrected = pooled + family.predict_log_ratio(family_matrix(X, codes[test]))
        measured = data.log_ratio[test]
        out.append(pd.DataFrame({"gpu": held, "runtime": names[codes[test]], "op_kind": kinds[test],
                                 "pooled_ape": _ape(pooled, measured), "family_ape": _ape(corrected, measured)}))
    return pd.concat(out, ignore_index=True)


def applied_families(predictions: pd.DataFrame, min_rows: int = MIN_APPLIED_ROWS) -> dict[str, list[str]]:
    """The op kinds each runtime's family is applied to: those whose held-out rows (:func:`held_out_predictions`,
    at least ``min_rows``) it predicts with a lower MdAPE than the pooled model both over all held-out GPUs
    together and on more than half of the held-out GPUs one by one (a gain that one GPU carries is not taken)."""
    keys = ["runtime", "op_kind"]
    stats = predictions.groupby(keys).agg(rows=("pooled_ape", "size"), pooled=("pooled_ape", "median"),
                                          family=("family_ape", "median"))
    per_gpu = predictions.groupby([*keys, "gpu"]).agg(pooled=("pooled_ape", "median"), family=("family_ape", "median"))
    won = (per_gpu["family"] < per_gpu["pooled"]).groupby(level=keys).agg(["sum", "size"])
    better = stats[(stats["rows"] >= min_rows) & (stats["family"] < stats["pooled"])
                   & (2 * won["sum"] > won["size"]).reindex(stats.index, fill_value=False)]
    applied = {name: [] for name in RUNTIME_CODES}
    for runtime, kind in better.index:
        applied[runtime].append(kind)
    return {name: sorted(kinds) for name, kinds in applied.items()}


def held_out_by_gpu(predictions: pd.DataFrame, applied: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """MdAPE / p90 APE per held-out GPU and runtime (and ``all``) of the pooled model and with the families,
    applied to the op kinds of ``applied`` only when given (elsewhere the pooled prediction stands)."""
    frame = predictions
    if applied is not None:
        used = np.zeros(len(frame), dtype=bool)
        for runtime, kinds in applied.items():
            used |= (frame["runtime"].to_numpy() == runtime) & frame["op_kind"].isin(kinds).to_numpy()
        frame = frame.assign(family_ape=np.where(used, frame["family_ape"], frame["pooled_ape"]))
    out = []
    for held, rows in frame.groupby("gpu", sort=True):
        for runtime in ("all", *sorted(set(rows["runtime"]), key=RUNTIME_CODES.get)):
            part = rows if runtime == "all" else rows[rows["runtime"] == runtime]
            a, b = part["pooled_ape"].to_numpy(), part["family_ape"].to_numpy()
            out.append({"gpu": held, "runtime": runtime, "rows": int(a.size),
                        "pooled_mdape": float(np.median(a)), "pooled_p90_ape": float(np.quantile(a, 0.9)),
                        "family_mdape": float(np.median(b)), "family_p90_ape": float(np.quantile(b, 0.9))})
    return pd.DataFrame(out)


def fit_for_artifact(data: TrainingData, base: Callable[[pd.DataFrame], np.ndarray], params: dict, rounds: int,
                     seed: int = 0, evaluate: bool = True, max_rows: int = FAMILY_ROWS) -> tuple[str | None, dict | None]:
    """(booster text, metadata entry) of the families of the pooled model ``base`` (fitted with ``params`` and
    ``rounds``), each model on at most ``max_rows`` balanced rows; (None, None) when ``data`` holds no runtime's rows
    (then an artifact has no families).

    With ``evaluate``, the entry's ``applied`` names the op kinds each family is applied to
    (:func:`applied_families`, decided on held-out GPUs' kernel rows) and ``held_out_gpu`` the scores
    (:func:`held_out_by_gpu`) with the families so applied; without (a quick run), every learned op kind is.
    """
    if not len(family_positions(data)):
        return None, None
    model, info = fit_families(data, base, seed=seed, max_rows=max_rows)
    if evaluate:
        predictions = held_out_predictions(data, params, rounds, seed, max_rows)
        info["applied"] = applied_families(predictions)
        info["held_out_gpu"] = held_out_by_gpu(predictions, info["applied"]).to_dict(orient="records")
    return model.booster_.model_to_string(), info


def add_to_artifact(directory: str | Path | None = None, data: TrainingData | None = None,
                    evaluate: bool = True) -> dict | None:
    """Fit the kernel families of the artifact in ``directory`` (default: shipped) and rewrite it atomically, under
    the folder's training lock, unless a training run replaced its model meanwhile (then :class:`InputError`).

    The residual model is unchanged; the metadata gains ``kernel_families`` (:func:`fit_for_artifact`). Returns
    that entry (None, and nothing rewritten, when the data holds no runtime's rows).
    """
    import lightgbm as lgb

    from predictor.artifact import load_artifact, save_artifact
    from training.dataset import load_training_data

    artifact = load_artifact(directory, MODEL_FEATURES)
    data = data if data is not None else load_training_data()
    booster = lgb.Booster(model_str=artifact.model_text)
    features = list(artifact.metadata["feature_names"])
    params = dict(artifact.metadata.get("params", {}))  # the pooled model's, refitted per held-out GPU to evaluate
    rounds = int(artifact.metadata.get("num_boost_round", DEFAULT_ROUNDS))
    text, info = fit_for_artifact(data, lambda X: booster.predict(X.loc[:, features]), params, rounds,
                                  int(params.get("seed", 0)), evaluate)
    if text is not None:
        from predictor.errors import InputError
        from training.pipeline import artifact_lock

        with artifact_lock(artifact.path):  # a training run may have replaced the folder while the families fitted
            if load_artifact(artifact.path, MODEL_FEATURES).model_text != artifact.model_text:
                raise InputError(f"artifact: {str(artifact.path)!r} was replaced while its kernel families were "
                                 f"fitted; nothing written (run again)")
            save_artifact(artifact.path, artifact.model_text, {**artifact.metadata, "kernel_families": info}, text)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", nargs="?", default=None, help="artifact folder (default: the shipped one)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the leave-one-GPU-out scores")
    args = parser.parse_args(argv)
    info = add_to_artifact(args.artifact, evaluate=not args.no_evaluate)
    if info is None:
        raise SystemExit("error: the training data holds no serving runtime's kernel rows; no families fitted")
    print(json.dumps({k: v for k, v in info.items() if k != "params"}, indent=1, default=float))


if __name__ == "__main__":
    main()
