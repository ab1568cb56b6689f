"""Faults with real processes (issue 17): a worker killed with `kill -9` of its whole process
group at a chosen point of the submission (tests/fault_broker.py), a retry shorter than the
broker call, then a fresh cluster. Each order reaches the broker at most once and ends adopted
or terminal, never re-sent. (The orderwatcher, database and web-server faults are in
test_faults_services.py; the soak with random kills in test_soak.py.)"""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from brokers.models import PaperOrder
from orders.models import EventKind, Order, Status
from orders.watcher import OrderWatcher
from tests.processes import audit_trail, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("paper_instruments", "trading_day_began_an_hour_ago")]

FAULTY = "tests.fault_broker.FaultBroker"


def kill_group(cluster) -> None:
    """kill -9 of the whole group: django-q2's workers outlive a killed sentinel otherwise."""
    os.killpg(cluster.proc.pid, signal.SIGKILL)
    cluster.proc.wait(timeout=10)


def claimed(command_id: str) -> bool:
    return Order.objects.filter(command_id=command_id, status=Status.SENT_TO_BROKER).exists()


def booked(command_id: str) -> bool:
    return PaperOrder.objects.filter(client_order_id=command_id).exists()


def id_stored(command_id: str) -> bool:
    return Order.objects.filter(command_id=command_id, broker_order_id__isnull=False).exists()


# (fault switch, the moment of the kill, the end state, broker orders)
KILL_POINTS = {
    "after the claim, before the broker call": ("hang_before_booking", claimed, Status.FAILED, 0),
    "in the broker call, after the booking": ("hang_after_booking", booked, Status.EXECUTED, 1),
    "after the broker id was stored": ("", id_stored, Status.EXECUTED, 1),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_worker_killed_at_any_point_of_the_submission_never_sends_twice(
        cluster, strategy, alert_body, post_alert, settings, point):
    fault, moment, end_state, broker_orders = KILL_POINTS[point]
    # Built first: this process then enqueues into the cluster's own queue.
    faulty = cluster(ORDERDESK_BROKER=FAULTY, ORDERDESK_FAULT_PLACE=fault)
    [reply] = post_alert(alert_body(alert_id="kill-in-the-call")).json()["orders"]
    command_id = reply["command_id"]
    faulty.start()
    wait_until(lambda: moment(command_id), 60, point)
    kill_group(faulty)
    order = Order.objects.get(command_id=command_id)
    if moment is not id_stored:
        assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, None)  # in doubt: no answer stored

    # The watcher (here in this process, for a deterministic test) resolves it from the book
    # once the in-doubt wait is over: adopted if the broker has it, else failed as unknown
    # after enough good reads of a book without it. Nothing is sent again.
    settings.IN_DOUBT_GRACE_S = 0
    Order.objects.filter(pk=order.pk).update(sent_at=timezone.now() - timedelta(seconds=60))
    watcher = OrderWatcher()
    wait_until(lambda: watcher.poll_once() and Order.objects.get(pk=order.pk).status == end_state, 30,
               f"the order {end_state} ({audit_trail(Order.objects.get(pk=order.pk))})")
    # A fresh cluster: django-q2 redelivers the killed task after its retry (6 s here); it finds
    # the order claimed or finished and does nothing.
    healthy = cluster(ORDERDESK_Q_TIMEOUT="5", ORDERDESK_Q_RETRY="6")
    healthy.start()
    time.sleep(12)
    order.refresh_from_db()
    assert order.status == end_state
    assert PaperOrder.objects.filter(client_order_id=command_id).count() == broker_orders
    assert order.events.filter(kind=EventKind.CLAIMED).count() == 1
    if fault == "hang_after_booking":
        assert order.events.filter(kind=EventKind.BROKER_ID_ADOPTED).exists()
        assert order.broker_order_id == PaperOrder.objects.get(client_order_id=command_id).broker_order_id
    if fault == "hang_before_booking":
        assert order.tag.startswith("BROKER_UNKNOWN:")


def test_a_retry_shorter_than_the_broker_call_runs_the_task_again_and_sends_nothing_more(
        cluster, strategy, alert_body, post_alert):
    """django-q2 hands the task to another worker while the first is still in the broker call
    (retry 2 s, the call 6 s): the second run finds the order claimed."""
    slow = cluster(ORDERDESK_BROKER=FAULTY, ORDERDESK_FAULT_PLACE="slow", ORDERDESK_FAULT_SLEEP_S="6",
                   ORDERDESK_Q_TIMEOUT="30", ORDERDESK_Q_RETRY="2", ORDERDESK_Q_WORKERS="3")
    [reply] = post_alert(alert_body(alert_id="slow-call")).json()["orders"]
    command_id = reply["command_id"]
    slow.start()
    wait_until(lambda: Order.objects.get(command_id=command_id).status == Status.EXECUTED, 60,
               f"the order EXECUTED ({audit_trail(Order.objects.get(command_id=command_id))})")
    reruns = [line for line in slow.output().splitlines() if f"order {command_id} is SENT_TO_BROKER, not claim" in line]
    assert reruns, slow.output()[-3000:]  # the task really ran again while the call ran
    order = Order.objects.get(command_id=command_id)
    assert PaperOrder.objects.filter(client_order_id=command_id).count() == 1
    assert order.events.filter(kind=EventKind.CLAIMED).count() == 1
