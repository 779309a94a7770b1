"""Group commit: concurrent deliveries share one index transaction and one round of fsyncs.

A single committer thread takes everything that queued up while the previous
batch was on its way to disk, and applies it as one batch. Under load the cost of
an fsync is paid per batch, not per message, and a lone delivery waits for no
timer. With batching off each item is its own batch (for comparison in bench/).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256
_STOP = object()


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        apply: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        batching: bool = True,
        name: str = "letterbox-commit",
    ) -> None:
        self._apply = apply
        self._max = MAX_BATCH if batching else 1
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0  # figures for bench/ and tests
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        fut: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the drive is closed")
            self._queue.put((item, fut))
        return fut

    def close(self) -> None:
        """Finish everything already submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            # A future cancelled while queued still gets its item applied (the
            # delivery is already on its way to disk; dropping it would orphan its
            # blob), but nobody is told: set_running_or_notify_cancel says so.
            items = [b[0] for b in batch]  # type: ignore[index]
            futures = [b[1] for b in batch]  # type: ignore[index]
            live = [f.set_running_or_notify_cancel() for f in futures]
            try:
                results: Sequence[R | BaseException] = self._apply(items)
            except BaseException as exc:  # a failed batch fails each of its items
                results = [exc] * len(items)
            self.batches += 1
            self.items += len(items)
            for fut, res, alive in zip(futures, results, live, strict=True):
                if not alive:
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
