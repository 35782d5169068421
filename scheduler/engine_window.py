"""Windowed runs: a streamed workload fed through a bounded window of engine state (memory flat in requests).

:meth:`scheduler.engine.Simulator.run` given a :class:`scheduler.workload_stream.StreamedWorkload` keeps only
a window of per-request rows: the requests loaded so far that are still waiting or running, plus the latest
chunk. The event loop is the ordinary one (:meth:`Simulator._loop`); when its arrivals reach the end of the
window, :meth:`Window.refill` retires every finished or rejected request — its row goes to the Parquet stream
(``stream_requests_to``) and into :class:`scheduler.metrics_stream.RequestTotals` — and appends the next chunk,
renumbering the rows kept (in order, so the engine breaks every tie as before).

The simulation is the same as an ordinary run of the same requests: same iterations, same per-request rows
(``request_id`` is the request's position in the workload; rows are written as they retire, so the file is in
retirement order). Only the summary differs: its latency percentiles come from histograms (within 0.3%, see
:mod:`scheduler.metrics_stream`), and SLO attainment is counted for thresholds given before the run.

Memory: a window holds the requests in flight plus one chunk (:data:`CHUNK` requests); a request that stays
long (a very long output) keeps the window from shrinking below it only until it finishes.
"""

from __future__ import annotations

import numpy as np

from scheduler.engine_state import DONE, REJECTED, _State
from scheduler.metrics import RequestStream, request_columns
from scheduler.metrics_stream import RequestTotals
from scheduler.workload import Workload

CHUNK = 16_384  # requests generated and appended at a time


class Window:
    """Feeds ``workload`` (a :class:`~scheduler.workload_stream.StreamedWorkload`) to ``sim`` chunk by chunk.

    Parameters
    ----------
    sim : scheduler.engine.Simulator
    workload : StreamedWorkload
    totals : RequestTotals
        Receives every retired row.
    stream : RequestStream, optional
        Receives every retired row too (written at once).
    """

    def __init__(self, sim, workload, totals: RequestTotals, stream: RequestStream | None = None,
                 chunk: int | None = None):
        self.sim, self.workload, self.totals, self.stream = sim, workload, totals, stream
        self._chunks = workload.chunks(chunk or CHUNK)
        self.loaded = 0   # requests generated so far (ids 0 .. loaded − 1)
        self.retired = 0  # finished or rejected requests already retired
        self.more = True

    def next_workload(self) -> Workload | None:
        """The next chunk as a Workload (None when the stream is exhausted; then :attr:`more` is False)."""
        try:
            arrival, prompt, output = next(self._chunks)
        except StopIteration:
            self.more = False
            return None
        self.loaded += len(arrival)
        if self.loaded >= len(self.workload):
            self.more = False
        return Workload(arrival, prompt, output, self.workload.name)

    def label(self, state: _State) -> None:
        """Give the rows of a freshly loaded chunk their request ids."""
        state.rid = np.arange(self.loaded - len(state.status), self.loaded)

    def refill(self, state: _State) -> tuple[int, int]:
        """Every request of the window has arrived: retire the finished and rejected ones, append the next chunk.

        Returns ``(shift, rejected)``: how many rows below the window's end were removed (the loop's next arrival
        index moves down by as much) and how many of the new chunk's requests were rejected at once.
        """
        chunk = self.next_workload()
        if chunk is None:
            return 0, 0
        new = _State(chunk)
        self.label(new)
        self.sim._reject_impossible(new)
        ended = state.status >= DONE
        self._retire(state, np.flatnonzero(ended))
        self.sim._renumber(state.compact(np.flatnonzero(~ended), new))
        return int(ended.sum()), int((new.status == REJECTED).sum())

    def close(self, state: _State) -> None:
        """Retire every row left (the run ended, or was stopped: unfinished rows too) and close the stream.
        Requests of a stopped run that were never generated are counted in ``requests`` only."""
        self._retire(state, np.arange(len(state.status)))
        self.totals.requests += len(self.workload) - self.loaded
        if self.stream is not None:
            self.stream.finish(state)

    def _retire(self, state: _State, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        columns = request_columns(state, rows)
        self.retired += int((columns["status_code"] >= DONE).sum())
        self.totals.add(columns)
        if self.stream is not None:
            self.stream.write(columns)
