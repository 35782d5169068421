"""The artifact swap in training is locked: concurrent trainings into one folder take turns, never race."""

from __future__ import annotations

import os
import threading

import pytest

from predictor import Predictor
from predictor.artifact import CHECKSUM_FILE
from predictor.errors import InputError
from training.dataset import load_training_data
from training.pipeline import TrainConfig, _publish, artifact_lock, train

TINY = dict(max_train_rows=4_000, final_max_rows=4_000, search=False, lomo_models=["llama-2-7b"],
            logo_gpus=["a40"], random_split=False, sample_rows_per_split=300, quick_mode=True,
            candidates=[{"num_leaves": 15, "learning_rate": 0.3, "min_data_in_leaf": 20, "rounds": 20}])


def test_a_held_lock_makes_another_training_wait_then_fail_with_one_line(tmp_path):
    out = tmp_path / "art"
    seen = []

    def contender():
        try:
            with artifact_lock(out, wait_s=0.3):
                seen.append("acquired")
        except InputError as err:
            seen.append(str(err))

    with artifact_lock(out):
        worker = threading.Thread(target=contender)
        worker.start()
        worker.join()
    assert len(seen) == 1 and "locked by another training" in seen[0] and "\n" not in seen[0]
    worker = threading.Thread(target=contender)  # released: the next one gets it at once
    worker.start()
    worker.join()
    assert seen[1] == "acquired"


def test_concurrent_artifact_swaps_take_turns_and_leave_one_complete_folder(tmp_path):
    """Eight threads swap their own staging folder into one artifact folder at once (what eight trainings
    finishing together do); without the lock the renames race (ENOTEMPTY, ENOENT)."""
    out = tmp_path / "art"
    barrier = threading.Barrier(8)
    errors = []

    def finish(i: int) -> None:
        staging = tmp_path / f".art.staging.{i}"
        staging.mkdir()
        for name in ("a.txt", "b.txt", "c.txt"):
            (staging / name).write_text(str(i))
        barrier.wait()
        try:
            _publish(staging, out, metric=0.1, signature="s", force=True)
        except BaseException as err:  # noqa: BLE001 — reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    contents = {(out / name).read_text() for name in ("a.txt", "b.txt", "c.txt")}
    assert len(contents) == 1  # all three files from the same thread
    assert sorted(os.listdir(tmp_path)) == [".art.lock", "art"]  # every staging and .old folder gone


@pytest.mark.slow
def test_two_concurrent_trainings_into_one_folder_both_finish_and_leave_one_valid_artifact(tmp_path):
    data = load_training_data()
    out = tmp_path / "art"
    results, errors = [], []

    def run(seed: int) -> None:
        try:
            results.append(train(TrainConfig(seed=seed, **TINY), out_dir=out, tracking=False, force=True, data=data))
        except BaseException as err:  # noqa: BLE001 — reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.replaced for r in results] == [True, True]  # --force: each replaced the folder in turn
    assert (out / CHECKSUM_FILE).exists()
    Predictor.load(out)  # checksums match: the folder is one run's, not a mix
    assert sorted(os.listdir(tmp_path)) == [".art.lock", "art"]  # no staging or .old folder left


@pytest.mark.slow
def test_staging_folder_of_a_killed_training_is_removed_by_the_next_run(tmp_path):
    data = load_training_data()
    out = tmp_path / "art"
    dead_pid = 2**22 + 12345  # above the default pid_max of most systems: no such process
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    stale = tmp_path / f".art.staging.{dead_pid}.abc123.tmp"
    stale.mkdir()
    (stale / "residual_model.txt").write_text("half written")
    train(TrainConfig(**TINY), out_dir=out, tracking=False, data=data)
    assert not stale.exists() and (out / CHECKSUM_FILE).exists()
