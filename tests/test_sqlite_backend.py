"""orderdesk.sqlite: the write lock is waited for in short steps, and only where a busy answer
has changed nothing (BEGIN IMMEDIATE, an autocommit statement)."""

import sqlite3
import threading
import time

import pytest

from orderdesk.sqlite.base import Connection, Cursor


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "lock.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    yield path, holder
    holder.close()


def waiter(path, lock_wait_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=0, factory=Connection)
    conn.lock_wait_s = lock_wait_s
    return conn


def hold_lock(holder, seconds: float) -> threading.Thread:
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, holder.execute, ("COMMIT",))
    release.start()
    return release


@pytest.mark.parametrize("statement", ["BEGIN IMMEDIATE", "INSERT INTO t VALUES (1)"])
def test_a_writer_waits_for_the_lock_and_gets_it_when_released(database, statement):
    path, holder = database
    conn = waiter(path, lock_wait_s=10)
    release = hold_lock(holder, 0.2)
    started = time.monotonic()
    conn.cursor(factory=Cursor).execute(statement)  # SQLite's own timeout is 0: this would fail at once
    waited = time.monotonic() - started
    release.join()
    assert 0.15 <= waited < 1.0
    if conn.in_transaction:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_still_locked_after_the_timeout_is_database_is_locked(database):
    path, holder = database
    conn = waiter(path, lock_wait_s=0.3)
    release = hold_lock(holder, 1.5)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.cursor(factory=Cursor).execute("BEGIN IMMEDIATE")
    assert 0.3 <= time.monotonic() - started < 1.5
    release.join()


def test_inside_a_transaction_nothing_is_retried(database):
    path, holder = database
    conn = waiter(path, lock_wait_s=10)
    conn.execute("BEGIN")  # deferred: holds no write lock yet
    conn.execute("SELECT count(*) FROM t").fetchone()
    release = hold_lock(holder, 0.5)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError):
        conn.cursor(factory=Cursor).execute("INSERT INTO t VALUES (1)")
    assert time.monotonic() - started < 0.3  # answered at once, not waited for
    conn.execute("ROLLBACK")
    release.join()


def test_django_uses_it_on_sqlite(db):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    connection.ensure_connection()
    assert isinstance(connection.connection, Connection)
    assert connection.connection.lock_wait_s >= 5
