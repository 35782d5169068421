"""Network calls end: an MLflow server that accepts connections but never answers gives a one-line error in
bounded time, and ``sweep --dask local`` serves its dashboard on the loopback interface only."""

from __future__ import annotations

import socket
import time

import pytest

from predictor import Predictor
from predictor.errors import InputError


@pytest.fixture()
def silent_server():
    """A TCP port that accepts connections and never replies (an unreachable tracking server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_unanswering_tracking_server_fails_within_the_request_timeout(silent_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.monotonic()
    with pytest.raises(InputError, match=r"cannot load 'models:/m@champion'"):
        Predictor.load("models:/m@champion")
    assert time.monotonic() - start < 10  # one 2 s request, no retries (not MLflow's default 7 retries × 120 s)


@pytest.mark.slow
def test_unanswering_tracking_server_cli_error_within_30_s_with_defaults(silent_server, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}
    env["MLFLOW_TRACKING_URI"] = silent_server
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "inference_sim.cli", "simulate", "--model", "llama-2-7b", "--gpu",
                          "a100-80gb", "--num-requests", "5", "--rate", "1", "--artifacts", "models:/m@champion"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "cannot load" in run.stderr
    assert time.monotonic() - start < 30


def test_dask_local_cluster_dashboard_listens_on_loopback_only():
    pytest.importorskip("distributed")
    from scheduler.sweep_exec import _parallel

    with _parallel(1, "local") as (_, label):
        from distributed import get_client

        client = get_client()
        host = client.cluster.dashboard_link.split("//", 1)[1].split(":", 1)[0]
        scheduler_host = client.cluster.scheduler_address.split("//", 1)[1].rsplit(":", 1)[0]
        servers = client.cluster.scheduler.http_server._sockets.values()
        bound = {sock.getsockname()[0] for sock in servers}
    assert "LocalCluster" in label
    assert host == "127.0.0.1" and scheduler_host == "127.0.0.1"
    assert bound == {"127.0.0.1"}  # not 0.0.0.0 / ::, i.e. not every interface
