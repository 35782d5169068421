"""Plain parts of :mod:`scheduler.techniques.cluster`: instance and failure specs, the result, and the waiting
queue that keeps the least-loaded router's load up to date in O(1) per queue change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scheduler.engine import EngineConfig


@dataclass(frozen=True)
class InstanceSpec:
    """One engine instance: model, GPU, TP degree, precision, engine knobs and role.

    ``role`` is ``mixed`` (prefill and decode, colocated), ``prefill`` or ``decode`` (disaggregated).
    ``profile`` is a framework's :class:`~scheduler.engine_profiles.EngineProfile` (its step costs); None: the
    predictor's own times.
    """

    model: str
    gpu: object
    tp: int = 1
    dtype: str = "fp16"
    config: EngineConfig = field(default_factory=EngineConfig)
    role: str = "mixed"
    profile: object | None = None


@dataclass(frozen=True)
class Failure:
    """Instance ``instance`` is lost at ``at_s`` (s) and restarts empty ``restart_after_s`` later (None: never)."""

    instance: int
    at_s: float
    restart_after_s: float | None = None


@dataclass
class ClusterResult:
    """The requests' results over the whole cluster plus cluster-level counts.

    Attributes
    ----------
    result : scheduler.metrics.SimResult
        Per-request results (``result.requests``) and :meth:`summary` (no per-iteration log).
    instances : list of dict
        Per instance: role, KV blocks, KV utilisation (time-weighted), preemptions, batch-size mean.
    migrations : int
        Live migrations (Llumnix) and KV handoffs from prefill to decode instances (DistServe) are counted
        separately: ``migrations`` and ``handoffs``.
    transfer_s : ndarray
        Duration (s) of every KV copy (migrations and handoffs).
    restarts : ndarray
        Per request, how many times it lost its KV to an instance failure and recomputed.
    served_by : ndarray
        Per request, the instance that served it last (-1: never routed).
    interrupted : ndarray
        Per request, how many instance failures it was running through (whatever happened to its KV).
    landed_s : ndarray
        Per request, when its prompt's KV last landed at a decode instance (s; NaN when it never moved):
        a disaggregated stack streams the first token to the client from there.
    """

    result: object
    instances: list
    migrations: int
    handoffs: int
    transfer_s: np.ndarray
    restarts: np.ndarray
    served_by: np.ndarray
    interrupted: np.ndarray
    landed_s: np.ndarray | None = None

    def summary(self, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
        out = self.result.summary(slo_ttft_ms, slo_tpot_ms)
        out["cluster"] = {"instances": self.instances, "migrations": self.migrations, "handoffs": self.handoffs,
                          "transfer_ms_mean": float(self.transfer_s.mean() * 1e3) if self.transfer_s.size else 0.0,
                          "restarted_requests": int((self.restarts > 0).sum())}
        return out


class CountedQueue(deque):
    """An instance's waiting queue that keeps ``blocks``: Σ of the KV blocks its requests need at admission.

    ``need(r)`` gives a request's blocks (its prompt, or for a prefilled request its prompt's KV plus the next
    token's slot, on this instance's block size and KV budget). It is counted when the request joins the queue
    and taken off when it leaves: a request's tokens, target and ``prefilled`` flag never change while it
    waits (eviction, hand-off and failure recovery change them before queueing it), so the sum equals
    recounting the queue, in O(1) per change instead of O(queue) per routing decision. Only the deque
    operations the engine and the cluster use are allowed (``append``, ``appendleft``, ``popleft``, reads).
    """

    def __init__(self, need: Callable[[int], int]):
        super().__init__()
        self.need = need
        self.blocks = 0
        self._counted: dict[int, int] = {}

    def append(self, r: int) -> None:
        self.blocks += self._count(r)
        super().append(r)

    def appendleft(self, r: int) -> None:
        self.blocks += self._count(r)
        super().appendleft(r)

    def popleft(self) -> int:
        r = super().popleft()
        self.blocks -= self._counted.pop(r)
        return r

    def _count(self, r: int) -> int:
        if r in self._counted:
            raise ValueError(f"request {r} is already queued on this instance")
        need = self._counted[r] = int(self.need(r))
        return need

    def _unsupported(self, *args, **kwargs):
        raise TypeError("CountedQueue: only append, appendleft and popleft change the queue (its block count "
                        "must stay exact)")

    pop = remove = clear = extend = extendleft = insert = rotate = __setitem__ = __delitem__ = __iadd__ = _unsupported
