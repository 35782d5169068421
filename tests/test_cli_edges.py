"""Edges of the command line: progress lines off a terminal, where `report` writes, `data build` without its
sources, and `pytest` kept out of the runtime dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from inference_sim.progress import ProgressLines

ROOT = Path(__file__).resolve().parents[1]


def test_progress_lines_print_first_and_last_counts_and_at_most_one_per_interval(capsys):
    lines = ProgressLines("sweeping points", enabled=True, every_s=3600)
    for done in range(0, 5):
        lines.update(done, 4)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in err] == ["sweeping points: 0/4 (0%)", "sweeping points: 4/4 (100%)"]


def test_progress_lines_say_steps_and_stay_silent_on_a_terminal(capsys):
    ProgressLines("training", enabled=True).say("fitting the final model")
    ProgressLines("training", enabled=False).say("not shown")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("training: fitting the final model, ")


def test_report_writes_the_projects_docs_folder_in_a_checkout_never_the_package():
    from training.report import default_report_dir

    assert default_report_dir() == ROOT / "docs"


def test_report_writes_docs_under_the_current_folder_when_installed(monkeypatch, tmp_path):
    from training import report

    monkeypatch.setattr(report, "PROJECT_ROOT", tmp_path / "site-packages")  # no pyproject.toml there
    monkeypatch.chdir(tmp_path)
    assert report.default_report_dir() == tmp_path / "docs"


def test_data_build_without_its_sources_is_one_line_exit_2(capsys, tmp_path):
    from inference_sim.cli import main

    assert main(["data", "build", "--shared", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --shared: folder ") and "does not exist" in err
    assert not (tmp_path / "d").exists()


def test_pytest_is_only_a_test_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "pytest" not in names and "filelock" in names
    assert any(d.startswith("pytest") for d in project["optional-dependencies"]["test"])


@pytest.mark.parametrize("order", [["writer", "reader", "summariser"], ["summariser", "reader", "writer"]])
def test_chain_order_puts_every_upstream_first_whatever_the_spec_order(order):
    from scheduler.app import _upstream_order

    class M:
        def __init__(self, name, upstream):
            self.name, self.upstream = name, upstream

    ups = {"writer": None, "reader": "writer", "summariser": "reader"}
    assert _upstream_order([M(n, ups[n]) for n in order]) == ["writer", "reader", "summariser"]


def test_a_cycle_in_a_chain_is_a_one_line_error(tmp_path):
    from predictor.errors import InputError
    from scheduler.app import load_application

    path = tmp_path / "app.yaml"
    path.write_text("name: c\ntopology: chain\nnode: {gpu: a100-80gb, count: 2}\nprompts: {fixed: 100, count: 10}\n"
                    "models:\n  - {name: a, model: llama-2-7b, upstream: b, output_lengths: {fixed: 10}}\n"
                    "  - {name: b, model: llama-2-7b, upstream: a, output_lengths: {fixed: 10}}\n")
    with pytest.raises(InputError, match=r"form a cycle") as err:
        load_application(path)
    assert "\n" not in str(err.value) and "['a', 'b']" in str(err.value)


def test_heartbeat_names_the_current_step_each_interval_and_nothing_for_a_quick_block(capsys):
    import time

    lines = ProgressLines("training", enabled=True)
    with lines.heartbeat("starting", every_s=0.05):
        pass
    assert capsys.readouterr().err == ""  # ended before the first interval: no line
    with lines.heartbeat("starting", every_s=0.05):
        lines.step("fitting the final model")
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("training: fitting the final model, ") for line in err)
