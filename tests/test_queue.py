"""orders.queue.DatabaseQueue: django-q2's ORM queue with one claim for several tasks and one
DELETE to acknowledge, on whichever database the suite runs (SQLite or PostgreSQL)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ

from orders import queue
from orders.queue import DatabaseQueue


def waiting_tasks(n: int) -> list[int]:
    now = timezone.now()
    rows = OrmQ.objects.bulk_create(
        OrmQ(key=Conf.CLUSTER_NAME, payload=f"task-{i}", lock=now - timedelta(seconds=1)) for i in range(n))
    return [row.pk for row in rows]


@pytest.fixture
def bulk(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "POLL", 0.001)
    return 3


@pytest.mark.django_db
def test_the_cluster_and_the_intake_use_it_and_it_is_the_queue_in_our_database():
    assert isinstance(get_broker(), DatabaseQueue)
    assert queue.queue_in_database()


@pytest.mark.django_db
def test_a_claim_takes_the_oldest_waiting_tasks_up_to_bulk_in_one_statement(bulk):
    ids = waiting_tasks(5)
    broker = get_broker()

    with CaptureQueriesContext(connection) as captured:
        first = broker.dequeue()
    writes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(("UPDATE", "SELECT", "DELETE"))]
    assert len(writes) == 1 and writes[0].startswith("UPDATE"), writes
    assert first == [(pk, f"task-{i}") for i, pk in enumerate(ids[:3])]
    assert broker.dequeue() == [(pk, f"task-{i + 3}") for i, pk in enumerate(ids[3:])]
    assert broker.dequeue() is None  # every task locked: nothing until the retry delay passes
    # A claimed task is locked for the retry delay, as django-q2's own ORM broker does.
    lock = OrmQ.objects.get(pk=ids[0]).lock
    assert timedelta(seconds=Conf.RETRY - 5) < lock - timezone.now() <= timedelta(seconds=Conf.RETRY)


@pytest.mark.django_db
def test_a_task_whose_worker_never_acknowledged_it_is_delivered_again_after_the_retry_delay(bulk):
    [pk] = waiting_tasks(1)
    broker = get_broker()
    assert broker.dequeue() == [(pk, "task-0")]
    assert broker.dequeue() is None

    OrmQ.objects.filter(pk=pk).update(lock=timezone.now() - timedelta(seconds=1))  # the delay has passed
    assert broker.dequeue() == [(pk, "task-0")]


@pytest.mark.django_db
def test_tasks_of_another_cluster_are_left_alone(bulk):
    OrmQ.objects.create(key="another-cluster", payload="theirs", lock=timezone.now() - timedelta(seconds=1))
    [pk] = waiting_tasks(1)

    assert get_broker().dequeue() == [(pk, "task-0")]
    assert get_broker().dequeue() is None
    assert OrmQ.objects.get(key="another-cluster").lock < timezone.now()


@pytest.mark.django_db
def test_acknowledging_a_task_deletes_its_row_and_only_its_row(bulk):
    ids = waiting_tasks(2)
    broker = get_broker()
    broker.acknowledge(ids[0])

    assert list(OrmQ.objects.values_list("pk", flat=True)) == [ids[1]]
    broker.fail(ids[1])  # a task that cannot be decoded is dropped the same way
    assert not OrmQ.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_clusters_claiming_at_once_never_take_the_same_task(bulk):
    ids = waiting_tasks(60)
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def pusher():
        broker = DatabaseQueue(list_key=Conf.PREFIX)
        try:
            start.wait()
            # A claim that lost every row to another cluster's returns nothing: go on until
            # no task is left waiting, as a pusher does.
            while (batch := broker.dequeue()) or OrmQ.objects.filter(lock__lt=timezone.now()).exists():
                claimed.extend(pk for pk, _ in batch or ())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=pusher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not errors, errors
    assert sorted(claimed) == ids  # every task once, none twice
