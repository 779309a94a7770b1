"""Group commit, pipelined: one sync makes one batch's blobs and the previous batch's index
durable at once.

A single committer thread takes everything that queued up while it was busy and
runs it as one batch. Each turn of its loop:

1. `stage(batch)`: each blob goes under its final name (written, not yet durable);
2. `sync()`: one flush makes *this* batch's blobs durable, and also the index
   transaction of the *previous* batch, which was written but not synced; the
   previous batch's senders are told now;
3. `index(batch)`: this batch's index transaction commits (durable at the next
   turn's sync, which comes at once: the loop does not wait for new work while
   something is unsynced).

So a blob is always durable before the index row that names it, every success is
reported only after both are durable, and under load each batch costs one sync
instead of two. A lone delivery still takes two syncs, waiting for no timer.
Failures are reported at once. With batching off every item is its own batch
(for comparison in bench/).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E")

MAX_BATCH = 256
# The GIL switch interval for a process that runs a committer (`letterbox run` sets
# it): callers and the committer hand the GIL back and forth on every delivery, and
# at Python's default 5 ms each handoff can stall a commit that long.
SWITCH_INTERVAL = 0.0002
_STOP = object()


class GroupCommitter(Generic[T, R, E]):
    def __init__(
        self,
        stage: Callable[[Sequence[T]], list[E | None]],
        sync: Callable[[], None],
        index: Callable[[Sequence[T], list[E | BaseException | None]], Sequence[R | BaseException]],
        *,
        batching: bool = True,
        name: str = "letterbox-commit",
    ) -> None:
        self._stage = stage
        self._sync = sync
        self._index = index
        self._max = MAX_BATCH if batching else 1
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self._closed = False
        self._stopping = False
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

    def _take(self, block: bool) -> list[tuple[T, Future[R]]]:
        batch: list[tuple[T, Future[R]]] = []
        while len(batch) < self._max:
            try:
                got = self._queue.get(block=block and not batch and not self._stopping)
            except queue.Empty:
                break
            if got is _STOP:
                self._stopping = True
                continue
            batch.append(got)  # type: ignore[arg-type]
        return batch

    def _run(self) -> None:
        unsynced: list[tuple[Future[R], R]] = []  # indexed, told once the next sync is done
        while True:
            batch = self._take(block=not unsynced)
            if not batch and not unsynced and self._stopping:
                return
            items = [b[0] for b in batch]
            # A future cancelled while queued still gets its item stored (dropping it
            # would orphan its blob), but nobody is told.
            futures = [b[1] for b in batch]
            live = [f.set_running_or_notify_cancel() for f in futures]
            errors: list[E | BaseException | None]
            try:
                errors = list(self._stage(items)) if items else []
            except BaseException as exc:
                errors = [exc] * len(items)
            try:
                self._sync()
                sync_error: BaseException | None = None
            except BaseException as exc:
                sync_error = exc
            for fut, res in unsynced:
                _settle(fut, sync_error or res)
            unsynced = []
            if not items:
                continue
            if sync_error is not None:
                errors = [sync_error] * len(items)
            try:
                results: Sequence[R | BaseException] = self._index(items, errors)
            except BaseException as exc:
                results = [exc] * len(items)
            self.batches += 1
            self.items += len(items)
            for fut, outcome, alive in zip(futures, results, live, strict=True):
                if not alive:
                    continue
                if isinstance(outcome, BaseException):
                    _settle(fut, outcome)  # a refusal needs no sync to be told
                else:
                    unsynced.append((fut, outcome))


def _settle(fut: Future[R], outcome: R | BaseException) -> None:
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)
