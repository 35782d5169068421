"""MLflow tracking that never blocks training.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store
``sqlite:///<current folder>/mlflow.db`` (always set explicitly: MLflow's file store is deprecated).
Experiment ``inference-sim-residual``; models are registered as ``inference-sim-residual`` and the
``champion`` alias moves only to a version that beats the current champion's metric.

Every MLflow call goes through :meth:`Tracker._call`: on the first failure (store unreachable,
database locked, permission denied) the tracker warns once, turns itself off and training carries on
to write its artifact. MLflow's own error logs (it prints a traceback for a locked SQLite database)
are silenced during those calls so the warning is the only line; a locked SQLite store costs MLflow's
20 s busy timeout once. HTTP retries are capped so an unreachable server fails in seconds, not minutes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from predictor.artifact import default_tracking_uri
from predictor.artifact import mlflow_logs_quiet as _mlflow_logs_quiet

EXPERIMENT = "inference-sim-residual"
REGISTERED_MODEL = "inference-sim-residual"
CHAMPION_ALIAS = "champion"


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def check_tracking_uri(uri: str | None) -> None:
    """Raise :class:`~predictor.errors.InputError` for a tracking URI MLflow cannot use at all.

    Only the form is checked (a known scheme, or a plain folder path for a file store); whether the store
    is reachable is found out when training logs to it (a failure then only warns).
    """
    from predictor.errors import InputError

    if uri is None or uri == "":
        return
    if not isinstance(uri, str) or any(ch in uri for ch in "\n\r\x00"):
        raise InputError(f"--tracking-uri: {uri!r} is not a URI")
    scheme, sep, rest = uri.partition(":")
    if not sep or len(scheme) == 1:  # a plain path (or a Windows drive letter): a file store
        return
    base = scheme.split("+", 1)[0].lower()  # e.g. postgresql+psycopg2
    if base not in TRACKING_SCHEMES:
        raise InputError(f"--tracking-uri: unsupported scheme {scheme!r} in {uri!r}; allowed: "
                         f"{', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db or http://host:5000)")
    if base == "sqlite" and not rest.startswith("///"):
        raise InputError(f"--tracking-uri: {uri!r} must look like sqlite:///relative/path.db or "
                         f"sqlite:////absolute/path.db")
    if base in ("http", "https") and not rest.startswith("//"):
        raise InputError(f"--tracking-uri: {uri!r} must look like {base}://host[:port]")


SQLITE_LOCK_WAIT_S = 5.0


def _sqlite_writable(uri: str, wait_s: float = SQLITE_LOCK_WAIT_S) -> None:
    """For an existing SQLite store, take (and release) a write lock, waiting at most ``wait_s``.

    MLflow itself waits up to 20 s on every locked call; checking first makes a store held by another
    process (an exclusive transaction, a stuck writer) cost a few seconds and one warning instead.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if not path.is_file():
        return  # MLflow creates it; nothing to be locked yet
    import sqlite3

    con = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        raise RuntimeError(f"SQLite store {str(path)!r} is locked by another process ({err}; waited {wait_s:g} s)") from None
    finally:
        con.close()


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
            with _mlflow_logs_quiet():
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
        self._call("start", _sqlite_writable, self.tracking_uri)

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
