"""Ctrl-C (SIGINT) and SIGTERM during `simulate`, `sweep` and `train`: earlier results stay intact, partial
results go to OUT/partial/ (simulate, sweep), no temporary file or folder is left, and the exit code is 130
(SIGINT) or 143 (SIGTERM).

Each test starts the real command in a subprocess, waits until it is working (its staging folder exists, or
training has printed its first progress line), sends the signal and checks the files. Slow (a process start
and a real run each).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from predictor.output_dir import OutputFolder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "INFERENCE_SIM_PROGRESS_S": "1"}  # a progress line every second off a terminal
    proc = subprocess.Popen([sys.executable, "-m", "inference_sim.cli", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return proc, lines


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, "the command ended before it could be interrupted"
        assert time.monotonic() < deadline, "the command never reached the point to interrupt"
        time.sleep(0.2)


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (``*.tmp``, staging, ``.old``) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or ".staging" in p.name or p.name.endswith(".old"))


def _earlier_result(out: Path, names: list[str]) -> dict[str, bytes]:
    """A complete earlier run's files in ``out`` (published as the tool publishes them)."""
    folder = OutputFolder(out, names)
    with folder as staging:
        for name in names:
            (staging / name).write_text(f"earlier complete {name}\n")
        folder.publish()
    return {name: (out / name).read_bytes() for name in names}


@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_simulate_interrupted_keeps_the_earlier_result_and_writes_partial(tmp_path, sig, code):
    out = tmp_path / "out"
    before = _earlier_result(out, ["summary.json", "requests.parquet"])
    proc, _ = _start(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--roofline", "--workload", "poisson",
                      "--rate", "50", "--num-requests", "400000", "--no-iteration-log", "--out", str(out)], tmp_path)
    _wait_for(lambda: any(tmp_path.glob(".out.*.tmp/*")) or any(tmp_path.glob(".out.*.tmp/.*")), proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    assert proc.wait(timeout=240) == code
    assert {name: (out / name).read_bytes() for name in before} == before
    summary = json.loads((out / "partial" / "summary.json").read_text())
    assert summary["partial"] is True and summary["finished"] < 400000
    assert (out / "partial" / "requests.parquet").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_sweep_interrupted_keeps_the_earlier_result_and_writes_partial(tmp_path, sig, code):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("model: llama-2-7b\npredictor: roofline\nworkload: {kind: poisson, num_requests: 3000, seed: 0}\n"
                    "slo: {ttft_ms: 1000}\ngrid: {gpu: [a100-80gb, h100-sxm, l40s], max_num_seqs: [64, 128, 256], "
                    "rate: [1, 2, 4, 8]}\n")
    out = tmp_path / "out"
    before = _earlier_result(out, ["results.csv", "summary.json"])
    proc, _ = _start(["sweep", str(spec), "--out", str(out)], tmp_path)
    _wait_for(lambda: any(tmp_path.glob(".out.*.tmp")), proc)
    time.sleep(2.0)
    proc.send_signal(sig)
    assert proc.wait(timeout=240) == code
    assert {name: (out / name).read_bytes() for name in before} == before
    summary = json.loads((out / "partial" / "summary.json").read_text())
    assert summary["partial"] is True
    assert (out / "partial" / "results.parquet").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_train_interrupted_keeps_the_earlier_artifact(tmp_path, sig, code):
    art = tmp_path / "art"
    shutil.copytree(ROOT / "artifacts", art)
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    proc, lines = _start(["train", "--quick", "--no-tracking", "--out", str(art)], tmp_path)
    _wait_for(lambda: any(line.startswith("training: loading data") for line in lines), proc)
    time.sleep(2.0)
    proc.send_signal(sig)
    assert proc.wait(timeout=240) == code
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    assert _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) in (["art"], [".art.lock", "art"])
