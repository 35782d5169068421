"""Serving calibration: a learned map from the simulator's closed-loop run to a framework's measured TTFT/TPOT.

The simulator reproduces the scheduler (continuous batching, chunked prefill, KV capacity, the closed loop)
with kernel times only. What a real stack adds on top — CPU and launch overhead per step, its own kernels,
the HTTP / tokeniser path, how its benchmark client warms up — is learned here from measured serving runs,
as the log-ratio of measured over simulated time::

    TTFT_ms = sim_TTFT_ms × exp(f_ttft(x)),   TPOT_ms = sim_TPOT_ms × exp(f_tpot(x))

``f`` is a small LightGBM model (L1 loss, so it fits the median ratio) on **physical features only**
(:data:`FEATURES`): the simulated times themselves (kernel-only hybrid and roofline), the closed loop's shape
(ISL, OSL, clients per replica, the inter-completion gap), KV pressure, the parallel layout and the
framework; TPOT also sees the kernel launches of a decode step (:data:`LAUNCH_FEATURES`). No GPU or model identity is a feature, so a GPU or a model the fit never saw is predicted from its
simulated physics; held-out accuracy is measured by refitting without the held-out group
(``benchmarks/experiments/serving_accuracy.py``). Architecture descriptors (parameter counts, layers, MLA, vocabulary)
were tried as features: TTFT held out by GPU moved within the seed spread, TPOT held out by model got worse.

**TTFT of an aggregated run that no anchor covers** is the geometric mean of this calibration's and the
engine-profile simulation's (``profile_ttft_ms`` in the basis: the run simulated with its framework's
:mod:`scheduler.engine_profiles` step costs). The two are different models of the same quantity — a learned
correction of a kernel-only run, and a simulation with fitted per-step costs — whose errors are only partly
shared: on held-out GPUs and held-out models the mean in log space beat each alone on TTFT (not on TPOT, which
stays the calibration's; ``docs/serving-accuracy.md``). An anchored run keeps the anchored calibration: its
sibling's measurements are better evidence than either model.

The fitted model is stored as JSON (LightGBM's text dump inside; never a pickle) and written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.runtimes import NO_RUNTIME, RUNTIME_CODES
from predictor.errors import InputError
from scheduler.serving_anchors import ANCHOR_COLUMNS, ANCHOR_VALUES, corrections, residual_table

CALIBRATION_PATH = Path(__file__).resolve().parents[1] / "data" / "serving_calibration.json"
FEATURES = ("framework", "disagg", "log_isl", "log_osl", "log_clients", "log_clients_per_replica", "log_gpus",
            "log2_tp", "log2_ep", "log2_dp", "log_sim_ttft", "log_sim_tpot", "log_sim_first_ttft", "log_sim_queue",
            "log_roof_ttft", "log_roof_tpot", "kernel_over_roof_tpot", "kernel_over_roof_ttft", "kv_demand",
            "log_gap", "prefill_share")
# TPOT also sees the kernel launches of a decode step: a small step's measured time on a CUDA-graph stack is
# set by its per-kernel cost as much as by its simulated work (kept for TPOT only: no held-out gain on TTFT)
LAUNCH_FEATURES = ("log_kernels", "log_kernels_per_ms")
TARGET_FEATURES = {"ttft": FEATURES, "tpot": FEATURES + LAUNCH_FEATURES}
ALL_FEATURES = FEATURES + LAUNCH_FEATURES
TARGETS = ("ttft", "tpot")
PARAMS = {"objective": "l1", "learning_rate": 0.05, "num_leaves": 7, "min_data_in_leaf": 40,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
          "seed": 7, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1}
# targets whose prediction without anchors is the geometric mean with the engine-profile simulation's (module docstring)
BLENDED = ("ttft",)
ROUNDS = 300
MIN_ROWS = 30


def _log(values) -> np.ndarray:
    return np.log(np.maximum(np.asarray(values, float), 1e-6))


def serving_features(frame: pd.DataFrame) -> pd.DataFrame:
    """:data:`ALL_FEATURES` of each run of a basis table (columns of :func:`scheduler.serving_eval.kernel_basis`:
    ``kernel_{ttft,tpot,first_ttft,queue}_ms``, ``kernel_kv_tokens``, ``kernel_launches``, ``roofline_{ttft,tpot}_ms``,
    and the
    run's ``framework``, ``mode``, ``isl``, ``osl``, ``concurrency``, parallel degrees and pools)."""
    f = frame
    disagg = (f["mode"].astype(str) == "disagg").to_numpy()
    pool = lambda name, agg: np.where(disagg, f[f"decode_{name}"].to_numpy(float), agg)  # noqa: E731
    tp = pool("tp_size", f["tp"].to_numpy(float))
    ep = pool("moe_ep_size", f["ep"].to_numpy(float))
    dp = pool("attention_dp_size", f["dp_attention"].to_numpy(float))
    workers = np.where(disagg, f["decode_num_workers"].to_numpy(float), 1.0)
    clients = f["concurrency"].to_numpy(float)
    isl, osl = f["isl"].to_numpy(float), f["osl"].to_numpy(float)
    ttft, tpot = f["kernel_ttft_ms"].to_numpy(float), f["kernel_tpot_ms"].to_numpy(float)
    roof_ttft, roof_tpot = f["roofline_ttft_ms"].to_numpy(float), f["roofline_tpot_ms"].to_numpy(float)
    cycle = ttft + np.maximum(osl - 1, 0) * tpot
    gpus = f["gpus"].to_numpy(float) if "gpus" in f else tp * dp * workers
    out = pd.DataFrame({
        "framework": f["framework"].map(RUNTIME_CODES).fillna(NO_RUNTIME).to_numpy(float),
        "disagg": disagg.astype(float),
        "log_isl": _log(isl), "log_osl": _log(osl), "log_clients": _log(clients),
        "log_clients_per_replica": _log(clients / (dp * workers)), "log_gpus": _log(gpus),
        "log2_tp": np.log2(tp), "log2_ep": np.log2(ep), "log2_dp": np.log2(dp),
        "log_sim_ttft": _log(ttft), "log_sim_tpot": _log(tpot),
        "log_sim_first_ttft": _log(f["kernel_first_ttft_ms"]), "log_sim_queue": _log(f["kernel_queue_ms"] + 1.0),
        "log_roof_ttft": _log(roof_ttft), "log_roof_tpot": _log(roof_tpot),
        "kernel_over_roof_tpot": tpot / np.maximum(roof_tpot, 1e-6),
        "kernel_over_roof_ttft": ttft / np.maximum(roof_ttft, 1e-6),
        "kv_demand": clients * (isl + osl) / np.maximum(f["kernel_kv_tokens"].to_numpy(float), 1.0),
        "log_gap": _log(cycle / clients), "prefill_share": ttft / np.maximum(cycle, 1e-6),
        "log_kernels": _log(f["kernel_launches"]), "log_kernels_per_ms": _log(f["kernel_launches"] / tpot),
    }, index=frame.index)
    return out[list(ALL_FEATURES)]


def usable(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose basis is complete (finite, positive simulated times)."""
    cols = ["kernel_ttft_ms", "kernel_tpot_ms", "roofline_ttft_ms", "roofline_tpot_ms", "kernel_launches"]
    if any(c not in frame for c in cols):
        return np.zeros(len(frame), bool)
    values = frame[cols].to_numpy(float)
    return np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)


@dataclass
class ServingCalibration:
    """Fitted TTFT / TPOT corrections (see the module docstring).

    Attributes
    ----------
    models : dict
        ``{"ttft": lightgbm.Booster, "tpot": lightgbm.Booster}``.
    fitted_rows : int
        Measured runs of the fit.
    source : str
        Where the runs came from.
    fitted_ids : frozenset of str
        The ``id`` of every run of the fit (so that scores on them can be told apart as in-sample).
    anchors : DataFrame, optional
        Measured runs kept with the calibration, each with its residual against it
        (:func:`scheduler.serving_anchors.residual_table`): a run whose configuration they hold on a sibling GPU is
        anchored to them (see :mod:`scheduler.serving_anchors`).
    systems : tuple of str
        The GPUs of the fit (a run on another GPU may be bounded by its prediction on one of them:
        :mod:`scheduler.serving_bounds`); empty for a calibration saved before they were recorded.
    """

    models: dict
    fitted_rows: int
    source: str = ""
    frameworks: dict = field(default_factory=dict)
    fitted_ids: frozenset = frozenset()
    anchors: pd.DataFrame | None = None
    systems: tuple = ()

    @classmethod
    def fit(cls, basis: pd.DataFrame, source: str = "", anchor_runs: pd.DataFrame | None = None,
            params: dict | None = None) -> ServingCalibration:
        """Fit on every usable run of ``basis`` with measured TTFT and TPOT (see :func:`serving_features`).
        ``anchor_runs`` (default: the fit's runs) are the measured runs kept for anchoring, each with its residual
        against this calibration (:mod:`scheduler.serving_anchors`). ``params``: LightGBM's (default :data:`PARAMS`)."""
        rows = _measured(basis)
        if len(rows) < MIN_ROWS:
            raise InputError(f"fit: {len(rows)} usable measured runs; need at least {MIN_ROWS}")
        models = fit_boosters(rows, params=params)
        counts = rows["framework"].value_counts().sort_index()
        ids = frozenset(rows["id"].astype(str)) if "id" in rows else frozenset()
        systems = tuple(sorted(rows["system"].astype(str).str.lower().unique())) if "system" in rows else ()
        fitted = cls(models, int(len(rows)), source, {str(k): int(v) for k, v in counts.items()}, ids, systems=systems)
        pool = rows if anchor_runs is None else _measured(anchor_runs)
        if "system" in pool and len(pool):
            # the calibration's own residuals (no profile blend): an anchored prediction is the calibration's
            own = pool.drop(columns=[f"profile_{t}_ms" for t in BLENDED], errors="ignore")
            fitted.anchors = residual_table(own, fitted.predict(own, anchored=False))
        return fitted

    def predict(self, basis: pd.DataFrame, anchored: bool = True, bounds: pd.DataFrame | None = None) -> pd.DataFrame:
        """``ttft_ms`` / ``tpot_ms`` for every row of ``basis`` (NaN where the basis is incomplete), and
        ``anchor_runs``: the anchors' runs of the same configuration on sibling GPUs that anchor the row (when
        ``anchored``; see :mod:`scheduler.serving_anchors`). Where ``basis`` has ``profile_ttft_ms`` (finite) and
        no anchor covers the row, TTFT is blended with it (:data:`BLENDED`, the module docstring). ``bounds``
        (index of ``basis``; ``ttft_ms`` / ``tpot_ms``, inf where none: :func:`scheduler.serving_bounds.upper_bounds`)
        caps the calibration's part of the rows no anchor covers (before the blend); ``bounded`` says where it
        lowered either target."""
        out = pd.DataFrame({"ttft_ms": np.nan, "tpot_ms": np.nan, "anchor_runs": 0, "bounded": False},
                           index=basis.index)
        ok = usable(basis)
        if ok.any():
            x = serving_features(basis[ok])
            shift = corrections(self.anchors if anchored else None, basis[ok])
            unanchored = shift["runs"].to_numpy() == 0
            bounded = np.zeros(int(ok.sum()), bool)
            for target in TARGETS:
                log_ms = (np.log(basis.loc[ok, f"kernel_{target}_ms"].to_numpy(float)) + shift[target].to_numpy(float)
                          + self.models[target].predict(x[list(TARGET_FEATURES[target])].to_numpy(float)))
                if bounds is not None:  # the calibration's own part, before any blend (scheduler.serving_bounds)
                    cap = np.log(bounds.loc[ok, f"{target}_ms"].to_numpy(float))
                    capped = unanchored & (cap < log_ms)
                    log_ms[capped] = cap[capped]
                    bounded |= capped
                if target in BLENDED and f"profile_{target}_ms" in basis:
                    profile = basis.loc[ok, f"profile_{target}_ms"].to_numpy(float)
                    blend = unanchored & np.isfinite(profile) & (profile > 0)
                    log_ms[blend] = 0.5 * (log_ms[blend] + np.log(profile[blend]))
                log_ms = np.clip(log_ms, shift[f"{target}_lower"].to_numpy(float), shift[f"{target}_upper"].to_numpy(float))
                out.loc[ok, f"{target}_ms"] = np.exp(log_ms)
            out.loc[ok, "anchor_runs"] = shift["runs"].to_numpy()
            out.loc[ok, "bounded"] = bounded
        return out

    def anchor_runs(self, frame: pd.DataFrame) -> np.ndarray:
        """The anchors' runs of each run's configuration on sibling GPUs (0: no anchor covers it, and
        :meth:`predict` gives the calibration's own prediction, TTFT blended with a profile simulation)."""
        return corrections(self.anchors, frame)["runs"].to_numpy()

    def to_json(self) -> str:
        return json.dumps({"format": "inference-sim serving calibration v2", "features": _feature_lists(),
                           "fitted_rows": self.fitted_rows, "source": self.source, "frameworks": self.frameworks,
                           "fitted_ids": sorted(self.fitted_ids), "systems": list(self.systems),
                           # one CSV text (floats to 9 significant digits): thousands of runs stay compact
                           "anchors_csv": (None if self.anchors is None else
                                           self.anchors[list(ANCHOR_COLUMNS)].to_csv(index=False, float_format="%.9g")),
                           "models": {k: m.model_to_string() for k, m in sorted(self.models.items())}},
                          indent=1, sort_keys=True) + "\n"

    def save(self, path: str | Path = CALIBRATION_PATH) -> Path:
        """Write atomically (temporary sibling, then rename)."""
        from predictor.atomic import atomic_write

        return atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path | None = None) -> ServingCalibration:
        """The calibration at ``path`` (default: the shipped one). Raises :class:`InputError` when it is
        missing, not a calibration, or fitted on other features."""
        import lightgbm as lgb

        from predictor.cpus import available_cpus

        file = Path(path) if path is not None else CALIBRATION_PATH
        try:
            raw = json.loads(file.read_text())
        except FileNotFoundError:
            raise InputError(f"calibration: {str(file)!r} does not exist (run "
                             "python -m benchmarks.experiments.serving_accuracy to fit it)") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"calibration: {str(file)!r} is not valid JSON") from None
        if not isinstance(raw, dict) or raw.get("features") != _feature_lists() or set(raw.get("models", {})) != set(TARGETS):
            raise InputError(f"calibration: {str(file)!r} is not a serving calibration of this version (other features; "
                             "refit it with python -m benchmarks.experiments.serving_accuracy)")
        models = {k: lgb.Booster(model_str=v) for k, v in raw["models"].items()}
        for model in models.values():
            model.params["num_threads"] = available_cpus()
        anchors = _anchors_from_csv(raw["anchors_csv"]) if raw.get("anchors_csv") else None
        return cls(models, int(raw.get("fitted_rows", 0)), str(raw.get("source", "")), dict(raw.get("frameworks", {})),
                   frozenset(str(i) for i in raw.get("fitted_ids", [])), anchors,
                   tuple(str(s) for s in raw.get("systems", ())))


def balanced_sample(runs: pd.DataFrame, max_per_group: int) -> pd.DataFrame:
    """At most ``max_per_group`` runs per framework, GPU, model and mode (the first by ``id``; 0: every run), in
    their original order: the runs the shipped calibration is fitted on, so that no GPU outweighs the rest."""
    if not max_per_group:
        return runs
    return (runs.sort_values("id", kind="stable").groupby(["framework", "system", "model_path", "mode"])
            .head(max_per_group).sort_index())


def _anchors_from_csv(text: str) -> pd.DataFrame:
    import io

    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    for column in ANCHOR_VALUES:
        table[column] = table[column].astype(float)
    return table


def _measured(basis: pd.DataFrame) -> pd.DataFrame:
    """The usable runs of ``basis`` with finite, positive measured TTFT and TPOT."""
    return basis[usable(basis) & np.isfinite(basis["measured_ttft_ms"].to_numpy(float))
                 & np.isfinite(basis["measured_tpot_ms"].to_numpy(float))
                 & (basis["measured_ttft_ms"] > 0) & (basis["measured_tpot_ms"] > 0)]


def _feature_lists() -> dict:
    return {t: list(TARGET_FEATURES[t]) for t in TARGETS}


def fit_boosters(rows: pd.DataFrame, features: dict | None = None, params: dict | None = None,
                 ratio: bool = True) -> dict:
    """One LightGBM booster per target (:data:`TARGETS`) on ``features[target]`` (default
    :data:`TARGET_FEATURES`) of ``rows`` (measured runs with their kernel-only basis): of log(measured / simulated)
    when ``ratio`` (the calibration's form), else of log(measured). ``params`` default to :data:`PARAMS`; a
    callable ``params(names)`` gives each target's parameters from its feature names."""
    import lightgbm as lgb

    table = serving_features(rows)
    models = {}
    for target in TARGETS:
        names = list((features or TARGET_FEATURES)[target])
        x = table[names].to_numpy(float)
        y = rows[f"measured_{target}_ms"].to_numpy(float)
        y = np.log(y / rows[f"kernel_{target}_ms"].to_numpy(float) if ratio else y)
        data = lgb.Dataset(x, y, feature_name=names, free_raw_data=False)
        target_params = params(names) if callable(params) else params
        models[target] = lgb.train(target_params or PARAMS, data, num_boost_round=ROUNDS)
    return models


def held_out(basis: pd.DataFrame, group: str, anchor_runs: pd.DataFrame | None = None,
             params: dict | None = None, relabelled: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each usable run of ``basis`` predicted by a calibration fitted without its ``group`` value
    (``system``: leave one GPU out; ``model``: leave one model out), anchored to ``anchor_runs`` (default: the
    fit's runs) less that value too. Returns the runs with ``pred_ttft_ms`` / ``pred_tpot_ms``, the same without
    anchoring (``unanchored_*_ms``) and without the dominance bound (``unbounded_*_ms``), ``anchor_runs``,
    ``fit_rows``, ``bound_gpus`` and ``bounded`` (:meth:`ServingCalibration.predict`'s); groups whose complement has
    too few runs are left out. ``params``: LightGBM's (default :data:`PARAMS`). ``relabelled``: the kernel-only
    basis of the runs relabelled to the fitted GPUs their GPU dominates (:func:`held_out_requests`), which bounds
    the unanchored runs of a GPU outside the fit (:mod:`scheduler.serving_bounds`); without it, no bound."""
    from scheduler.serving_bounds import bound_requests, relabelled_ids, upper_bounds

    rows = basis[usable(basis)]
    parts = []
    for value in sorted(rows[group].astype(str).unique()):
        mask = rows[group].astype(str) == value
        try:
            calibration = ServingCalibration.fit(
                rows[~mask], anchor_runs=None if anchor_runs is None else anchor_runs[anchor_runs[group].astype(str) != value],
                params=params)
        except InputError:
            continue
        bounds = None
        if relabelled is not None:
            wanted = bound_requests(rows[mask], calibration.systems)
            names = set(relabelled_ids(wanted))
            missing = names - set(relabelled["id"].astype(str))
            if missing:
                raise ValueError(f"relabelled: {len(missing)} bounding runs missing (e.g. {sorted(missing)[0]!r})")
            bounds = upper_bounds(calibration, relabelled[relabelled["id"].astype(str).isin(names)], rows[mask])
        pred = calibration.predict(rows[mask], bounds=bounds)
        alone = calibration.predict(rows[mask], anchored=False)
        part = rows[mask].copy()
        part["pred_ttft_ms"], part["pred_tpot_ms"] = pred["ttft_ms"], pred["tpot_ms"]
        part["unanchored_ttft_ms"], part["unanchored_tpot_ms"] = alone["ttft_ms"], alone["tpot_ms"]
        part["anchor_runs"] = pred["anchor_runs"]
        part["bound_gpus"] = 0 if bounds is None else bounds["bound_gpus"].to_numpy()
        part["bounded"] = pred["bounded"]
        unbounded = pred if bounds is None else calibration.predict(rows[mask])
        part["unbounded_ttft_ms"], part["unbounded_tpot_ms"] = unbounded["ttft_ms"], unbounded["tpot_ms"]
        part["fit_rows"] = calibration.fitted_rows
        parts.append(part)
    return pd.concat(parts) if parts else rows.iloc[:0]


def held_out_requests(basis: pd.DataFrame, group: str = "system") -> pd.DataFrame:
    """Every (``id``, ``system``) bounding simulation :func:`held_out` needs for ``basis`` held out by ``group``:
    each group's runs against the GPUs of the other groups' usable measured runs (the folds' fits)."""
    from scheduler.serving_bounds import bound_requests

    rows, fitted = basis[usable(basis)], _measured(basis)
    parts = [bound_requests(rows[rows[group].astype(str) == value],
                            sorted(fitted.loc[fitted[group].astype(str) != value, "system"].astype(str).str.lower().unique()))
             for value in sorted(rows[group].astype(str).unique())]
    return pd.concat(parts, ignore_index=True).drop_duplicates() if parts else bound_requests(rows.iloc[:0], ())


def ape(pred, measured) -> np.ndarray:
    """Absolute percentage errors (fractions) of the finite pairs."""
    out = np.abs(np.asarray(pred, float) - np.asarray(measured, float)) / np.asarray(measured, float)
    return out[np.isfinite(out)]


def mdape(pred, measured) -> float:
    values = ape(pred, measured)
    return float(np.median(values)) if len(values) else math.nan
