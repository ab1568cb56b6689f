"""Enqueueing work for the django-q2 cluster.

With the ORM broker on our own database the queue is a table next to the orders, so a
submission is enqueued inside the intake transaction: it commits (or rolls back) with the
orders, in one commit. With any other broker (Redis) it is pushed on commit, so a worker
never sees an order that does not exist yet; a push that fails after the commit is logged
and left to the OrderWatcher, which re-enqueues CREATED orders whose task never ran.
"""

import logging
import threading
from datetime import timedelta
from functools import cache, cached_property
from time import sleep

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from orderdesk import statements

log = logging.getLogger("orderdesk.queue")

SUBMIT_TASK = "orders.tasks.submit_order"
WATCH_TASK = "orders.tasks.watch_orders"
DELIVER_TASK = "orders.tasks.deliver_notifications"
CANCEL_TASK = "orders.tasks.cancel_order"
MODIFY_TASK = "orders.tasks.modify_order"


class DatabaseQueue(ORM):
    """django-q2's ORM broker (the queue as a table in our database) with its two statements
    per task written once, and the claim made for up to `bulk` tasks at a time.

    ORM.dequeue reads the waiting rows, then locks each with an UPDATE of its own, and
    ORM.acknowledge deletes through the ORM's collector; the ORM compiles all three anew for
    every task. Under benchmarks/flow.py's load on SQLite (2026-12-02, py-spy) the pusher's
    dequeue and the monitor's acknowledgement were 30 % of the cluster's Python, and each of
    the two is a turn of SQLite's one write lock per task. Here one UPDATE ... RETURNING
    claims the oldest waiting tasks (a claim still sets `lock` to now + retry only where it
    is in the past, so two clusters never take the same row), and one DELETE acknowledges."""

    @cached_property
    def _sql(self) -> tuple[str, str]:
        """(the claim, the acknowledgement), written once for the queue's database."""
        quote = connections[Conf.ORM].ops.quote_name
        table, lock, key = quote(OrmQ._meta.db_table), quote("lock"), quote("key")
        claim = (f"UPDATE {table} SET {lock} = %s WHERE {lock} < %s AND id IN "
                 f"(SELECT id FROM {table} WHERE {key} = %s AND {lock} < %s ORDER BY id LIMIT %s) "
                 "RETURNING id, payload")
        return claim, f"DELETE FROM {table} WHERE id = %s"

    def _connection(self):
        connection = connections[Conf.ORM]
        if connection.get_autocommit():
            close_old_connections()  # as ORM.get_connection: a long-lived pusher or monitor
        return connection

    def dequeue(self):
        connection = self._connection()
        now = timezone.now()
        field = OrmQ._meta.get_field("lock")
        now_db = field.get_db_prep_value(now, connection)
        until = field.get_db_prep_value(now + timedelta(seconds=Conf.RETRY), connection)
        # A transaction of its own: SQLite ends an autocommit statement's write only once its
        # RETURNING rows are read, after the writer queue would have let the next writer in.
        with transaction.atomic(using=Conf.ORM), connection.cursor() as cursor:
            cursor.execute(self._sql[0], [until, now_db, self.list_key, now_db, Conf.BULK])
            tasks = sorted(cursor.fetchall())
        if tasks:
            return tasks
        sleep(Conf.POLL)  # empty queue, spare the CPU (as ORM.dequeue)

    def delete(self, task_id):
        with self._connection().cursor() as cursor:
            cursor.execute(self._sql[1], [task_id])


DATABASE_QUEUE = f"{DatabaseQueue.__module__}.{DatabaseQueue.__qualname__}"  # as Q_CLUSTER["broker_class"] names it


def queue_in_database(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether async_task writes to the ORM queue table on the database alias `using` (and so
    joins a transaction open there). Mirrors the broker choice of django_q.brokers.get_broker:
    a custom, IronMQ or SQS broker wins over `orm` (ours, DatabaseQueue, is the ORM queue),
    and an ORM queue on another alias is outside our transaction."""
    if Conf.BROKER_CLASS and Conf.BROKER_CLASS != DATABASE_QUEUE or Conf.IRON_MQ or isinstance(Conf.SQS, dict):
        return False
    return bool(Conf.ORM) and Conf.ORM == using


_brokers: dict[tuple, Broker] = {}


def _broker() -> Broker | None:
    """The django-q2 broker to push to, one per process for a queue outside the database.
    async_task without one builds a new broker per call, and for Redis that is a new
    connection pool, so a TCP connect and handshake in every webhook request (measured under
    `manage.py up`: a fifth of a web worker's time). redis-py's pool is thread-safe and
    reconnects after a fork. None (async_task's own default) for the ORM queue, whose broker
    holds nothing but uses the caller's database connection. Keyed by the settings that
    choose the broker, which tests change at run time."""
    if queue_in_database():
        return None
    key = (Conf.BROKER_CLASS, Conf.IRON_MQ, repr(Conf.SQS), repr(Conf.REDIS), Conf.ORM, Conf.CLUSTER_NAME)
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = get_broker()
    return broker


def _push_submissions(command_ids: list[str]) -> None:
    """Runs after the commit on a non-database queue. The orders are already registered and
    the intake has answered for them, so a broker error must not turn into an error of the
    request (a client retry without alert_id would register the orders twice): log it and let
    the watcher's lost-task re-enqueue pick them up (the submission claim makes that safe)."""
    for command_id in command_ids:
        try:
            async_task(SUBMIT_TASK, command_id, task_name=f"submit {command_id}", broker=_broker())
        except Exception:  # noqa: BLE001 - see above
            log.exception("could not enqueue submission of order %s; the watcher will re-enqueue it", command_id)


class _Packing(Broker):
    """async_task's broker for a task built ahead of the transaction that sends it: it keeps
    the signed package (this thread's) instead of sending it."""

    def __init__(self):
        super().__init__(Conf.CLUSTER_NAME)
        self._local = threading.local()

    def enqueue(self, task):
        self._local.package = task
        return "prepared"

    def pack(self, func: str, arg, name: str) -> str:
        async_task(func, arg, task_name=name, broker=self)
        return self._local.package


@cache
def _packing() -> _Packing:
    return _Packing()


def _submission(command_id: str) -> str:
    return _packing().pack(SUBMIT_TASK, command_id, f"submit {command_id}")


class Submissions:
    """The submission tasks of an intake's orders. On the ORM queue each task is built and
    signed when this is made, before the intake's transaction, and only its row is written
    inside it, all in one INSERT: on SQLite that transaction holds the one write lock, and
    async_task under it was a fifth of the time it held (0.21 of 0.96 ms, from
    benchmarks/intake.py --breakdown and the writer queue timed). On any other queue they are
    pushed on commit."""

    def __init__(self, command_ids: list[str]):
        self._packages = {cid: _submission(cid) for cid in command_ids} if queue_in_database() else {}

    def enqueue(self, command_ids: list[str]) -> None:
        if not command_ids:
            return
        command_ids = list(command_ids)
        if not queue_in_database():
            transaction.on_commit(lambda: _push_submissions(command_ids))
            return
        # The row django-q2's ORM broker writes (ORM.enqueue: key, payload, lock = now), in the
        # caller's transaction: an error here rolls the intake back, nothing is lost.
        now = timezone.now()
        packages = [self._packages.get(cid) or _submission(cid) for cid in command_ids]
        statements.insert(*(OrmQ(key=Conf.CLUSTER_NAME, payload=package, lock=now) for package in packages))


def enqueue_submissions(command_ids: list[str]) -> None:
    Submissions([]).enqueue(command_ids)


def tasks_waiting() -> int:
    """Tasks in the queue that no worker has taken yet (ORM or Redis broker alike)."""
    return (_broker() or get_broker()).queue_size()


def enqueue_watcher() -> None:
    async_task(WATCH_TASK, task_name="orderwatcher", broker=_broker())


def enqueue_delivery() -> None:
    """A task that sends the due notifications (orders.notify)."""
    async_task(DELIVER_TASK, task_name="notifications", broker=_broker())


def _enqueue_request(func: str, arg, name: str) -> None:
    """A cancel's or a modification's broker call, for a worker: like a submission, in the
    caller's transaction on the ORM queue, after its commit otherwise."""
    def push():
        try:
            async_task(func, arg, task_name=name, broker=_broker())
        except Exception:  # noqa: BLE001 - the request is recorded; asking again re-enqueues it
            log.exception("could not enqueue %s", name)

    if queue_in_database():
        async_task(func, arg, task_name=name)
    else:
        transaction.on_commit(push)


def enqueue_cancel(command_id: str) -> None:
    _enqueue_request(CANCEL_TASK, command_id, f"cancel {command_id}")


def enqueue_modify(modification_id: int) -> None:
    _enqueue_request(MODIFY_TASK, modification_id, f"modify {modification_id}")
