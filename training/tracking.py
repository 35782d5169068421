"""MLflow tracking that never blocks training.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store
``sqlite:///<current folder>/mlflow.db`` (always set explicitly: MLflow's file store is deprecated).
Experiment ``inference-sim-residual``; models are registered as ``inference-sim-residual`` and the
``champion`` alias moves only to a version that beats the current champion's metric.

Every MLflow call goes through :meth:`Tracker._call`: on the first failure (store unreachable,
database locked, permission denied) the tracker warns once, turns itself off and training carries on
to write its artifact. HTTP retries are capped so an unreachable server fails in seconds, not minutes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from predictor.artifact import default_tracking_uri

EXPERIMENT = "inference-sim-residual"
REGISTERED_MODEL = "inference-sim-residual"
CHAMPION_ALIAS = "champion"


def _quiet_mlflow_environment() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class Tracker:
    """A best-effort MLflow run.

    Parameters
    ----------
    tracking_uri : str, optional
        Defaults to :func:`default_tracking_uri`.
    enabled : bool
        ``False`` skips MLflow entirely.
    warn : callable
        Receives the one-line warning when tracking is switched off.
    """

    def __init__(self, tracking_uri: str | None = None, enabled: bool = True,
                 warn: Callable[[str], None] | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.enabled = enabled
        self.warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
        self.run_id: str | None = None
        self.error: str | None = None

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 — any store failure must not stop training
            self.enabled = False
            self.error = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            self.warn(f"MLflow tracking at {self.tracking_uri} failed during {what} ({self.error}); "
                      f"continuing without tracking")
            return None

    def start(self, run_name: str, tags: dict | None = None) -> None:
        if not self.enabled:
            return
        _quiet_mlflow_environment()

        def _start():
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_experiment(EXPERIMENT)
            run = mlflow.start_run(run_name=run_name, tags=tags or {})
            return run.info.run_id

        self.run_id = self._call("start", _start)

    def log_params(self, params: dict) -> None:
        import mlflow

        flat = {k: str(v)[:500] for k, v in params.items()}
        self._call("log_params", mlflow.log_params, flat)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import math

        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self._call("log_metrics", mlflow.log_metrics, clean)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        self._call("log_artifacts", mlflow.log_artifacts, str(directory), artifact_path)

    def log_model(self, booster, X_example, prediction_example) -> str | None:
        """Log the native booster with a signature and register it; return the new version."""

        def _log():
            import lightgbm
            import mlflow.lightgbm
            from mlflow.models import infer_signature

            info = mlflow.lightgbm.log_model(
                booster, name="model", signature=infer_signature(X_example, prediction_example),
                pip_requirements=[f"lightgbm=={lightgbm.__version__}", f"mlflow=={mlflow.__version__}"],
                registered_model_name=REGISTERED_MODEL,
            )
            return str(info.registered_model_version) if info.registered_model_version is not None else None

        return self._call("log_model", _log)

    def promote_if_better(self, version: str | None, metric_key: str, value: float,
                          same_param: tuple[str, str] | None = None) -> tuple[bool, float | None]:
        """Move ``champion`` to ``version`` when ``value`` is lower than the champion's ``metric_key``.

        With ``same_param=(name, value)`` the comparison only counts when the champion's run logged the
        same parameter value (e.g. the same evaluation folds); otherwise the champion stays.
        Returns (promoted, champion's previous value or None).
        """
        if version is None:
            return False, None

        def _promote():
            from mlflow import MlflowClient

            client = MlflowClient(self.tracking_uri)
            try:
                current = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
            except Exception:  # noqa: BLE001 — no champion yet
                current = None
            previous = None
            if current is not None:
                run = client.get_run(current.run_id)
                if same_param is not None and run.data.params.get(same_param[0]) != same_param[1]:
                    return False, None
                previous = run.data.metrics.get(metric_key)
            if current is None or (previous is not None and value < previous):
                client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, version)
                return True, previous
            return False, previous

        result = self._call("promote", _promote)
        return result if result is not None else (False, None)

    def end(self, status: str = "FINISHED") -> None:
        import mlflow

        if self.run_id is not None:
            self._call("end_run", mlflow.end_run, status)
