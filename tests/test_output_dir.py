"""Output folders (predictor.output_dir): complete runs replace only the tool's own files, partial runs go to
OUT/partial/, a user's files need --force, and dead writers' temporary siblings are removed."""

from __future__ import annotations

import json
import os

import pytest

from predictor.atomic import atomic_write, remove_stale_temps
from predictor.errors import InputError
from predictor.output_dir import MANIFEST, OutputFolder

DEAD_PID = 2**22 + 4321  # above the usual pid_max: no such process


def _run(out, files: dict[str, str], *, partial: bool = False, force: bool = False):
    folder = OutputFolder(out, list(files), force=force)
    with folder as staging:
        for name, text in files.items():
            (staging / name).write_text(text)
        return folder.publish(partial=partial)


def test_a_rerun_replaces_the_tools_own_files(tmp_path):
    out = tmp_path / "out"
    _run(out, {"summary.json": "first"})
    _run(out, {"summary.json": "second"})
    assert (out / "summary.json").read_text() == "second"
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == ["summary.json"]


def test_a_users_file_with_an_output_name_stops_the_run_before_it_starts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("my own numbers")
    folder = OutputFolder(out, ["results.csv", "summary.json"])
    with pytest.raises(InputError, match=r"^--out: '.*results.csv' exists and was not written by this tool.*--force"):
        folder.check()
    assert (out / "results.csv").read_text() == "my own numbers"


def test_an_output_the_user_edited_counts_as_theirs(tmp_path):
    out = tmp_path / "out"
    _run(out, {"summary.json": "tool"})
    (out / "summary.json").write_text("edited by hand, longer")
    with pytest.raises(InputError, match="was not written by this tool"):
        _run(out, {"summary.json": "tool again"})
    assert (out / "summary.json").read_text() == "edited by hand, longer"


def test_force_replaces_a_users_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("mine")
    _run(out, {"results.csv": "tool"}, force=True)
    assert (out / "results.csv").read_text() == "tool"


def test_a_partial_run_publishes_to_partial_and_keeps_the_complete_result(tmp_path):
    out = tmp_path / "out"
    _run(out, {"summary.json": "complete"})
    target = _run(out, {"summary.json": "partial"}, partial=True)
    assert target == out / "partial"
    assert (out / "summary.json").read_text() == "complete"
    assert (out / "partial" / "summary.json").read_text() == "partial"


def test_files_of_the_previous_run_this_run_did_not_produce_are_removed(tmp_path):
    out = tmp_path / "out"
    _run(out, {"summary.json": "a", "trace.json": "a"})
    _run(out, {"summary.json": "b"})  # e.g. --no-iteration-log: no trace.json this time
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "summary.json"])


def test_the_staging_folder_is_gone_after_publish_and_after_an_error(tmp_path):
    out = tmp_path / "out"
    _run(out, {"summary.json": "a"})
    with pytest.raises(RuntimeError), OutputFolder(out, ["summary.json"]) as staging:
        (staging / "summary.json").write_text("half")
        raise RuntimeError("crash mid-run")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert (out / "summary.json").read_text() == "a"


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(InputError, match=r"^--out: '.*out' is a file, expected a folder$"):
        OutputFolder(tmp_path / "out", ["a"]).check()


def test_temp_siblings_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead_file = tmp_path / f".requests.parquet.{DEAD_PID}.abc.tmp"
    dead_dir = tmp_path / f".out.{DEAD_PID}.xyz.tmp"
    live_file = tmp_path / f".requests.parquet.{os.getppid()}.def.tmp"  # our parent process is alive
    dead_file.write_text("x")
    dead_dir.mkdir()
    (dead_dir / "summary.json").write_text("x")
    live_file.write_text("x")
    atomic_write(tmp_path / "requests.parquet", b"new")  # the next write of the same target cleans up
    assert not dead_file.exists() and live_file.exists()
    with OutputFolder(tmp_path / "out", ["a"]):
        pass
    assert not dead_dir.exists()
    assert remove_stale_temps(tmp_path, "requests.parquet") == []
