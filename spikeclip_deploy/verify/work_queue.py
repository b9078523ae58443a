"""Jobs that a thread of their own and the caller work through together, their results taken
in the order they were submitted.

``verify`` runs the float model in such jobs (a few images each) beside the backends: the worker
thread takes them as they come, and the caller, once its own part of a batch is done, takes those
still waiting (:meth:`WorkQueue.help`) instead of waiting for the worker. Neither thread then
idles while the other has work, and neither waits at every batch for the other.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class WorkQueue:
    """A queue of jobs (``() -> result``), run by whoever takes each first: the worker thread
    of :func:`work_queue` (if any) or the caller in :meth:`help`. :meth:`done` yields the
    results in submission order, as far as they are finished; :meth:`idle` returns once no
    thread runs a job, and inside :meth:`hold` no job runs (then a process may fork: no job holds
    a lock of another thread). A job's exception is raised in the caller, by the next
    :meth:`done` or :meth:`idle`."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._waiting: deque[tuple[int, Callable[[], Any]]] = deque()
        self._finished: dict[int, Any] = {}
        self._submitted = self._taken = self._running = self._held = 0
        self._error: BaseException | None = None
        self._closed = False

    def submit(self, job: Callable[[], Any]) -> None:
        with self._cv:
            self._waiting.append((self._submitted, job))
            self._submitted += 1
            self._cv.notify_all()

    def help(self, below: int | None = None) -> None:
        """Run the jobs waiting, here, until none waits (with ``below``: none of an index below
        it, in submission order from 0)."""
        while (got := self._take(block=False, below=below)) is not None:
            self._run(*got)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A block in which no job runs: it begins once the running ones are done, and no
        thread takes a job until it ends (the jobs waiting stay waiting)."""
        with self._cv:
            self._held += 1
            self._cv.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._cv:
                self._held -= 1
                self._cv.notify_all()

    def idle(self) -> None:
        """:meth:`help`, then wait until no thread runs a job."""
        self.help()
        with self._cv:
            self._cv.wait_for(lambda: self._running == 0)
        self._raise()

    def done(self) -> Iterator[Any]:
        """The results finished, from the first not yet taken, in submission order, up to the
        first unfinished one."""
        self._raise()
        while True:
            with self._cv:
                if self._taken not in self._finished:
                    return
                result = self._finished.pop(self._taken)
                self._taken += 1
            yield result

    def close(self, drop: bool = False) -> None:
        """Let the worker end once no job waits (with ``drop``, the waiting ones dropped)."""
        with self._cv:
            self._closed = True
            if drop:
                self._waiting.clear()
            self._cv.notify_all()

    def work(self) -> None:
        """The worker's loop: take and run jobs until :meth:`close`."""
        while (got := self._take(block=True)) is not None:
            self._run(*got)

    def _take(self, block: bool, below: int | None = None
              ) -> tuple[int, Callable[[], Any]] | None:
        with self._cv:
            if block:
                self._cv.wait_for(lambda: (self._waiting and not self._held) or self._closed)
            if not self._waiting or self._held or (below is not None
                                                   and self._waiting[0][0] >= below):
                return None
            self._running += 1
            return self._waiting.popleft()

    def _run(self, index: int, job: Callable[[], Any]) -> None:
        result, error = None, None
        try:
            result = job()
        except BaseException as exc:  # raised in the caller (class docstring)
            error = exc
        with self._cv:
            self._running -= 1
            if error is not None and self._error is None:
                self._error = error
            self._finished[index] = result
            self._cv.notify_all()

    def _raise(self) -> None:
        with self._cv:
            error, self._error = self._error, None
        if error is not None:
            raise error


@contextmanager
def work_queue(worker: bool, initializer: Callable[[], None] | None = None
               ) -> Iterator[WorkQueue]:
    """A :class:`WorkQueue`; with ``worker``, a thread (set up by ``initializer``) runs its jobs
    too, until the block ends (the jobs still waiting then run first, unless the block ends in
    an error: then they are dropped)."""
    queue = WorkQueue()
    if not worker:
        yield queue
        return

    def run() -> None:
        if initializer is not None:
            initializer()
        queue.work()

    thread = threading.Thread(target=run, name="float-model", daemon=True)
    thread.start()
    try:
        yield queue
    except BaseException:
        queue.close(drop=True)
        raise
    finally:
        queue.close()
        thread.join()
