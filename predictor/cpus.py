"""How many CPUs this process may actually use, for LightGBM threads and worker pools.

``os.cpu_count()`` counts the machine's cores, not the ones a process may run on: a container or a
``taskset`` limits the set (``os.sched_getaffinity``) and a cgroup CPU quota limits the time
(``cpu.max`` under cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1). Threads beyond
both only oversubscribe: on a shared 2-core machine, LightGBM with as many OpenMP threads as the host
has cores ran 20× slower than with two.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def cgroup_cpu_limit(v2: Path = _CGROUP_V2, v1: tuple[Path, Path] = _CGROUP_V1) -> float | None:
    """CPUs' worth of time the cgroup quota allows (e.g. 1.5), or None when there is no quota.

    Parameters
    ----------
    v2, v1 : Path
        The cgroup v2 ``cpu.max`` file and the v1 (quota, period) files; the first readable one wins.
    """
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text().strip()) for p in v1)
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process can use: its affinity set, capped by the cgroup quota (rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def capped_workers(requested: int, what: str = "n_jobs") -> tuple[int, str | None]:
    """Worker count to use for ``requested`` (-1: one per available CPU), and a warning when it was capped.

    Parameters
    ----------
    requested : int
        Positive, or -1 for every available CPU (validated by the caller).
    what : str
        The option's name, for the warning.

    Returns
    -------
    (int, str or None)
        At most :func:`available_cpus` workers; the one-line warning when ``requested`` asked for more.

    Examples
    --------
    >>> capped_workers(1)
    (1, None)
    """
    cpus = available_cpus()
    if requested == -1:
        return cpus, None
    if requested > cpus:
        return cpus, f"{what}={requested} capped to {cpus}: the CPUs available to this process"
    return requested, None
