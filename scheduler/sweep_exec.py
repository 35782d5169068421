"""Where sweep points run: in-process, local joblib processes, or a Dask cluster (see :mod:`scheduler.sweep`).

``dask="local"`` starts a :class:`distributed.LocalCluster` bound to 127.0.0.1 with its dashboard on
127.0.0.1 too (a free port), so nothing listens on other interfaces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from predictor.errors import InputError

# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------
def check_execution(n_jobs: int, dask) -> None:
    """Raise :class:`InputError` for an ``n_jobs`` or ``dask`` value :func:`run_sweep` cannot use."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or (n_jobs < 1 and n_jobs != -1):
        raise InputError(f"--n-jobs: must be a positive integer or -1 (all cores), got {n_jobs!r}")
    if dask is None or not isinstance(dask, str):
        return
    if dask != "local" and not dask.startswith(("tcp://", "tls://")):
        raise InputError(f"--dask: expected 'local' or a scheduler address like tcp://host:8786, got {dask!r}")


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (one line) when nothing listens at a ``tcp://host:port`` scheduler address."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise InputError(f"--dask: expected tcp://host:port, got {address!r}")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise InputError(f"--dask: cannot connect to a Dask scheduler at {address} ({err.strerror or err})") from None


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while child processes start (they keep ignoring it); restore the handler after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _parallel(n_jobs: int, dask) -> Iterator[tuple[dict, str]]:
    """joblib settings for the chosen backend: (Parallel kwargs, a description)."""
    import joblib

    from predictor.cpus import capped_workers

    if dask is None or (isinstance(dask, str) and dask == "local"):
        n_jobs, warning = capped_workers(n_jobs, "n_jobs")
        if warning:
            import warnings

            warnings.warn(warning, RuntimeWarning, stacklevel=2)
    if dask is None:
        yield {"n_jobs": n_jobs}, f"joblib (n_jobs={n_jobs})"
        return
    import logging

    from distributed import Client, LocalCluster

    owned = []
    try:
        if isinstance(dask, str) and dask == "local":
            workers = n_jobs if n_jobs > 1 else 2
            with _sigint_ignored():  # worker processes inherit it: Ctrl-C reaches only this process, which stops
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            owned.append(cluster)
            client = Client(cluster)
            owned.insert(0, client)
            label = f"dask LocalCluster ({workers} workers × 1 thread)"
        elif isinstance(dask, str):
            _probe(dask)
            try:
                client = Client(dask, timeout="15s")
            except (OSError, TimeoutError) as err:
                raise InputError(f"--dask: cannot connect to a Dask scheduler at {dask} ({type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:120]})") from None
            owned.append(client)
            label = f"dask cluster at {dask}"
        else:
            client = dask  # a distributed.Client the caller owns
            label = "dask client"
        threads = sum(client.nthreads().values())
        with joblib.parallel_backend("dask", client=client, wait_for_workers_timeout=60):
            yield {"n_jobs": -1}, f"{label}, {threads} worker threads"
    finally:
        for obj in owned:
            with contextlib.suppress(Exception):
                obj.close()


def _execute(task, ctx: Context, items: list[tuple[int, dict]], *, n_jobs: int, dask, total: int, done: int,
             progress: Callable[[int, int], None] | None) -> tuple[dict[int, dict], bool, str]:
    """Run ``task(ctx, index, item)`` over ``items``; return ({index: result}, interrupted, backend)."""
    from joblib import Parallel, delayed

    results: dict[int, dict] = {}
    interrupted = False
    with _parallel(n_jobs, dask) as (kwargs, backend):
        gen = None
        try:
            if progress is not None:
                progress(done, total)
            if items:
                gen = Parallel(return_as="generator_unordered", **kwargs)(delayed(task)(ctx, i, item)
                                                                           for i, item in items)
                for index, row in gen:
                    results[index] = row
                    if progress is not None:
                        progress(done + len(results), total)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if gen is not None:
                with contextlib.suppress(Exception):
                    gen.close()
    return results, interrupted, backend
