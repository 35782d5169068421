"""Speed work (issue 19) that must not change results: lazy imports, lazy booster, CPU-aware threads and worker
caps, the checksummed table cache and the scalar fast paths of ``predict_iteration``/``predict_iterations``."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor import cpus
from predictor.cpus import available_cpus, capped_workers, cgroup_cpu_limit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "pandas", "lightgbm", "mlflow", "matplotlib", "dask", "sklearn")


def _python(code: str, **env) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **env}, check=True)
    return proc.stdout


# --- imports ----------------------------------------------------------------------------------------
def test_help_imports_no_numerical_library():
    out = _python("import sys\nfrom inference_sim.cli import main\n"
                  "assert main(['simulate', '--help']) == 0\nassert main(['--help']) == 0\n"
                  f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.splitlines()[-1] == "LOADED []"


def test_importing_predictor_errors_stays_light_and_names_resolve_on_use():
    out = _python("import sys, predictor\nfrom predictor.errors import InputError\n"
                  "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))\n"
                  "from predictor import Predictor, get_gpu, InputError as E\n"
                  "print(E is InputError, Predictor.__module__, 'get_gpu' in dir(predictor))")
    assert out.splitlines() == ["[]", "True predictor.predictor True"]


def test_unknown_package_attribute_is_an_attribute_error():
    import predictor

    with pytest.raises(AttributeError, match="no_such_name"):
        predictor.no_such_name  # noqa: B018


def test_roofline_simulation_loads_neither_lightgbm_nor_mlflow_matplotlib_dask():
    out = _python("import sys\nfrom inference_sim.cli import main\n"
                  "assert main(['simulate', '--model', 'llama-2-7b', '--gpu', 'a100-80gb', '--roofline', "
                  "'--workload', 'offline', '--num-requests', '20', '--json']) == 0\n"
                  "print('LOADED', sorted(m for m in ('lightgbm', 'mlflow', 'matplotlib', 'dask') if m in sys.modules))",
                  INFERENCE_SIM_NO_CACHE="1")
    assert out.splitlines()[-1] == "LOADED []"


def test_lazy_module_imports_on_first_attribute_and_forwards():
    out = _python("import sys\nfrom predictor.lazy import LazyModule\nm = LazyModule('json')\n"
                  "sys.modules.pop('json', None)\nprint('json' in sys.modules, repr(m))\n"
                  "print(m.dumps([1]), 'json' in sys.modules, m.load() is sys.modules['json'], repr(m))")
    assert out.splitlines() == ["False <lazy module 'json' (not loaded)>",
                                "[1] True True <lazy module 'json' (loaded)>"]


def test_simulation_with_warm_caches_does_not_import_pandas(tmp_path):
    """Nor, with --json (no progress bar is drawn), rich's progress module."""
    code = ("import sys\nfrom inference_sim.cli import main\n"
            "assert main(['simulate', '--model', 'llama-2-7b', '--gpu', 'a100-80gb', '--roofline', '--workload', "
            "'poisson', '--rate', '4', '--trace', 'splitwise_conv', '--num-requests', '50', '--json']) == 0\n"
            "print('PANDAS', 'pandas' in sys.modules, 'pyarrow' in sys.modules, 'rich.progress' in sys.modules)")
    first = _python(code, INFERENCE_SIM_CACHE_DIR=str(tmp_path))
    again = _python(code, INFERENCE_SIM_CACHE_DIR=str(tmp_path))
    assert first.splitlines()[-1] == "PANDAS True True False"  # read the trace's Parquet and cached its arrays
    assert again.splitlines()[-1] == "PANDAS False False False"  # cached tables and trace: neither library
    assert first.splitlines()[:-1] == again.splitlines()[:-1]  # identical summary


def test_trace_cache_holds_the_parquet_columns_and_a_damaged_file_is_reread(tmp_path, monkeypatch):
    from features import reference_data

    monkeypatch.setenv("INFERENCE_SIM_CACHE_DIR", str(tmp_path))
    table = reference_data.read_trace("splitwise_code")
    first = reference_data.read_trace_columns("splitwise_code")  # read from Parquet, then cached
    (cached,) = (tmp_path / "reference").glob("vidur-traces-splitwise_code-*.npz")
    again = reference_data.read_trace_columns("splitwise_code")  # from the cache
    for name, column in table.items():
        for arrays in (first, again):
            assert arrays[name].dtype == column.dtype
            np.testing.assert_array_equal(arrays[name], column.to_numpy())
    cached.write_bytes(b"not a zip file")
    np.testing.assert_array_equal(reference_data.read_trace_columns("splitwise_code")["prompt_tokens"],
                                  table["prompt_tokens"].to_numpy())


def test_output_length_cache_keeps_model_names_as_text(tmp_path, monkeypatch):
    from features import reference_data

    monkeypatch.setenv("INFERENCE_SIM_CACHE_DIR", str(tmp_path))
    table = reference_data.read_output_lengths()
    for arrays in (reference_data.read_output_length_columns(), reference_data.read_output_length_columns()):
        assert arrays["model"].dtype.kind == "U"  # no object arrays: the cache loads without pickle
        assert arrays["model"].tolist() == table["model"].tolist()
        np.testing.assert_array_equal(arrays["prob"], table["prob"].to_numpy())
    assert len(list((tmp_path / "reference").glob("samullm-*.npz"))) == 1


@pytest.mark.slow
def test_hybrid_simulation_with_cached_tables_does_not_load_lightgbm(tmp_path):
    code = ("import sys\nfrom inference_sim.cli import main\n"
            "assert main(['simulate', '--model', 'llama-2-7b', '--gpu', 'a100-80gb', '--num-requests', '20', "
            "'--workload', 'offline', '--json']) == 0\nprint('LIGHTGBM', 'lightgbm' in sys.modules)")
    first = _python(code, INFERENCE_SIM_CACHE_DIR=str(tmp_path))
    again = _python(code, INFERENCE_SIM_CACHE_DIR=str(tmp_path))
    assert first.splitlines()[-1] == "LIGHTGBM True"  # built the tables: needed the booster
    assert again.splitlines()[-1] == "LIGHTGBM False"  # cached tables: no booster
    assert first.splitlines()[:-1] == again.splitlines()[:-1]  # identical summary


def test_boolean_flags_show_no_type_in_help():
    proc = subprocess.run([sys.executable, "-m", "inference_sim.cli", "simulate", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200", "TERM": "dumb"}, check=True)
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if len(line.split()) > 1
             and line.split()[1].startswith("--")}
    assert "<bool>" not in proc.stdout
    assert "--json" in lines and "--roofline" in lines
    assert "<int range>" in lines["--tp"] and "<str>" in lines["--policy"]  # options with a value keep their type


# --- the booster is parsed on first use -----------------------------------------------------------------
def test_booster_is_parsed_only_when_ops_are_predicted(hybrid):
    from predictor import Predictor

    fresh = Predictor.load()
    assert fresh.is_hybrid and fresh._booster is None
    ops = hybrid.predict_iteration("llama-2-7b", "a100-80gb", decode=[100]).ops
    assert fresh._booster is None
    assert ops["predicted_ms"].gt(0).all() and hybrid._booster is not None


# --- CPUs -------------------------------------------------------------------------------------------
def test_cgroup_v2_quota(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2, (tmp_path / "no", tmp_path / "no")) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2, (tmp_path / "no", tmp_path / "no")) is None


def test_cgroup_v1_quota(tmp_path):
    quota, period = tmp_path / "cpu.cfs_quota_us", tmp_path / "cpu.cfs_period_us"
    quota.write_text("200000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "absent", (quota, period)) == 2.0
    quota.write_text("-1\n")  # no limit
    assert cgroup_cpu_limit(tmp_path / "absent", (quota, period)) is None


def test_available_cpus_is_affinity_capped_by_quota(monkeypatch):
    available_cpus.cache_clear()
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 2.5)
    try:
        assert available_cpus() == 3  # 4 CPUs in the set, 2.5 CPUs of time: 3 threads
        available_cpus.cache_clear()
        monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
        assert available_cpus() == 4
    finally:
        available_cpus.cache_clear()


def test_worker_requests_are_capped_to_the_cpus(monkeypatch):
    monkeypatch.setattr(cpus, "available_cpus", lambda: 2)
    assert capped_workers(1) == (1, None)
    assert capped_workers(2) == (2, None)
    assert capped_workers(-1) == (2, None)
    n, warning = capped_workers(100_000, "--n-jobs")
    assert n == 2 and warning == "--n-jobs=100000 capped to 2: the CPUs available to this process"


def test_sweep_pool_is_capped_with_a_warning(monkeypatch):
    from scheduler import sweep

    monkeypatch.setattr(cpus, "available_cpus", lambda: 2)
    with pytest.warns(RuntimeWarning, match="n_jobs=100000 capped to 2"):
        with sweep._parallel(100_000, None) as (kwargs, label):
            assert kwargs == {"n_jobs": 2} and label == "joblib (n_jobs=2)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sweep._parallel(1, None) as (kwargs, _):
            assert kwargs == {"n_jobs": 1}


def test_cli_shows_a_warning_as_one_line(capsys):
    from inference_sim import cli

    cli._warning_line("n_jobs=9 capped to 2:\n the CPUs available", RuntimeWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: n_jobs=9 capped to 2: the CPUs available\n"


def test_lightgbm_threads_follow_the_cpus_unless_given():
    from training.models import ResidualModel

    assert ResidualModel(None)._lgb_params()["num_threads"] == available_cpus()
    assert ResidualModel({"num_threads": 1})._lgb_params()["num_threads"] == 1


# --- the table cache is checksummed -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_table(roofline):
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from predictor.precision import parse_dtype

    return roofline.tables(get_model("llama-2-7b"), get_gpu("a100-80gb"), 1, parse_dtype("fp16"))


def test_table_cache_round_trip_is_exact(small_table, tmp_path):
    from predictor.tables import IterationTables

    path = tmp_path / "t.npz"
    small_table.save(path)
    loaded = IterationTables.load(path)
    for name in IterationTables._ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(small_table, name))
    assert loaded.num_layers == small_table.num_layers


def test_table_cache_with_a_changed_array_is_rejected(small_table, tmp_path):
    from predictor.tables import IterationTables

    path = tmp_path / "t.npz"
    small_table.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["decode_log_ms"] = arrays["decode_log_ms"].copy()
    arrays["decode_log_ms"][3, 7] += 1e-9  # a one-cell change keeps the old checksum
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    assert IterationTables.load(path) is None
    path.write_bytes(b"not a zip file")
    assert IterationTables.load(path) is None


# --- fast paths give the validated paths' numbers ----------------------------------------------------
def test_predict_iteration_fast_path_equals_the_validating_path(hybrid):
    rng = np.random.default_rng(7)
    for _ in range(50):
        decode = rng.integers(0, 4000, rng.integers(0, 40)).tolist()
        prefill = [(int(n), int(c)) for n, c in zip(rng.integers(1, 900, 2), rng.integers(0, 3000, 2), strict=True)]
        fast = hybrid.predict_iteration("llama-2-7b", "a100-80gb", 1, "fp16", prefill=prefill, decode=decode)
        # numpy integers are not plain ints: they take the validating path (from_lists)
        slow = hybrid.predict_iteration("llama-2-7b", "a100-80gb", np.int64(1), "fp16",
                                        prefill=[(np.int64(n), np.int64(c)) for n, c in prefill],
                                        decode=[np.int64(c) for c in decode])
        assert fast.total_ms == slow.total_ms and fast.kernel_ms == slow.kernel_ms


def test_predict_iterations_single_configuration_equals_grouped(hybrid):
    from benchmarks.predictor import iterations_frame

    frame = iterations_frame(2_000, seed=3)
    one = hybrid.predict_iterations(frame)
    mixed = frame.copy()
    mixed["gpu"] = np.where(np.arange(len(frame)) % 2 == 0, "a100-80gb", "h100-sxm")
    both = hybrid.predict_iterations(mixed)
    even = np.arange(len(frame)) % 2 == 0
    np.testing.assert_allclose(both["total_ms"].to_numpy()[even], one["total_ms"].to_numpy()[even], rtol=1e-12)
    h100 = hybrid.predict_iterations(frame.assign(gpu="h100-sxm"))
    np.testing.assert_allclose(both["total_ms"].to_numpy()[~even], h100["total_ms"].to_numpy()[~even], rtol=1e-12)
    assert isinstance(one, pd.DataFrame) and list(one.index) == list(frame.index)


def test_same_seed_same_simulation(hybrid):
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.workload import build_workload

    runs = []
    for _ in range(2):
        sim = Simulator(hybrid, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
        wl = build_workload("trace", 300, trace="splitwise_conv", seed=5)
        runs.append(sim.run(wl, record_iterations=False).requests)
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)


def test_result_columns_derive_latencies_from_the_engine_arrays(hybrid, tmp_path):
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.metrics import COLUMN_ORDER
    from scheduler.workload import build_workload

    sim = Simulator(hybrid, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    out = tmp_path / "requests.parquet"
    result = sim.run(build_workload("trace", 200, trace="splitwise_conv", seed=2), record_iterations=False,
                     stream_requests_to=out)
    c = result.columns
    assert list(c) == list(COLUMN_ORDER) and len(c) == len(COLUMN_ORDER)
    np.testing.assert_array_equal(c["ttft_s"], c["first_token_s"] - c["arrival_s"])
    np.testing.assert_array_equal(c["e2e_s"], c["finish_s"] - c["arrival_s"])
    with pytest.raises(KeyError):
        c["no_such_column"]
    # the streamed Parquet rows (built eagerly, per batch of ids) equal the result's table
    streamed = pd.read_parquet(out).sort_values("request_id").reset_index(drop=True)
    frame = result.requests
    pd.testing.assert_frame_equal(streamed[frame.columns.drop("status")], frame.drop(columns="status"),
                                  check_exact=True)
