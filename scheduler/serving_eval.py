"""Closed-loop serving runs: the steady-state statistics a benchmark client reports, and scoring them
against measured serving results (``inference-sim evaluate --serving``).

A benchmark such as ``vllm bench serve --max-concurrency C`` keeps C requests outstanding and reports mean
and median TTFT / TPOT. The simulated counterpart runs a :class:`scheduler.workload.Workload` with
``concurrency = C`` and reads the statistics over the measurement window (the first and last C requests
are warm-up and drain; :func:`scheduler.workload.measurement_window`).

Scored runs use fixed ISL / OSL, as the benchmarks that produced them do. On an engine that mixes prefill chunks
with decodes (vLLM, TensorRT-LLM) the simulated clients are de-synchronised (the default stagger of
:func:`scheduler.workload.build_workload`); the first wave, sent together at the start, is reported apart
(``first_ttft_ms``). Clients kept in step (``stagger=False``) were tried for these engines: their kernel-only TTFT
is closer to the measured one, but the serving calibration built on them scored worse on held-out GPUs and models
than the one built on de-synchronised clients plus the first wave. A prefill-first engine (SGLang) keeps clients
that send together in step — it prefills the whole wave before any decode, so the wave finishes together and is
sent again together — so its clients start together, as the benchmark's do, and stay so. De-synchronised
SGLang clients were tried as well (steady state alone, and mixed with the first wave as a benchmark of a few requests
per client would average them): their kernel-only TTFT and TPOT were both further from the measured runs'.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from predictor.errors import InputError
from scheduler.serving_rows import Skip, instance_gpus, resolve_model, row_dtype, row_parallel
from scheduler.workload import measurement_window


def closed_loop_summary(result, concurrency: int) -> dict:
    """Steady-state statistics of a closed-loop run over its measurement window.

    Parameters
    ----------
    result : scheduler.metrics.SimResult
    concurrency : int
        Clients of the closed loop.

    Returns
    -------
    dict
        ``requests`` (in the window), mean and median TTFT / TPOT / E2E (ms; TTFT and E2E from the
        client's send, including an engine profile's send-to-queue delay), ``requests_per_s`` and
        ``output_tokens_per_s`` (window requests over the window's span, from its first send to its last
        completion).
    """
    c = result.columns
    delay_ms = float(result.meta.get("client_delay_ms", 0.0))
    ids = measurement_window(len(c["arrival_s"]), concurrency)
    finish = c["finish_s"][ids]
    done = np.isfinite(finish)
    ids = ids[done]
    out = {"concurrency": int(concurrency), "requests": int(len(ids))}
    for key in ("ttft", "tpot", "e2e"):
        values = c[f"{key}_s"][ids] * 1e3 + (delay_ms if key != "tpot" else 0.0)
        values = values[np.isfinite(values)]
        out[f"mean_{key}_ms"] = float(values.mean()) if len(values) else float("nan")
        out[f"median_{key}_ms"] = float(np.median(values)) if len(values) else float("nan")
    span = float(c["finish_s"][ids].max() - c["arrival_s"][ids].min()) + delay_ms / 1e3 if len(ids) else 0.0
    out["requests_per_s"] = len(ids) / span if span > 0 else float("nan")
    out["output_tokens_per_s"] = float(c["output_tokens"][ids].sum()) / span if span > 0 else float("nan")
    return out


# --------------------------------------------------------------------------------------------------
# Scoring measured serving runs
# --------------------------------------------------------------------------------------------------
MAX_CONCURRENCY = 4096  # clients simulated at most (a run simulates about 2 × concurrency + window requests)
MIN_WINDOW = 8     # requests in the measurement window at least
MAX_WINDOW = 256   # ... and at most (a steady state needs no more)


def _requests(concurrency: int) -> int:
    return 2 * concurrency + int(np.clip(concurrency, MIN_WINDOW, MAX_WINDOW))


def _classify(err: InputError) -> Skip:
    text = str(err)
    if text.startswith(("tp:", "--tp", "--ep", "--pp", "--dp", "--moe")) or "parallel" in text.lower():
        return Skip("unsupported_parallelism", text)
    if text.startswith("--dtype") or "precision" in text.lower():
        return Skip("unsupported_dtype", text)
    return Skip("does_not_fit", text)


def simulate_row(row, predictor, profile, model=None, gpu=None, dtype=None, parallel=None,
                 max_concurrency: int = MAX_CONCURRENCY) -> dict:
    """Simulate one measured run closed-loop; return mean TTFT / TPOT (ms) over the measurement window.

    ``model``, ``gpu``, ``dtype`` and ``parallel`` (an aggregated run's layout) default to the row's.
    Raises :class:`Skip` when the run cannot be predicted (reason in :data:`scheduler.serving_rows.REASONS`).
    """
    from predictor.gpus import get_gpu
    from scheduler.engine import Simulator
    from scheduler.workload import build_workload

    model = model if model is not None else resolve_model(row["model_path"])
    try:
        gpu = gpu if gpu is not None else get_gpu(row["system"])
    except InputError as err:
        raise Skip("unknown_gpu", str(err)) from None
    dtype = dtype if dtype is not None else row_dtype(row, gpu)
    c = int(row["concurrency"])
    if c > max_concurrency:
        raise Skip("concurrency_over_limit", f"{c} clients; at most {max_concurrency} are simulated")
    config = profile.engine_config(max_num_seqs=max(profile.max_num_seqs, c))
    if row["mode"] == "disagg":  # pools prefill or decode; the only prefills a decode pool runs are recomputes
        config = replace(config, policy="continuous")  # after a preemption, mixed with the decodes as fitted
    wl = build_workload("concurrency", _requests(c), prompt_len=int(row["isl"]), output_len=int(row["osl"]),
                        concurrency=c, stagger=config.policy != "prefill_first")
    landed = None
    try:
        if row["mode"] == "disagg":
            result, landed = _simulate_disagg(row, predictor, profile, model, gpu, dtype, config, wl)
        else:
            layout = parallel if parallel is not None else row_parallel(row)
            sim = Simulator(predictor, model, gpu, layout, dtype, config, profile=profile)
            sim.record_work = False  # latencies only: no efficiency report
            window = measurement_window(len(wl), c)
            # the drain after the window only matters to the requests still running: stop when the window is done
            result = sim.run(wl, record_iterations=False,
                             stop=lambda: bool(np.isfinite(sim.state.finish[window]).all()))
    except InputError as err:
        raise _classify(err) from None
    summary = closed_loop_summary(result, c)
    if summary["requests"] < len(measurement_window(len(wl), c)):
        raise Skip("does_not_fit", "requests rejected: they do not fit in the KV cache")
    kv_layout = row_parallel(row, "decode_") if row["mode"] == "disagg" else layout  # where the decodes' KV lives
    share = _token_share(model, kv_layout, dtype, int(result.config["block_size"]), int(row["isl"]) + int(row["osl"]))
    out = {"ttft_ms": summary["mean_ttft_ms"], "tpot_ms": summary["mean_tpot_ms"], **_diagnostics(result, c, share),
           "launches": _decode_launches(row, model, dtype, parallel)}
    if landed is not None:
        out["ttft_ms"], out["tpot_ms"] = _client_times(result, landed, c)
    return out


def _decode_launches(row, model, dtype: str, parallel=None) -> float:
    """Kernel launches of one decode step on one GPU of the instance that decodes (the decode pool of a
    disaggregated run), at the run's ISL (:func:`predictor.ops.decode_launches`)."""
    if row["mode"] == "disagg":
        parallel = row_parallel(row, "decode_")
    elif parallel is None:
        parallel = row_parallel(row)
    return _launches(model, parallel, dtype, int(row["isl"]))


@functools.lru_cache(maxsize=4096)
def _launches(model, parallel, dtype: str, isl: int) -> float:
    """:func:`predictor.ops.decode_launches`, once per configuration (a run is simulated up to three times)."""
    from predictor.ops import decode_launches
    from predictor.precision import parse_dtype

    return decode_launches(model, parallel, parse_dtype(dtype), isl)


def _client_times(result, landed_s, concurrency: int) -> tuple[float, float]:
    """Mean TTFT and TPOT (ms) over the window as a disaggregated stack's client sees them: the first token
    streams from the decode instance once the prompt's KV has landed there (so TTFT includes the prefill
    queue, the prefill and the KV copy), and TPOT is the rest of the request over the remaining tokens."""
    c = result.columns
    ids = measurement_window(len(c["arrival_s"]), concurrency)
    ids = ids[np.isfinite(c["finish_s"][ids])]
    first = np.fmax(c["first_token_s"][ids], landed_s[ids])
    ttft = first - c["arrival_s"][ids]
    steps = c["output_tokens"][ids] - 1
    tpot = np.where(steps > 0, (c["finish_s"][ids] - first) / np.maximum(steps, 1), np.nan)
    tpot = tpot[np.isfinite(tpot)]
    return (float(ttft.mean() * 1e3) if len(ttft) else float("nan"),
            float(tpot.mean() * 1e3) if len(tpot) else float("nan"))


def calibrated_run(predictor, model, gpu, parallel, dtype: str, *, isl: int, osl: int, concurrency: int,
                   framework: str, calibration=None) -> dict:
    """Mean TTFT / TPOT (ms) of a closed-loop benchmark on ``framework`` (``vllm bench serve
    --max-concurrency`` style: fixed ISL / OSL) as the serving calibration predicts it from kernel-only,
    roofline-only and engine-profile simulations of the run (what ``evaluate --serving`` scores; ``bounded``: kept
    no slower than on a fitted GPU that ``gpu`` dominates, :mod:`scheduler.serving_bounds`). Raises
    :class:`InputError` when the run cannot be simulated or no calibration is shipped."""
    import pandas as pd

    from predictor.parallel import as_parallel
    from scheduler.engine_profiles import get_profile, kernel_only_profile
    from scheduler.serving_model import ServingCalibration

    calibration = calibration if calibration is not None else ServingCalibration.load()
    layout = as_parallel(parallel)
    row = pd.Series({"mode": "agg", "isl": int(isl), "osl": int(osl), "concurrency": int(concurrency),
                     "framework": framework, "tp": layout.tp, "pp": layout.pp, "ep": layout.ep,
                     "dp_attention": layout.dp_attention, "moe_tp": layout.moe_tp or layout.tp, "gpus": layout.gpus,
                     **{f"decode_{k}": 1 for k in ("tp_size", "moe_ep_size", "attention_dp_size", "num_workers")}})
    profile = kernel_only_profile(framework)
    on = dict(model=model, dtype=dtype, parallel=parallel)
    try:
        basis = _basis_row(row, predictor, profile, gpu=gpu, **on)
        timed = simulate_row(row, predictor, get_profile(framework), gpu=gpu, **on)
    except Skip as skip:
        raise InputError(f"calibrated estimate: this run cannot be simulated ({skip.reason}: {skip})") from None
    basis = pd.DataFrame([{**basis, "profile_ttft_ms": timed["ttft_ms"], "profile_tpot_ms": timed["tpot_ms"]}])
    pred = calibration.predict(basis, bounds=_run_bounds(row, basis, predictor, profile, calibration, gpu, on)).iloc[0]
    return {"framework": framework, "concurrency": int(concurrency), "isl": int(isl), "osl": int(osl),
            "mean_ttft_ms": float(pred["ttft_ms"]), "mean_tpot_ms": float(pred["tpot_ms"]),
            "kernel_only_ttft_ms": float(basis["kernel_ttft_ms"].iloc[0]),
            "kernel_only_tpot_ms": float(basis["kernel_tpot_ms"].iloc[0]),
            "calibration_runs": calibration.fitted_rows, "bounded": bool(pred["bounded"])}


def _basis_row(row, predictor, profile, **on) -> dict:
    """``row`` with its kernel-only (``kernel_*``) and roofline-only simulations (:func:`simulate_row` with
    ``on``: model, GPU, dtype, layout): one row of a calibration basis. Raises :class:`Skip` as they do."""
    from predictor import Predictor

    kernel = simulate_row(row, predictor, profile, **on)
    roof = simulate_row(row, Predictor.roofline_only(), profile, **on)
    return {**row.to_dict(), **{f"kernel_{k}": v for k, v in kernel.items()},
            "roofline_ttft_ms": roof["ttft_ms"], "roofline_tpot_ms": roof["tpot_ms"]}


def _run_bounds(row, basis, predictor, profile, calibration, gpu, on: dict):
    """:func:`calibrated_run`'s dominance bound (:mod:`scheduler.serving_bounds`): on a GPU outside the
    calibration's fit, the run's basis on each nearest fitted GPU it dominates, predicted there. None when there
    is no such GPU (or the run does not fit on any)."""
    import pandas as pd

    from predictor.gpus import get_gpu
    from predictor.precision import parse_dtype
    from predictor.sibling_bounds import catalogue_specs
    from scheduler.serving_bounds import BOUND_OF, dominated_gpus, upper_bounds

    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    rows = []
    for other in dominated_gpus(spec, parse_dtype(on["dtype"]).compute, catalogue_specs(calibration.systems)):
        try:
            rows.append({**_basis_row(row, predictor, profile, gpu=other, **on), BOUND_OF: "run"})
        except Skip:
            continue
    return upper_bounds(calibration, pd.DataFrame(rows), basis.assign(id="run")) if rows else None


def _token_share(model, parallel, dtype: str, block: int, length: int) -> float:
    """Share of the KV blocks of a sequence of ``length`` tokens that hold its tokens rather than its per-sequence
    state (windows, recurrent states; :func:`predictor.memory.state_block_counter`): 1 without such state."""
    from predictor.memory import state_block_counter
    from predictor.precision import parse_dtype

    count = state_block_counter(model, parallel, parse_dtype(dtype), block)
    tokens = -(-length // block)
    return 1.0 if count is None else tokens / (tokens + count(length - 1))


def _diagnostics(result, concurrency: int, token_share: float = 1.0) -> dict:
    """What a closed-loop run says besides its means: the first wave's TTFT (the ``concurrency`` requests
    sent together at the start, ms), the window's mean queueing (ms) and the engine's KV capacity (tokens, for
    sequences of the run's length: ``token_share`` of its blocks hold tokens, the rest their per-sequence state)."""
    cols = result.columns
    first = cols["ttft_s"][: min(concurrency, len(cols["ttft_s"]))] * 1e3
    first = first[np.isfinite(first)]
    window = measurement_window(len(cols["arrival_s"]), concurrency)
    queue = cols["queue_s"][window] * 1e3
    queue = queue[np.isfinite(queue)]
    block = int(result.config["block_size"])
    return {"first_ttft_ms": float(first.mean()) if len(first) else float("nan"),
            "queue_ms": float(queue.mean()) if len(queue) else float("nan"),
            "kv_tokens": float(result.num_blocks * block * token_share)}


def _simulate_disagg(row, predictor, profile, model, gpu, dtype, config, workload):
    """A disaggregated run (DistServe path): prefill and decode pools with KV handoff over the scale-up link
    when every worker fits one scale-up domain, else over the scale-out network."""
    from scheduler.techniques.cluster import Cluster, InstanceSpec

    specs = []
    for role in ("prefill", "decode"):
        parallel = row_parallel(row, f"{role}_")
        specs += [InstanceSpec(model, gpu, parallel, dtype, config, role, profile)] * int(row[f"{role}_num_workers"])
    # KV copies cross the scale-out network when the pools do not fit one scale-up domain (an HGX node)
    link_gbps = gpu.group_bandwidth_gbps(instance_gpus(row))
    cluster = Cluster(predictor, specs, router="least_loaded", link_bandwidth_gbps=link_gbps)
    for sim in cluster.sims:
        sim.record_work = False  # latencies only: no efficiency report
    window = measurement_window(len(workload), workload.concurrency)
    # as for an aggregated run: the drain after the window only matters to the requests still running
    run = cluster.run(workload, stop=lambda: bool(np.isfinite(cluster.state.finish[window]).all()))
    return run.result, run.landed_s


def _predict_rows(rows, predictor, roofline, profiles: dict, framework: str | None,
                  with_roofline: bool = True, max_concurrency: int = MAX_CONCURRENCY) -> list[dict]:
    """Predictions for a block of rows (one process's share): hybrid with the engine profile, roofline."""
    from scheduler.engine_profiles import kernel_only_profile

    memo: dict = {}

    def simulate(row, which, profile) -> dict:
        """:func:`simulate_row`, once per distinct configuration: runs that differ only in framework version or
        measurement (repeats) share one simulation."""
        key = (id(which), _profile_key(profile), *(row[c] for c in row.index if c not in _NOT_SIMULATED))
        if key not in memo:
            try:
                memo[key] = simulate_row(row, which, profile, max_concurrency=max_concurrency)
            except Skip as skip:
                memo[key] = skip
        if isinstance(memo[key], Skip):
            raise memo[key]
        return memo[key]

    out = []
    for _, row in rows.iterrows():
        record = {"id": row["id"]}
        try:
            if not (row["measured_ttft_ms"] > 0 and row["measured_tpot_ms"] > 0):  # NaN, missing or not a time
                raise Skip("no_measurement")
            name = framework or row["framework"]
            profile = profiles.get(name) or kernel_only_profile(row["framework"])
            hybrid = simulate(row, predictor, profile)
            basis = kernel_only_profile(row["framework"])
            record |= {"model": resolve_model(row["model_path"]).name, "gpus": instance_gpus(row), "skip": ""}
            record |= {f"pred_{key}": value for key, value in hybrid.items()}
            if with_roofline:
                roof = simulate(row, roofline, basis)
                record |= {"roofline_ttft_ms": roof["ttft_ms"], "roofline_tpot_ms": roof["tpot_ms"]}
        except Skip as skip:
            record["skip"] = skip.reason
        out.append(record)
    return out


_NOT_SIMULATED = frozenset({"id", "framework", "backend_version", "measured_ttft_ms", "measured_tpot_ms"})


def _profile_key(profile) -> str:
    """What of a profile changes a simulation: everything but its version and fit size. The framework stays: it
    names the scheduling (:data:`scheduler.engine_profiles.SCHEDULING`), which is all that two frameworks'
    kernel-only profiles differ in."""
    import json

    values = profile.to_dict()
    for name in ("version", "fitted_rows"):
        values.pop(name, None)
    return json.dumps(values, sort_keys=True)


_LOADED: dict = {}  # per worker process: the shipped and the roofline-only predictor, shared by its tasks


def _loaded(name: str, load):
    """The worker process's ``name`` predictor, loaded by ``load()`` on first use."""
    if name not in _LOADED:
        _LOADED[name] = load()
    return _LOADED[name]


def _worker(rows, artifacts, profiles, framework, with_roofline, max_concurrency):
    from predictor import Predictor

    # the shipped artifact cannot change under a running process (and keeps its tables); any other is loaded afresh
    predictor = _loaded("shipped", Predictor.load) if artifacts is None else Predictor.load(artifacts)
    return _predict_rows(rows, predictor, _loaded("roofline", Predictor.roofline_only), profiles, framework,
                         with_roofline, max_concurrency)


TASKS_PER_JOB = 4  # work items per process: a progress update each, few enough that dispatch costs stay small


def _blocks(order, count: int) -> list:
    """``order``'s rows in at most ``count`` blocks of whole (model, GPU) groups, largest groups first, each to the
    block with the fewest rows so far: a configuration's tables are built in one block only."""
    import pandas as pd

    keys = order["model_path"].astype(str) + "|" + order["system"].astype(str)
    groups = [order[keys == k] for k in keys.unique()]
    shares: list[list] = [[] for _ in range(max(1, min(count, len(groups))))]
    for g in sorted(groups, key=len, reverse=True):
        min(shares, key=lambda s: sum(len(x) for x in s)).append(g)
    return [pd.concat(s) for s in shares if s]


def predict_serving(table, *, artifacts=None, predictor=None, profiles: dict | None = None,
                    framework: str | None = None, with_roofline: bool = True,
                    n_jobs: int = 1, calibration=None, max_concurrency: int = MAX_CONCURRENCY, progress=None):
    """Simulate every measured run of ``table`` (from :func:`features.silicon.read_serving_results`).

    Parameters
    ----------
    calibration : scheduler.serving_model.ServingCalibration, optional
        When given, each run is simulated with kernels only (and roofline-only) and ``pred_*`` is the
        calibration's prediction from that basis (``kernel_*`` columns); ``framework``, when given, replaces
        every row's framework in its features. An aggregated run that no sibling anchors is also simulated with
        ``profiles`` (``profile_ttft_ms`` / ``profile_tpot_ms``, NaN for the other runs), the engine-profile
        simulation its TTFT blends with (:mod:`scheduler.serving_model`).
    artifacts : str, optional
        Residual-model artifact (default: shipped); ignored when ``predictor`` is given (then ``n_jobs`` = 1).
    profiles : dict, optional
        Engine profiles by framework (default: :func:`scheduler.engine_profiles.load_profiles`). A row uses
        its own framework's profile, or ``framework``'s for every row when given (e.g. ``legacy``).
    with_roofline : bool
        Also simulate with :meth:`predictor.Predictor.roofline_only` (the baseline; kernels only, no overhead).
    n_jobs : int
        Processes (joblib); rows are split by configuration so each process builds a configuration's tables once.
    max_concurrency : int
        Runs with more clients are skipped (``concurrency_over_limit``): a run simulates about twice its clients
        plus a measurement window of requests, so its cost grows with the clients.
    progress : callable, optional
        ``progress(step, done, total)``: called as blocks of runs finish (``done`` of ``total`` runs of ``step``, a
        short description; with a calibration, each of its simulation passes is a step).

    Returns
    -------
    DataFrame
        ``table`` plus ``pred_*`` (TTFT / TPOT and the run's diagnostics; ``kernel_*`` with a calibration),
        ``roofline_*`` TTFT / TPOT in ms and ``skip`` (the reason, empty when predicted). Kernels only:
        :func:`kernel_basis`.
    """
    import pandas as pd

    from predictor import Predictor
    from scheduler.engine_profiles import load_profiles

    profiles = profiles if profiles is not None else load_profiles()
    if calibration is not None:
        return _calibrated(table, calibration, framework, profiles, artifacts=artifacts, predictor=predictor,
                           n_jobs=n_jobs, max_concurrency=max_concurrency, progress=progress)
    order = table.sort_values(["model_path", "system", "tp", "gemm_quant_mode"], kind="stable")
    step = ("kernel-only" if not profiles else "engine-profile") + " simulations" + (
        " and roofline" if with_roofline else "")
    report = (lambda done: progress(step, done, len(order))) if progress is not None else (lambda done: None)
    records: list = []
    report(0)
    if predictor is not None or n_jobs <= 1 or len(order) < 2:
        predictor = predictor or Predictor.load(artifacts)
        roofline = Predictor.roofline_only()
        for block in _blocks(order, TASKS_PER_JOB):
            records += _predict_rows(block, predictor, roofline, profiles, framework, with_roofline, max_concurrency)
            report(len(records))
    else:
        from joblib import Parallel, delayed

        blocks = _blocks(order, TASKS_PER_JOB * n_jobs)
        parts = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_worker)(b, artifacts, profiles, framework, with_roofline, max_concurrency) for b in blocks)
        for part in parts:
            records += part
            report(len(records))
    rank = {run: i for i, run in enumerate(order["id"])}
    records.sort(key=lambda record: rank[record["id"]])  # columns in one order, however the rows were split
    predicted = pd.DataFrame(records).set_index("id")
    return table.join(predicted, on="id")


def kernel_basis(table, predictor=None, *, with_roofline: bool = True, **simulate):
    """``table`` simulated with kernels only: ``kernel_*`` (TTFT / TPOT and the run's diagnostics, ms) and,
    optionally, ``roofline_*`` — the basis of the serving calibration and of the engine-profile fits.
    ``simulate`` takes :func:`predict_serving`'s ``artifacts``, ``n_jobs`` and ``max_concurrency``."""
    out = predict_serving(table, predictor=predictor, profiles={}, with_roofline=with_roofline, **simulate)
    return out.rename(columns={c: "kernel_" + c[5:] for c in out.columns if c.startswith("pred_")})


def _calibrated(table, calibration, framework: str | None, profiles: dict, **simulate):
    """Kernel-only and roofline simulations of every run, the engine-profile one of each aggregated run that no
    sibling anchors (an anchored run keeps the anchored calibration's TTFT), then the calibration's TTFT / TPOT.
    With ``framework``, every run is the calibration's and the profile's ``framework``."""
    out = kernel_basis(table, **simulate)
    if "kernel_ttft_ms" not in out:
        return out.assign(pred_ttft_ms=np.nan, pred_tpot_ms=np.nan)
    def as_framework(frame):  # the calibration's and the profile's framework (the row's own stays in ``out``)
        return frame.assign(framework=framework) if framework else frame

    features = as_framework(out)
    open_runs = (features["skip"] == "") & (calibration.anchor_runs(features) == 0)  # no sibling anchors them
    timed = open_runs & (features["mode"] == "agg") & features["framework"].isin(profiles)
    out["profile_ttft_ms"] = out["profile_tpot_ms"] = np.nan
    if timed.any():
        sim = predict_serving(table[table["id"].isin(set(out.loc[timed, "id"]))], profiles=profiles,
                              framework=framework, with_roofline=False, **simulate).set_index("id")
        for target in ("ttft", "tpot"):
            out[f"profile_{target}_ms"] = out["id"].map(sim[f"pred_{target}_ms"])
    bounds = _dominance_bounds(table, out, out[open_runs.to_numpy()], calibration, as_framework, **simulate)
    pred = calibration.predict(as_framework(out), bounds=bounds)
    out["pred_ttft_ms"], out["pred_tpot_ms"] = pred["ttft_ms"], pred["tpot_ms"]
    out["anchor_runs"] = pred["anchor_runs"]
    out["bound_gpus"], out["bounded"] = bounds["bound_gpus"].to_numpy(), pred["bounded"].to_numpy()
    out["in_calibration"] = out["id"].astype(str).isin(calibration.fitted_ids)
    return out


def _dominance_bounds(table, out, open_runs, calibration, as_framework, **simulate):
    """Upper bounds of ``out``'s runs (those of ``open_runs``, the predicted runs no anchor covers, on GPUs outside
    ``calibration``'s fit): the same runs simulated on the fitted GPUs theirs dominates and predicted there
    (:mod:`scheduler.serving_bounds`)."""
    from scheduler.serving_bounds import bound_requests, relabelled, upper_bounds

    requests = bound_requests(open_runs, calibration.systems)
    basis = None
    if len(requests):
        shown = simulate.get("progress")
        if shown is not None:  # a step of its own: the same runs again, on the fitted GPUs
            simulate = {**simulate, "progress": lambda _, done, total: shown("bounding simulations on fitted GPUs",
                                                                             done, total)}
        basis = kernel_basis(relabelled(table, requests), **simulate)
        basis = as_framework(basis[basis["skip"] == ""])
    return upper_bounds(calibration, basis, out)


def _ape_stats(pred, measured) -> dict:
    ape = np.abs(np.asarray(pred, float) - np.asarray(measured, float)) / np.asarray(measured, float)
    ape = ape[np.isfinite(ape)]
    if not len(ape):
        return {"mdape": None, "p90_ape": None}
    return {"mdape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90))}


def _scores(frame) -> dict:
    out = {"rows": int(len(frame))}
    for metric in ("ttft", "tpot"):
        out[metric] = _ape_stats(frame[f"pred_{metric}_ms"], frame[f"measured_{metric}_ms"])
    if "roofline_ttft_ms" in frame:
        out["roofline"] = {m: _ape_stats(frame[f"roofline_{m}_ms"], frame[f"measured_{m}_ms"]) for m in ("ttft", "tpot")}
    return out


def score_serving(predictions) -> dict:
    """The accuracy report of :func:`predict_serving`'s output.

    Returns
    -------
    dict
        ``rows``, ``predicted``, ``skipped`` {reason: count}, ``ttft`` / ``tpot`` {``mdape``, ``p90_ape``}
        (fractions), ``roofline`` {ttft, tpot}, and ``by_system`` / ``by_backend`` / ``by_model`` with the
        same scores per group (predicted rows only). With a serving calibration, also ``in_calibration``
        (predicted runs the calibration was fitted on: their scores are in-sample) and
        ``not_in_calibration`` (the scores of the other runs), and ``anchored`` (runs predicted from the
        calibration's measurements of the same configuration on a sibling GPU; :mod:`scheduler.serving_anchors`),
        and ``bounded`` (runs on a GPU outside the calibration's fit kept no slower than its prediction on a fitted
        GPU theirs dominates; :mod:`scheduler.serving_bounds`).
    """
    done = predictions[predictions["skip"].fillna("") == ""] if "skip" in predictions else predictions.iloc[:0]
    skipped = predictions.loc[predictions["skip"].fillna("") != "", "skip"].value_counts() if "skip" in predictions else {}
    overall = _scores(done) if len(done) else {"ttft": _ape_stats([], []), "tpot": _ape_stats([], []),
                                               "roofline": {"ttft": _ape_stats([], []), "tpot": _ape_stats([], [])}}
    report = {"rows": int(len(predictions)), "predicted": int(len(done)),
              "skipped": {str(k): int(v) for k, v in dict(skipped).items()},
              "ttft": overall["ttft"], "tpot": overall["tpot"], "roofline": overall.get("roofline", {})}
    for key, column in (("by_system", "system"), ("by_backend", "framework"), ("by_model", "model_path")):
        report[key] = {str(k): _scores(g) for k, g in done.groupby(column, sort=True)} if len(done) else {}
    if "in_calibration" in done:
        seen = done["in_calibration"].fillna(False).astype(bool)
        # runs the serving calibration was fitted on score in-sample: report the others apart
        report["in_calibration"] = int(seen.sum())
        report["not_in_calibration"] = _scores(done[~seen]) if (~seen).any() else {"rows": 0}
    if "anchor_runs" in done:
        # runs whose configuration the calibration's anchors hold on a sibling GPU (scheduler.serving_anchors)
        report["anchored"] = int((done["anchor_runs"].fillna(0) > 0).sum())
    if "bounded" in done:
        # runs on a GPU outside the calibration's fit capped by its prediction on a GPU theirs dominates
        report["bounded"] = int(done["bounded"].fillna(False).astype(bool).sum())
    return report
