"""Django's SQLite back end, waiting for the write lock in short, even steps.

SQLite admits one writer at a time. A connection that finds the write lock taken calls
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms
between attempts. Under `manage.py up` (web threads, django-q2's pusher and monitor, the
workers and the watcher all writing) every waiter soon sleeps 25-100 ms at a time while the
lock, held for a few milliseconds per transaction, is taken by whoever happens to be awake:
measured with benchmarks/flow.py (8 clients, SQLite, same run, noisy 2-core machine), the
webhook's p99 was 860-960 ms (p99/p50 24-64x, max 1.6-2.7 s) with SQLite's handler and
286-476 ms (p99/p50 5-6x, max 0.5-0.8 s) with the steps below, at about the same accepted
alerts/s. Python's sqlite3 has no busy-handler hook, so SQLite's own busy timeout is 0 here
and this module tries again, after LOCK_POLL_S doubling up to LOCK_POLL_MAX_S, for as long as
OPTIONS["timeout"] (its meaning unchanged: the longest wait before "database is locked").

Retried, and only these, because a busy answer to them has changed nothing:
- BEGIN IMMEDIATE, the start of every transaction.atomic block (nothing has run yet);
- a statement in autocommit mode outside any transaction, as django-q2's queue writes are
  (its implicit transaction could not start, so nothing was written);
- the init commands of a new connection.
Nothing inside an open transaction is retried: it already holds the write lock.
"""

import time

from django.db.backends.sqlite3 import base

SQLITE_BUSY = 5  # primary result code; the extended BUSY_* codes share it in their low byte
LOCK_POLL_S = 0.001
LOCK_POLL_MAX_S = 0.002


def _busy(exc: Exception) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == SQLITE_BUSY


class Connection(base.Database.Connection):
    lock_wait_s = 5.0  # set from OPTIONS["timeout"] for each new connection

    def retry_busy(self, fn, *args):
        try:
            return fn(*args)
        except base.Database.OperationalError as exc:
            if not _busy(exc):
                raise
        deadline = time.monotonic() + self.lock_wait_s
        delay = LOCK_POLL_S
        while True:
            time.sleep(delay)
            try:
                return fn(*args)
            except base.Database.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            delay = min(delay * 2, LOCK_POLL_MAX_S)


class Cursor(base.SQLiteCursorWrapper):
    def _retryable(self) -> bool:
        # isolation_level None: Django's autocommit mode (sqlite3 adds no implicit BEGIN).
        return self.connection.isolation_level is None and not self.connection.in_transaction

    def execute(self, query, params=None):
        if self._retryable():
            return self.connection.retry_busy(super().execute, query, params)
        return super().execute(query, params)

    def executemany(self, query, param_list):
        if self._retryable():
            param_list = list(param_list)  # a failed attempt must not have consumed it
            return self.connection.retry_busy(super().executemany, query, param_list)
        return super().executemany(query, param_list)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        self._lock_wait_s = float(params.get("timeout", Connection.lock_wait_s))
        params["timeout"] = 0  # SQLite's busy handler off: Connection.retry_busy waits instead
        params["factory"] = Connection
        return params

    def get_new_connection(self, conn_params):
        # Django's own, with each statement retried while the database is busy.
        conn = base.Database.connect(**conn_params)
        conn.lock_wait_s = self._lock_wait_s
        base.register_functions(conn)
        conn.retry_busy(conn.execute, "PRAGMA foreign_keys = ON")
        conn.retry_busy(conn.execute, "PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                conn.retry_busy(conn.execute, init_command)
        return conn

    def create_cursor(self, name=None):
        return self.connection.cursor(factory=Cursor)
