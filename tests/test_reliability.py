"""Reliability and security: no unsafe deserialisation, atomic outputs, faults injected, Ctrl-C.

* **Code scan** — no ``pickle.load(s)``, ``joblib.load``, ``torch.load``, ``np.load(allow_pickle=True)``,
  ``yaml.load`` without a safe loader (nor ``yaml.unsafe_load`` / ``full_load``), ``pd.read_pickle``,
  ``marshal.loads``, ``eval(`` or ``exec(`` anywhere in the shipped code; every file writer writes to an
  atomic temporary path.
* **Atomic writes** — an exception or a SIGKILL in the middle of a write, and a full disk (ENOSPC) at the
  flush or the rename, leave the previous file (and the previous artifact folder) byte for byte intact.
* **Artifact safety** — size limits, non-UTF-8 metadata or checksum files, a missing checksum file.
* **Faults** — a full disk during ``inference-sim train`` (clear one-line message, exit 1, previous
  artifact intact), a failed swap of the artifact folder (rolled back), an interrupted swap (recovered),
  an MLflow SQLite store locked by another connection (training completes with one warning and writes
  its artifact), Ctrl-C during ``simulate`` (exit 130, partial results readable and marked partial),
  ``plan`` and ``sweep``.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from inference_sim.cli import main, os_error_message
from predictor.artifact import (
    CHECKSUM_FILE,
    MAX_METADATA_BYTES,
    MAX_MODEL_BYTES,
    METADATA_FILE,
    MODEL_FILE,
    SHIPPED_DIR,
    load_artifact,
    save_artifact,
)
from predictor.atomic import atomic_path, atomic_write, atomic_write_many
from predictor.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("predictor", "features", "training", "scheduler", "inference_sim", "benchmarks")
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _python_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


# --- code scan: unsafe deserialisation and dynamic code ---------------------------------------------
def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader", "_UniqueKeyLoader")


def unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every forbidden call in a parsed module."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if isinstance(node.func, ast.Name) and name in ("eval", "exec"):
            found.append((node.lineno, f"{name}("))
        elif name in ("pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "joblib.load", "torch.load",
                      "marshal.load", "marshal.loads", "dill.load", "dill.loads", "cloudpickle.load",
                      "cloudpickle.loads", "pd.read_pickle", "pandas.read_pickle", "shelve.open",
                      "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
            found.append((node.lineno, name))
        elif last == "load" and name.split(".")[0] in ("np", "numpy"):
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append((node.lineno, "np.load(allow_pickle=...)"))
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append((node.lineno, f"{name} without a safe Loader"))
    return found


def test_scan_finds_what_it_forbids():
    """The scanner itself: every forbidden form is caught, the safe forms are not."""
    bad = textwrap.dedent("""
        import pickle, joblib, torch, yaml, numpy as np, pandas as pd
        pickle.load(f); pickle.loads(b); joblib.load(p); torch.load(p); np.load(p, allow_pickle=True)
        yaml.load(t); yaml.load(t, Loader=yaml.Loader); yaml.unsafe_load(t); yaml.full_load(t); pd.read_pickle(p)
        eval("1"); exec("x = 1")
    """)
    assert len(unsafe_calls(ast.parse(bad))) == 12
    good = textwrap.dedent("""
        import yaml, numpy as np
        yaml.safe_load(t); yaml.load(t, Loader=yaml.SafeLoader); yaml.load(t, Loader=_UniqueKeyLoader)
        np.load(p, allow_pickle=False); np.load(p); df.eval("a + b"); model.eval()
    """)
    assert unsafe_calls(ast.parse(good)) == []


def test_no_unsafe_deserialisation_or_dynamic_code_in_the_code_base():
    files = _python_files()
    assert len(files) > 40
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in unsafe_calls(tree)]
    assert not offenders, "forbidden calls:\n" + "\n".join(offenders)


WRITERS = {"to_parquet", "to_csv", "to_json", "savefig", "write_text", "write_bytes", "save", "savez",
           "savez_compressed", "ParquetWriter", "dump", "to_feather", "to_excel"}


def test_every_file_writer_targets_an_atomic_temporary_path():
    """Writers (DataFrame.to_parquet/to_csv, savefig, Path.write_*, np.save*, json.dump, open(…, 'w'),
    ParquetWriter) must write to the temporary path of ``atomic_path`` (named ``tmp`` by convention) —
    except inside predictor/atomic.py itself. ``to_csv()`` without a path returns a string: allowed."""
    offenders = []
    for path in _python_files():
        if path == ROOT / "predictor" / "atomic.py":
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        # file handles opened on a temporary path (``with open(tmp, "wb") as fh``) count as that path
        handles = {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With)
                   for item in node.items
                   if isinstance(item.optional_vars, ast.Name) and isinstance(item.context_expr, ast.Call)
                   and _dotted(item.context_expr.func) in ("open", "os.fdopen") and item.context_expr.args
                   and "tmp" in (ast.get_source_segment(source, item.context_expr.args[0]) or "")}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in ("open", "builtins.open", "io.open"):
                mode = node.args[1] if len(node.args) > 1 else _keyword(node, "mode")
                if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                        and set(mode.value) & set("wax+")):
                    continue
                target = node.args[0] if node.args else None
            elif last in WRITERS and (last not in ("save", "dump") or name.split(".")[0] in ("np", "numpy", "json")):
                if last in ("write_text", "write_bytes"):
                    target = node.func.value if isinstance(node.func, ast.Attribute) else None
                elif last == "dump":
                    target = node.args[1] if len(node.args) > 1 else None
                else:
                    target = node.args[0] if node.args else _keyword(node, "path_or_buf") or _keyword(node, "fname")
                if target is None:
                    continue  # e.g. to_csv(index=False): returns text
            else:
                continue
            text = ast.get_source_segment(source, target) if target is not None else ""
            if "tmp" not in (text or "") and "devnull" not in (text or "") and text not in handles:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}({text})")
    assert not offenders, "non-atomic writes:\n" + "\n".join(offenders)


# --- atomic writes ----------------------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".bak")))


def test_exception_halfway_through_a_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "table.parquet"
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="halfway"), atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"PAR1" + b"\0" * 10_000)
        raise RuntimeError("writer failed halfway")
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_full_disk_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, where):
    target = tmp_path / "summary.json"
    target.write_text('{"old": true}\n')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, where, full)
    with pytest.raises(OSError) as info:
        atomic_write(target, '{"new": true}\n' * 1000)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == '{"old": true}\n'
    assert _leftovers(tmp_path) == []
    message, code = os_error_message(info.value)
    assert message == f"could not write {str(target)!r}: No space left on device" and code == 1


def test_output_folder_that_is_a_file_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        atomic_write(tmp_path / "file" / "out.json", "{}")
    with pytest.raises(InputError, match="is a directory"):
        atomic_write(tmp_path, "{}")


KILL_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from predictor.atomic import atomic_path

    target, marker = Path(sys.argv[1]), Path(sys.argv[2])
    chunk = b"new content " * 87_381  # ~1 MiB
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            for i in range(10_000):  # up to ~10 GiB: it is killed long before
                fh.write(chunk)
                fh.flush()
                if i == 20:
                    marker.write_text("writing")
                time.sleep(0.005)
""")


def test_sigkill_while_writing_a_large_file_keeps_the_previous_file(tmp_path):
    target = tmp_path / "requests.parquet"
    pd.DataFrame({"x": range(1000)}).to_parquet(target)
    before = target.read_bytes()
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(target), str(marker)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before it was killed"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == before  # untouched, still a valid table
    assert len(pd.read_parquet(target)) == 1000
    leftovers = _leftovers(tmp_path)  # a killed process cannot clean up: a hidden temp file, never the target
    assert len(leftovers) == 1 and leftovers[0].startswith(f".requests.parquet.{proc.pid}.")
    assert (tmp_path / leftovers[0]).stat().st_size > 20 * 2**20
    atomic_write(target, before)  # the next write of the same file removes the dead writer's temp file
    assert _leftovers(tmp_path) == []


# --- artifacts --------------------------------------------------------------------------------------
@pytest.fixture
def artifact(tmp_path) -> Path:
    """A copy of the shipped artifact (model, metadata, checksum)."""
    folder = tmp_path / "artifact"
    save_artifact(folder, (SHIPPED_DIR / MODEL_FILE).read_text(), json.loads((SHIPPED_DIR / METADATA_FILE).read_text()))
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("fail_at", ["write", "rename-1", "rename-2", "rename-3"])
def test_full_disk_during_save_artifact_keeps_the_previous_artifact(artifact, monkeypatch, fail_at):
    before = _snapshot(artifact)
    meta = json.loads((artifact / METADATA_FILE).read_text())
    calls = {"replace": 0}
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        calls["replace"] += 1
        if fail_at == f"rename-{calls['replace']}":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fail_at == "write":
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as info:
        save_artifact(artifact, "tree\nversion=v4\n" + "x" * 1000, {**meta, "note": "new"})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert _snapshot(artifact) == before
    assert _leftovers(artifact) == []
    load_artifact(artifact)  # still verifies


def test_atomic_write_many_replaces_every_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    atomic_write_many({a: "a1", b: "b1"})
    assert (a.read_text(), b.read_text()) == ("a1", "b1")
    atomic_write_many({a: "a2", b: "b2"})
    assert (a.read_text(), b.read_text()) == ("a2", "b2")


def test_oversized_model_and_metadata_are_refused(artifact):
    with open(artifact / MODEL_FILE, "r+b") as fh:
        fh.truncate(MAX_MODEL_BYTES + 1)  # sparse file
    with pytest.raises(InputError, match=f"{MODEL_FILE} is .* over the 200 MiB limit"):
        load_artifact(artifact)
    with open(artifact / MODEL_FILE, "r+b") as fh:
        fh.truncate(1000)
    with open(artifact / METADATA_FILE, "r+b") as fh:
        fh.truncate(MAX_METADATA_BYTES + 1)
    with pytest.raises(InputError, match=f"{METADATA_FILE} is .* limit"):
        load_artifact(artifact)


def test_non_utf8_metadata_and_checksum_files_are_input_errors(artifact):
    import hashlib

    (artifact / METADATA_FILE).write_bytes(b'{"feature_names": ["caf\xe9"]}')
    sums = [f"{hashlib.sha256((artifact / n).read_bytes()).hexdigest()}  {n}" for n in (MODEL_FILE, METADATA_FILE)]
    (artifact / CHECKSUM_FILE).write_text("\n".join(sums) + "\n")
    with pytest.raises(InputError, match=f"{METADATA_FILE} .* is not valid JSON"):
        load_artifact(artifact)
    (artifact / CHECKSUM_FILE).write_text("\n".join(sums) + "\n", encoding="utf-16")
    with pytest.raises(InputError, match=f"{CHECKSUM_FILE} .* is not UTF-8"):
        load_artifact(artifact)


def test_missing_checksum_file_is_refused(artifact):
    (artifact / CHECKSUM_FILE).unlink()
    with pytest.raises(InputError, match=f"{CHECKSUM_FILE} is missing"):
        load_artifact(artifact)


# --- faults during training ---------------------------------------------------------------------------
TINY = {"max_train_rows": 6_000, "final_max_rows": 8_000, "search": False, "lomo_models": ["llama-2-7b"],
        "logo_gpus": ["a40"], "random_split": False, "sample_rows_per_split": 500, "quick_mode": True,
        "candidates": [{"num_leaves": 15, "learning_rate": 0.3, "min_data_in_leaf": 20, "rounds": 15,
                        "num_threads": 1}]}  # one thread: no OpenMP spinning when the machine is busy


@pytest.fixture(scope="module")
def data():
    from training.dataset import load_training_data

    return load_training_data()


@pytest.fixture
def tiny_training(monkeypatch, data):
    """`inference-sim train --quick` with the tiny configuration and the module's training table."""
    from training import pipeline

    monkeypatch.setattr(pipeline.TrainConfig, "quick", classmethod(lambda cls, seed=0: cls(seed=seed, **TINY)))
    monkeypatch.setattr(pipeline, "load_training_data", lambda data_dir=None: data)
    monkeypatch.setenv("INFERENCE_SIM_NO_CACHE", "1")
    monkeypatch.setenv("INFERENCE_SIM_PROGRESS_S", "100000")  # no heartbeat lines beside the one-line outcomes


def test_full_disk_during_train_keeps_the_artifact_with_a_one_line_message(tiny_training, artifact, monkeypatch,
                                                                         capsys):
    before = _snapshot(artifact)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    code = main(["train", "--quick", "--no-tracking", "--force", "--out", str(artifact)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (f"error: could not write {str(artifact)!r}: No space left on device; the previous artifact "
                        f"there is unchanged")
    assert _snapshot(artifact) == before
    # no staging folder left behind (the lock file stays: removing it could let two trainings hold the lock)
    assert sorted(p.name for p in artifact.parent.iterdir()) == [".artifact.lock", "artifact"]


def test_failed_swap_of_the_artifact_folder_is_rolled_back(tiny_training, artifact, monkeypatch):
    from training.pipeline import TrainConfig, train

    before = _snapshot(artifact)
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if ".staging." in Path(src).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="previous artifact there is unchanged"):
        train(TrainConfig.quick(), out_dir=artifact, tracking=False, force=True)
    monkeypatch.undo()
    assert _snapshot(artifact) == before
    assert sorted(p.name for p in artifact.parent.iterdir()) == [".artifact.lock", "artifact"]


def test_interrupted_swap_is_recovered_on_the_next_run(artifact):
    from training.pipeline import _old_dir, _recover_interrupted_swap

    before = _snapshot(artifact)
    os.replace(artifact, _old_dir(artifact))  # killed between the two renames
    assert not artifact.exists()
    _recover_interrupted_swap(artifact)
    assert _snapshot(artifact) == before


def test_locked_tracking_store_warns_once_and_training_writes_its_artifact(tiny_training, tmp_path):
    from training.pipeline import TrainConfig, train
    from training.tracking import SQLITE_LOCK_WAIT_S, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = Tracker(uri, warn=pytest.fail)
    setup.start("create the store")
    setup.end()
    assert setup.run_id is not None
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        warnings = []
        result = train(TrainConfig.quick(), out_dir=tmp_path / "art", tracking_uri=uri, warn=warnings.append)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.replaced and result.run_id is None and "locked" in result.tracking_error
    assert len(warnings) == 1 and "continuing without tracking" in warnings[0] and "\n" not in warnings[0]
    load_artifact(tmp_path / "art")
    # the store's lock was found by the tracker's own check (a few seconds, once), not by MLflow's 20 s busy
    # timeout on every call: a wall-clock bound here failed on a loaded 2-core machine (61.6 s) with no stall
    assert f"waited {SQLITE_LOCK_WAIT_S:g} s" in result.tracking_error


def test_cli_maps_os_errors_to_one_line_and_exit_codes():
    assert os_error_message(OSError(errno.ENOSPC, "No space left on device", "/x/y"))[1] == 1
    assert os_error_message(OSError(errno.EROFS, "Read-only file system", "/x"))[0].startswith("could not write")
    assert os_error_message(PermissionError(errno.EACCES, "Permission denied", "/root/x")) == (
        "cannot use path '/root/x': Permission denied", 2)
    assert os_error_message(FileExistsError(errno.EEXIST, "File exists", "/x")) == (
        "cannot use path '/x': File exists", 2)
    assert os_error_message(OSError(errno.EIO, "Input/output error"))[0] == "could not write: Input/output error"


# --- Ctrl-C ---------------------------------------------------------------------------------------------
def _interrupt_when(proc: subprocess.Popen, ready, timeout_s: float = 120, settle_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"finished before it could be interrupted (rc {proc.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("never got going")
        time.sleep(0.05)
    time.sleep(settle_s)
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("did not stop after SIGINT")


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "INFERENCE_SIM_NO_CACHE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, "-m", "inference_sim.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # a signal to the group would also reach pytest otherwise


def test_ctrl_c_during_simulate_writes_partial_results(tmp_path):
    out = tmp_path / "sim"
    proc = _cli("simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--roofline", "--workload", "poisson",
                "--rate", "50", "--num-requests", "3000000", "--prompt-len", "64", "--output-len", "32",
                "--no-iteration-log", "--out", str(out), cwd=tmp_path)
    # the run has started once the streamed-requests temp file exists (in the hidden staging folder)
    _, err = _interrupt_when(proc, lambda: any(tmp_path.glob(".sim.*.tmp/.requests.parquet.*")), settle_s=2.0)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (out / "summary.json").exists()  # partial results never take the place of complete ones
    out = out / "partial"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True
    assert 0 < summary["finished"] < summary["requests"] == 3_000_000
    requests = pd.read_parquet(out / "requests.parquet")
    # every request has exactly one row, finished or not
    assert len(requests) == 3_000_000 and requests["request_id"].is_unique
    assert (requests["status"] == "finished").sum() > 0
    assert set(requests["status"].unique()) <= {"finished", "running", "waiting"}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


PLAN_YAML = """\
name: interrupt-me
topology: ensemble
node: {gpu: a100-80gb, count: 4}
prompts: {fixed: 300, count: 4000}
models:
  - {name: a, model: llama-2-7b, output_lengths: {fixed: 300}}
  - {name: b, model: phi-2, output_lengths: {fixed: 200}}
  - {name: c, model: mistral-7b, output_lengths: {fixed: 250}}
samples: 8
search: {strategy: beam, top_k: 4, beam_width: 3, time_budget_s: 600}
"""


def test_ctrl_c_during_plan_exits_130_with_one_line(tmp_path):
    (tmp_path / "app.yaml").write_text(PLAN_YAML)
    proc = _cli("plan", "app.yaml", "--gantt", "g.png", "--artifacts", str(SHIPPED_DIR), cwd=tmp_path)
    started = time.monotonic()
    _, err = _interrupt_when(proc, lambda: time.monotonic() - started > 6, settle_s=0)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: interrupted"], err
    assert not (tmp_path / "g.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_during_sweep_writes_partial_results(tmp_path):
    pytest.importorskip("scheduler.sweep")
    if not (ROOT / "inference_sim" / "commands" / "sweep.py").exists():
        pytest.skip("no sweep command")
    spec = ROOT / "examples" / "sweep.yaml"
    if not spec.exists():
        pytest.skip("no sweep example")
    out = tmp_path / "sweep_out"
    proc = _cli("sweep", str(spec), "--out", str(out), cwd=tmp_path)
    started = time.monotonic()
    _, err = _interrupt_when(proc, lambda: time.monotonic() - started > 10, settle_s=0)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads((out / "partial" / "summary.json").read_text())
    assert summary["partial"] is True


# --- regressions: bugs found by this suite, fixed -----------------------------------------------------
def test_interrupt_between_finishing_and_streaming_loses_no_row(tmp_path, monkeypatch):
    from predictor import Predictor
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.metrics import RequestStream
    from scheduler.workload import build_workload

    monkeypatch.setenv("INFERENCE_SIM_NO_CACHE", "1")
    real_add = RequestStream.add
    calls = {"n": 0}

    def add(self, state, r):
        calls["n"] += 1
        if calls["n"] == 50:  # Ctrl-C lands after `state.status[r] = DONE`, before the row is queued
            raise KeyboardInterrupt
        return real_add(self, state, r)

    monkeypatch.setattr(RequestStream, "add", add)
    sim = Simulator(Predictor.roofline_only(), "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    result = sim.run(build_workload("offline", 200, prompt_len=16, output_len=4), record_iterations=False,
                     stream_requests_to=tmp_path / "requests.parquet")
    assert result.partial
    table = pd.read_parquet(tmp_path / "requests.parquet")
    assert table["request_id"].is_unique
    assert len(table) == 200
    assert (table["status"] == "finished").sum() == int((result.columns["status_code"] == 2).sum())


@pytest.mark.parametrize(("option", "value"), [("--slo-ttft-ms", "nan"), ("--slo-tpot-ms", "-5")])
def test_simulate_rejects_nan_and_negative_slo(capsys, tmp_path, monkeypatch, option, value):
    monkeypatch.chdir(tmp_path)
    code = main(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--roofline", "--workload", "offline",
                 "--num-requests", "2", "--prompt-len", "8", "--output-len", "4", option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and option in err
