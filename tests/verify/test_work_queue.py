"""The work queue verify runs the float model on: the caller takes the jobs its worker has not,
results come back in submission order, ``idle`` returns only once no job runs, and a job's error
reaches the caller."""
import threading
import time

import pytest

from spikeclip_deploy.verify.work_queue import work_queue


def test_results_in_submission_order_while_the_worker_holds_the_first():
    started, release = threading.Event(), threading.Event()
    ran = {}

    def job(i, hold=False):
        def run():
            if hold:
                started.set()
                release.wait(10)  # bounded: a failing test ends
            ran[i] = threading.get_ident()
            return i * 10
        return run

    with work_queue(True) as q:
        q.submit(job(0, hold=True))
        started.wait(10)  # the worker holds job 0
        for i in (1, 2, 3):
            q.submit(job(i))
        q.help()  # jobs 1-3 run here
        assert {i: ran[i] for i in (1, 2, 3)} == dict.fromkeys((1, 2, 3), threading.get_ident())
        assert list(q.done()) == []  # job 0 is not finished: nothing after it either
        release.set()
        q.idle()
        assert 0 in ran and ran[0] != threading.get_ident()
        assert list(q.done()) == [0, 10, 20, 30]
        q.submit(job(4))
        q.idle()
        assert list(q.done()) == [40]


def test_idle_returns_only_once_the_worker_is_done():
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def held():
        started.set()
        release.wait(10)  # bounded: a failing test ends
        finished.set()

    with work_queue(True) as q:
        q.submit(held)
        started.wait(10)
        threading.Timer(0.2, release.set).start()
        q.idle()
        assert finished.is_set()


@pytest.mark.parametrize("worker", [True, False])
def test_a_jobs_error_reaches_the_caller(worker):
    def bad():
        raise ValueError("planted")

    with work_queue(worker) as q:
        q.submit(bad)
        with pytest.raises(ValueError, match="planted"):
            q.idle()
            list(q.done())


def test_without_a_worker_the_caller_runs_every_job():
    with work_queue(False) as q:
        for i in range(3):
            q.submit(lambda i=i: (i, threading.get_ident()))
        assert list(q.done()) == []
        q.help()
        assert list(q.done()) == [(i, threading.get_ident()) for i in range(3)]


def test_no_job_starts_while_held_and_the_hold_waits_for_the_running_one():
    started, release = threading.Event(), threading.Event()
    ran = []

    def job(i, block=False):
        def run():
            if block:
                started.set()
                release.wait(10)  # bounded: a failing test ends
            ran.append(i)
            return i
        return run

    with work_queue(True) as q:
        q.submit(job(0, block=True))
        started.wait(10)  # the worker runs job 0
        threading.Timer(0.2, release.set).start()
        with q.hold():
            assert ran == [0]  # the hold began once job 0 was done
            q.submit(job(1))
            time.sleep(0.3)  # time for the worker to take it, were it not held
            q.help()
            assert ran == [0]
        q.idle()
        assert list(q.done()) == [0, 1]


def test_help_below_an_index_leaves_the_later_jobs_waiting():
    with work_queue(False) as q:
        for i in range(4):
            q.submit(lambda i=i: i)
        q.help(below=2)
        assert list(q.done()) == [0, 1]
        q.help()
        assert list(q.done()) == [2, 3]
