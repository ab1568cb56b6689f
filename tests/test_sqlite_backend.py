"""orderdesk.sqlite: writers wait for one another on a flock() beside the database (the kernel
hands it over the moment it is free, no polling), in the order they asked; reads never wait;
a writer outside the back end still meets SQLite's own busy timeout."""

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connections
from django.db.backends.sqlite3.base import DatabaseWrapper as StockWrapper

from orderdesk.sqlite.base import DatabaseWrapper, WriterQueue

pytestmark = pytest.mark.sqlite
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def wrappers(tmp_path, django_db_blocker):
    """Two Django connections of this back end on one new database file (as two processes
    or threads of the stack would hold), and the path."""
    path = tmp_path / "queue.sqlite3"
    settings = {"NAME": str(path), "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5,
                                               "init_command": "PRAGMA journal_mode=WAL;"},
                "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False,
                "TIME_ZONE": None, "USER": "", "PASSWORD": "", "HOST": "", "PORT": "", "TEST": {}}
    with django_db_blocker.unblock():  # connections of their own, not the test database
        made = [DatabaseWrapper(dict(settings), alias=f"queue{i}") for i in range(2)]
        made[0].cursor().execute("CREATE TABLE t (x INTEGER)")
        yield made, path
        for w in made:
            w.close()


def begin(wrapper):
    """What transaction.atomic() does first on SQLite."""
    wrapper.ensure_connection()
    wrapper._start_transaction_under_autocommit()


def test_a_second_writer_waits_on_the_queue_and_proceeds_the_moment_the_first_commits(wrappers):
    (first, second), _ = wrappers
    begin(first)
    first.cursor().execute("INSERT INTO t VALUES (1)")
    started, result = threading.Event(), {}
    second.inc_thread_sharing()  # used from the writer thread below

    def write():
        started.set()
        t0 = time.monotonic()
        second.cursor().execute("INSERT INTO t VALUES (2)")  # autocommit: queued on its own
        result["waited"] = time.monotonic() - t0
        result["at"] = time.monotonic()

    writer = threading.Thread(target=write)
    writer.start()
    started.wait()
    time.sleep(0.3)
    assert "waited" not in result  # still queued behind the open transaction
    committed_at = time.monotonic()
    first._commit()
    writer.join(timeout=5)
    assert result["waited"] >= 0.3
    assert result["at"] - committed_at < 0.1  # handed over at once, not at the next poll
    assert first.cursor().execute("SELECT count(*) FROM t").fetchone()[0] == 2


def test_reads_never_wait_for_a_writer(wrappers):
    (first, second), _ = wrappers
    begin(first)
    first.cursor().execute("INSERT INTO t VALUES (1)")
    t0 = time.monotonic()
    assert second.cursor().execute("SELECT count(*) FROM t").fetchone()[0] == 0  # WAL: the committed state
    assert time.monotonic() - t0 < 0.1
    first._rollback()


def test_the_watchers_passive_checkpoint_does_not_queue_behind_writers(wrappers):
    (first, second), _ = wrappers
    begin(first)
    first.cursor().execute("INSERT INTO t VALUES (1)")
    t0 = time.monotonic()
    second.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert time.monotonic() - t0 < 0.1
    first._commit()


def test_rollback_and_close_let_the_next_writer_in(wrappers):
    (first, second), _ = wrappers
    begin(first)
    first._rollback()
    begin(second)  # would block forever if the rollback had kept the queue
    second._commit()
    begin(first)
    first.close()  # a connection closed mid-transaction (a killed request) lets go too
    second.cursor().execute("INSERT INTO t VALUES (3)")
    assert second.cursor().execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_a_writer_outside_the_back_end_still_meets_sqlites_busy_timeout(wrappers):
    (first, _), path = wrappers
    outsider = sqlite3.connect(path, isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    first.settings_dict["OPTIONS"]["timeout"] = 0.2
    first.close()
    t0 = time.monotonic()
    with pytest.raises(Exception, match="locked"):
        begin(first)
    assert 0.2 <= time.monotonic() - t0 < 2
    outsider.execute("ROLLBACK")
    outsider.close()
    begin(first)  # the failed BEGIN did not keep the queue
    first._commit()


def test_django_uses_it_on_sqlite(db):
    default = connections["default"]
    assert isinstance(default, DatabaseWrapper) and isinstance(default, StockWrapper)
    default.ensure_connection()
    assert default.connection.writer_queue is not None


def tickets_taken(path) -> int:
    raw = (path.parent / f"{path.name}-writer-tickets").read_bytes()[:8]
    return int.from_bytes(raw, "little") if len(raw) == 8 else 0


def wait_for_tickets(path, count: int) -> None:
    deadline = time.monotonic() + 5
    while tickets_taken(path) < count:
        assert time.monotonic() < deadline, "the writer never asked"
        time.sleep(0.005)


def test_writers_are_served_in_the_order_they_asked(tmp_path):
    path = tmp_path / "fifo.sqlite3"
    holder = WriterQueue(str(path))
    holder.acquire()
    served, queues, threads = [], [], []

    def write(i, queue):
        queue.acquire()
        served.append(i)
        time.sleep(0.01)  # a writer that lets go and at once asks again must not overtake
        queue.release()

    for i in range(6):
        queues.append(WriterQueue(str(path)))
        threads.append(threading.Thread(target=write, args=(i, queues[-1])))
        threads[-1].start()
        wait_for_tickets(path, i + 2)  # asked, in this order
    holder.release()
    for thread in threads:
        thread.join(timeout=5)
    assert served == list(range(6))
    for queue in [holder, *queues]:
        queue.close()


def test_a_writer_that_lets_go_and_asks_again_at_once_goes_after_the_one_waiting(tmp_path):
    """A worker's claim, paper order and broker id are three turns in a row: with flock()
    alone it took the lock back before the waiting intake had even been woken."""
    path = tmp_path / "again.sqlite3"
    first, waiting = WriterQueue(str(path)), WriterQueue(str(path))
    served = []

    def wait():
        waiting.acquire()
        served.append("waiting")
        waiting.release()

    first.acquire()
    thread = threading.Thread(target=wait)
    thread.start()
    wait_for_tickets(path, 2)
    first.release()
    first.acquire()
    served.append("first again")
    first.release()
    thread.join(timeout=5)
    assert served == ["waiting", "first again"]
    first.close()
    waiting.close()


def test_a_writer_that_dies_while_waiting_lets_the_next_one_in(tmp_path):
    path = tmp_path / "dead.sqlite3"
    holder = WriterQueue(str(path))
    holder.acquire()
    waiting = subprocess.Popen([sys.executable, "-c", "import sys; from orderdesk.sqlite.base import WriterQueue; "
                                "WriterQueue(sys.argv[1]).acquire()", str(path)], cwd=ROOT)
    next_one, took = WriterQueue(str(path)), threading.Event()
    try:
        wait_for_tickets(path, 2)
        thread = threading.Thread(target=lambda: (next_one.acquire(), took.set()))
        thread.start()
        wait_for_tickets(path, 3)
        waiting.kill()  # its ticket was before ours; its locks go with it
        waiting.wait(timeout=5)
        holder.release()
        assert took.wait(timeout=5)
    finally:
        waiting.kill()
        next_one.close()
        holder.close()
