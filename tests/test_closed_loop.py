"""Closed-loop workloads (``--workload concurrency``): C clients, each sending its next request when its
previous one completes, as ``vllm bench serve --max-concurrency C`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest

import inference_sim.cli as cli
from predictor.errors import InputError
from scheduler.engine import EngineConfig, Simulator
from scheduler.serving_eval import closed_loop_summary
from scheduler.workload import build_workload, measurement_window

CONF = ("llama-2-7b", "a100-80gb", 1, "fp16")


def run(predictor, concurrency, n, prompt=512, output=64, **config):
    wl = build_workload("concurrency", n, prompt_len=prompt, output_len=output, concurrency=concurrency)
    sim = Simulator(predictor, *CONF, config=EngineConfig(**config))
    return sim.run(wl)


def test_one_client_never_overlaps_its_requests(roofline):
    result = run(roofline, 1, 12)
    c = result.columns
    # each request is sent exactly when the previous one finished, so the requests tile the time line
    assert c["arrival_s"][0] == 0.0
    np.testing.assert_array_equal(c["arrival_s"][1:], c["finish_s"][:-1])
    assert result.iterations["running"].max() == 1
    # and every request sees an empty engine: the same TTFT and E2E for all of them
    np.testing.assert_allclose(c["ttft_s"], c["ttft_s"][0], rtol=1e-9)
    np.testing.assert_allclose(c["e2e_s"], c["e2e_s"][0], rtol=1e-9)


@pytest.mark.parametrize("concurrency", [3, 16])
def test_running_batch_never_exceeds_the_clients(roofline, concurrency):
    result = run(roofline, concurrency, 6 * concurrency)
    assert result.iterations["running"].max() == concurrency
    c = result.columns
    # right after every send, exactly `concurrency` requests are outstanding (sent, not finished), until the
    # clients run out of requests
    for r in range(concurrency, len(c["arrival_s"])):
        t = c["arrival_s"][r]
        outstanding = np.sum((c["arrival_s"] <= t) & (c["finish_s"] > t))
        assert outstanding == min(concurrency, len(c["arrival_s"]) - np.sum(c["finish_s"] <= t))


def test_littles_law_holds_in_steady_state(hybrid):
    concurrency, n = 8, 160
    result = run(hybrid, concurrency, n, prompt=300, output=40)
    c = result.columns
    # over [send of request 2C, send of request n - C) C requests are always outstanding; throughput there
    # times the mean latency of the requests finishing there must give C (Little's law, L = λW)
    t0, t1 = c["arrival_s"][2 * concurrency], c["arrival_s"][n - concurrency]
    inside = (c["finish_s"] > t0) & (c["finish_s"] <= t1)
    throughput = inside.sum() / (t1 - t0)
    latency = c["e2e_s"][inside].mean()
    assert throughput * latency == pytest.approx(concurrency, rel=0.05)


def test_measurement_window_drops_warm_up_and_drain():
    np.testing.assert_array_equal(measurement_window(10, 3), np.arange(3, 7))
    np.testing.assert_array_equal(measurement_window(5, 3), np.arange(5))  # too short: keep everything


def test_summary_counts_ttft_from_the_send(roofline):
    result = run(roofline, 2, 10)
    s = closed_loop_summary(result, 2)
    c = result.columns
    ids = np.arange(2, 8)
    assert s["requests"] == 6
    assert s["mean_ttft_ms"] == pytest.approx(1e3 * np.mean(c["first_token_s"][ids] - c["arrival_s"][ids]))
    assert s["requests_per_s"] == pytest.approx(6 / (c["finish_s"][ids].max() - c["arrival_s"][ids].min()))


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_bad_concurrency_is_an_input_error(bad):
    with pytest.raises(InputError, match="--concurrency"):
        build_workload("concurrency", 10, prompt_len=8, output_len=8, concurrency=bad)


def test_concurrency_needs_the_closed_loop_kind():
    with pytest.raises(InputError, match="--concurrency"):
        build_workload("concurrency", 10, prompt_len=8, output_len=8)
    with pytest.raises(InputError, match="--concurrency"):
        build_workload("offline", 10, prompt_len=8, output_len=8, concurrency=4)


def test_cli_simulate_reports_the_measurement_window(capsys):
    code = cli.main(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--roofline",
                     "--workload", "concurrency", "--concurrency", "4", "--num-requests", "20",
                     "--prompt-len", "128", "--output-len", "16", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    window = json.loads(out.out)["measurement_window"]
    assert window["concurrency"] == 4 and window["requests"] == 12


def test_cli_negative_concurrency_exits_2(capsys):
    code = cli.main(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--roofline",
                     "--workload", "concurrency", "--concurrency", "-3", "--num-requests", "20",
                     "--prompt-len", "128", "--output-len", "16"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--concurrency" in err and "Traceback" not in err


def test_sweep_accepts_a_closed_loop_workload():
    from scheduler.sweep import run_sweep, sweep_from_dict

    raw = {"model": "llama-2-7b", "predictor": "roofline",
           "workload": {"kind": "concurrency", "concurrency": 4, "num_requests": 24, "prompt_len": 256,
                        "output_len": 32},
           "slo": {"ttft_ms": 10_000}, "grid": {"gpu": ["a100-80gb"], "max_num_seqs": [2, 64]}}
    table = run_sweep(sweep_from_dict(raw), n_jobs=1).table.set_index("max_num_seqs")
    # the same 24 requests; with 2 sequences the engine, not the 4 clients, bounds the batch: slower
    assert (table["finished"] == 24).all()
    assert table.loc[2, "e2e_p50_ms"] > table.loc[64, "e2e_p50_ms"]


def test_sweep_concurrency_must_come_with_its_kind():
    from scheduler.sweep import sweep_from_dict

    raw = {"model": "llama-2-7b", "workload": {"kind": "concurrency", "num_requests": 24, "prompt_len": 256,
                                               "output_len": 32},
           "slo": {"ttft_ms": 1000}, "grid": {"gpu": ["a100-80gb"]}}
    with pytest.raises(InputError, match="concurrency"):
        sweep_from_dict(raw)


def test_warm_up_requests_are_staggered_so_clients_do_not_march_in_lock_step():
    wl = build_workload("concurrency", 12, prompt_len=100, output_len=40, concurrency=4)
    # the 4 warm-up requests generate 1/4 .. 4/4 of the 40 tokens; every later request the full 40
    assert list(wl.output_tokens) == [10, 20, 30, 40] + [40] * 8
    plain = build_workload("concurrency", 12, prompt_len=100, output_len=40, concurrency=4, stagger=False)
    assert list(plain.output_tokens) == [40] * 12
