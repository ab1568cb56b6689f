"""Enqueueing work for the django-q2 cluster.

With the ORM broker the queue is a table in our own database, so a submission is enqueued
inside the intake transaction: it commits (or rolls back) with the orders, in one commit.
With Redis it is pushed on commit, so a worker never sees an order that does not exist yet.
"""

from django.db import transaction
from django_q.conf import Conf
from django_q.tasks import async_task

SUBMIT_TASK = "orders.tasks.submit_order"
WATCH_TASK = "orders.tasks.watch_orders"


def queue_in_database() -> bool:
    return bool(Conf.ORM)


def _push_submissions(command_ids: list[str]) -> None:
    for command_id in command_ids:
        async_task(SUBMIT_TASK, command_id, task_name=f"submit {command_id}")


def enqueue_submissions(command_ids: list[str]) -> None:
    if not command_ids:
        return
    if queue_in_database():
        _push_submissions(command_ids)
    else:
        transaction.on_commit(lambda: _push_submissions(command_ids))


def enqueue_watcher() -> None:
    async_task(WATCH_TASK, task_name="orderwatcher")
