"""Django's SQLite back end, with writers queued in the kernel instead of SQLite's sleeps.

SQLite admits one writer at a time. A connection that finds the write lock taken calls
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms
between attempts, so under `manage.py up` (web threads, django-q2's pusher and monitor, the
workers and the watcher all writing) the lock, held a millisecond or two per transaction,
often sat free while every waiter slept: measured with benchmarks/flow.py (8 clients), the
webhook's p99 was 0.9-1.9 s. Polling for it in 1-2 ms steps instead cut that to 0.3-0.5 s
but burnt the CPU the holder needed (18 ms of CPU per alert across the stack, two thirds
of it waiting). Here every writer first takes an exclusive flock() on a file beside the
database (`<name>-writer`), which the kernel hands to the next waiter the moment the holder
lets go, without polling; the holder then meets no contention at BEGIN IMMEDIATE. Writers
are served in the order they asked (WriterQueue: a ticket each), not to whichever runs first.

Who takes it: BEGIN IMMEDIATE (every transaction.atomic block) until its COMMIT or ROLLBACK,
and a statement other than a SELECT or PRAGMA run outside any transaction (django-q2's queue writes,
single updates), for that statement. Reads never wait: WAL readers need no lock. One flock
per connection (one open file each), so the threads of a process queue like processes do,
and a process that dies lets go with it. SQLite's own busy timeout stays as the backstop for
writers outside this back end (a sqlite3 shell, another program).
"""

import fcntl
import os
import struct

from django.db.backends.sqlite3 import base

# Reads, and PRAGMAs: the watcher's wal_checkpoint(PASSIVE) needs no write lock and, held in
# the queue, kept every writer waiting for the checkpoint's I/O (61 ms p50 measured).
_NOT_QUEUED = ("SELECT", "PRAGMA")


# Tickets: a counter (the file's first 8 bytes, under a flock of that file) and one lock of
# a byte per ticket, modulo SLOTS (Linux open-file-description locks: per connection, as
# flock, and released when the process dies). SLOTS must exceed the connections that can
# wait at once (each has at most one ticket), or a ticket could wait on its own successor.
_SLOTS = 4096
_OFD = hasattr(fcntl, "F_OFD_SETLKW")


def _byte_lock(fd: int, offset: int, kind: int) -> None:
    # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (0 for an OFD lock).
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0))


class WriterQueue:
    """The writer lock of one connection: an exclusive flock() on `<database>-writer`, taken in
    the order writers asked for it. flock() alone hands a lock just let go to whichever
    waiter the kernel runs first, or to the writer that let go if it asks again at once:
    under benchmarks/flow.py an intake's wait for it was 3 ms at the median and 75 ms at the
    p99. So a writer first takes a ticket (`<database>-writer-tickets`) and waits until the
    writer before it has let go. The flock still admits one writer at a time (a process
    without tickets simply competes for it)."""

    def __init__(self, database_path: str):
        self.fd = os.open(f"{database_path}-writer", os.O_RDWR | os.O_CREAT, 0o600)
        self.tickets = os.open(f"{database_path}-writer-tickets", os.O_RDWR | os.O_CREAT, 0o600) if _OFD else None
        self.held = False
        self.ticket = None

    def acquire(self) -> bool:
        """Whether this call took it (False: this connection already holds it)."""
        if self.held:
            return False
        try:
            if self.tickets is not None:
                self._wait_turn()
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks in the kernel; the GIL is released
        except BaseException:  # a task's timeout raised mid-wait: the writers after us go on
            self._hand_on()
            raise
        self.held = True
        return True

    def _wait_turn(self) -> None:
        fcntl.flock(self.tickets, fcntl.LOCK_EX)
        try:
            raw = os.pread(self.tickets, 8, 0)
            ticket = int.from_bytes(raw, "little") if len(raw) == 8 else 0
            os.pwrite(self.tickets, (ticket + 1).to_bytes(8, "little"), 0)
            # Ours until we let the writer lock go: the next ticket waits on it.
            _byte_lock(self.tickets, 8 + ticket % _SLOTS, fcntl.F_WRLCK)
            self.ticket = ticket
        finally:
            fcntl.flock(self.tickets, fcntl.LOCK_UN)
        previous = 8 + (ticket - 1) % _SLOTS
        _byte_lock(self.tickets, previous, fcntl.F_WRLCK)  # free once the writer before us let go
        _byte_lock(self.tickets, previous, fcntl.F_UNLCK)

    def _hand_on(self) -> None:
        if self.ticket is not None:
            _byte_lock(self.tickets, 8 + self.ticket % _SLOTS, fcntl.F_UNLCK)
            self.ticket = None

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self._hand_on()  # after the flock: the next writer then finds it free

    def close(self) -> None:
        self.release()
        os.close(self.fd)
        if self.tickets is not None:
            os.close(self.tickets)


class Cursor(base.SQLiteCursorWrapper):
    def execute(self, query, params=None):
        return self._queued(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._queued(super().executemany, query, param_list)

    def _queued(self, run, query, params):
        queue = self._queue_for(query)
        taken = queue is not None and queue.acquire()
        try:
            return run(query, params)
        finally:
            if taken:
                queue.release()

    def _queue_for(self, query: str) -> WriterQueue | None:
        """The writer queue when this statement writes on its own (autocommit, outside any
        transaction); None inside a transaction (BEGIN took it) and for reads."""
        queue = getattr(self.connection, "writer_queue", None)
        if queue is None or self.connection.in_transaction or query.lstrip()[:6].upper() in _NOT_QUEUED:
            return None
        return queue


class Connection(base.Database.Connection):
    writer_queue: WriterQueue | None = None


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        params["factory"] = Connection
        return params

    def get_new_connection(self, conn_params):
        conn = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            conn.writer_queue = WriterQueue(self.settings_dict["NAME"])
        return conn

    def create_cursor(self, name=None):
        return self.connection.cursor(factory=Cursor)

    def _start_transaction_under_autocommit(self):
        queue = getattr(self.connection, "writer_queue", None)
        if queue is None:
            return super()._start_transaction_under_autocommit()
        queue.acquire()
        try:
            # BEGIN runs through Cursor, which finds the queue held and leaves it so.
            super()._start_transaction_under_autocommit()
        except BaseException:
            queue.release()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer()

    def _close(self):
        queue = getattr(self.connection, "writer_queue", None)
        try:
            return super()._close()
        finally:
            if queue is not None:
                queue.close()

    def _release_writer(self):
        queue = getattr(self.connection, "writer_queue", None)
        if queue is not None and not self.connection.in_transaction:
            queue.release()
