"""Kernel families: what each serving runtime's own kernels add to the pooled residual model.

The residual model learns log(measured / roofline) from every kernel table pooled, with no feature naming the
runtime that measured a row: for one shape on one GPU it predicts an average over vLLM's, SGLang's and
TRT-LLM's kernels, which differ (:mod:`features.runtimes`). A second LightGBM, the *kernel family* model, learns
on those runtimes' rows what is left, log(measured / pooled prediction), from the same features plus the
runtime (:data:`features.runtimes.RUNTIME_FEATURE`, categorical). :meth:`predictor.Predictor.for_framework`
applies it; the default predictor (no framework) is the pooled model alone, unchanged.

Physical features and a runtime code, not a per-GPU table: a family learned on the GPUs of the kernel tables
carries to a GPU without them. :func:`held_out_by_gpu` measures exactly that, refitting both models without the
held-out GPU.

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
from training.dataset import TrainingData, balanced_sample
from training.models import ResidualModel

FAMILY_FEATURES = (*MODEL_FEATURES, RUNTIME_FEATURE)
FAMILY_PARAMS = {"num_leaves": 63}
FAMILY_ROUNDS = 300
FAMILY_ROWS = 150_000
FAMILY_BALANCE = ("framework", "gpu", "op_kind")  # every runtime version, GPU and op kind capped alike
MIN_RATIO_TO_ROOFLINE = 0.5  # as predictor.predictor: the pooled prediction the families correct is clamped


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


def held_out_by_gpu(data: TrainingData, params: dict, rounds: int, seed: int = 0, max_rows: int = FAMILY_ROWS,
                    test_rows: int = 100_000) -> pd.DataFrame:
    """Leave one GPU out: the pooled model and the families refitted without it, scored on its runtime rows.

    One row per held-out GPU and runtime (and ``all``): ``rows``, ``pooled_mdape`` / ``family_mdape`` and
    their p90 (fractions). At most ``test_rows`` rows of a GPU are scored (a seeded sample).
    """
    gpu = data.table["gpu"].astype(str).to_numpy()
    codes = runtime_codes(data.table["framework"])
    names = {code: name for name, code in RUNTIME_CODES.items()}
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
        for code in (None, *sorted(set(codes[test]))):
            sel = slice(None) if code is None else codes[test] == code
            a, b = _ape(pooled[sel], measured[sel]), _ape(corrected[sel], measured[sel])
            out.append({"gpu": held, "runtime": "all" if code is None else names[code], "rows": int(a.size),
                        "pooled_mdape": float(np.median(a)), "pooled_p90_ape": float(np.quantile(a, 0.9)),
                        "family_mdape": float(np.median(b)), "family_p90_ape": float(np.quantile(b, 0.9))})
    return pd.DataFrame(out)


def fit_for_artifact(data: TrainingData, base: Callable[[pd.DataFrame], np.ndarray], params: dict, rounds: int,
                     seed: int = 0, evaluate: bool = True) -> tuple[str | None, dict | None]:
    """(booster text, metadata entry) of the families of the pooled model ``base`` (fitted with ``params`` and
    ``rounds``), with :func:`held_out_by_gpu`'s scores when ``evaluate``; (None, None) when ``data`` holds no
    runtime's rows (then an artifact has no families)."""
    if not len(family_positions(data)):
        return None, None
    model, info = fit_families(data, base, seed=seed)
    if evaluate:
        info["held_out_gpu"] = held_out_by_gpu(data, params, rounds, seed).to_dict(orient="records")
    return model.booster_.model_to_string(), info


def add_to_artifact(directory: str | Path | None = None, data: TrainingData | None = None,
                    evaluate: bool = True) -> dict | None:
    """Fit the kernel families of the artifact in ``directory`` (default: shipped) and rewrite it atomically.

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
    params = dict(artifact.metadata["params"])
    text, info = fit_for_artifact(data, lambda X: booster.predict(X.loc[:, features]), params,
                                  int(artifact.metadata["num_boost_round"]), int(params.get("seed", 0)), evaluate)
    if text is not None:
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
