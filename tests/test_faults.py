"""Faults with real processes: a worker killed with `kill -9` of its whole process group at a
chosen point of the broker call (tests/fault_broker.py), then a fresh cluster. The order is sent
to the broker at most once and ends adopted or terminal, never re-sent. (Issue 17's matrix
starts here; its other cases are still to come.)"""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from brokers.models import PaperOrder
from orders.models import EventKind, Order, Status
from orders.watcher import OrderWatcher
from tests.processes import audit_trail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]

FAULTY = "tests.fault_broker.FaultBroker"


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"not within {timeout_s}s: {what}")


def kill_group(cluster) -> None:
    """kill -9 of the whole group: django-q2's workers outlive a killed sentinel otherwise."""
    os.killpg(cluster.proc.pid, signal.SIGKILL)
    cluster.proc.wait(timeout=10)


def test_a_worker_killed_in_the_broker_call_after_the_booking_is_adopted_never_resent(
        cluster, strategy, alert_body, post_alert):
    """The broker booked the order; the worker died before its answer was stored."""
    # Built first: this process then enqueues into the cluster's own queue.
    faulty = cluster(ORDERDESK_BROKER=FAULTY, ORDERDESK_FAULT_PLACE="hang_after_booking")
    [reply] = post_alert(alert_body(alert_id="kill-in-the-call")).json()["orders"]
    command_id = reply["command_id"]
    faulty.start()
    wait_until(lambda: PaperOrder.objects.filter(client_order_id=command_id).exists(), 60, "the booking")
    kill_group(faulty)
    order = Order.objects.get(command_id=command_id)
    assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, None)  # in doubt: no answer stored

    # The watcher (here in this process, for a deterministic test) adopts it from the book once
    # the in-doubt wait is over; nothing is sent again.
    Order.objects.filter(pk=order.pk).update(sent_at=timezone.now() - timedelta(seconds=60))
    watcher = OrderWatcher()
    wait_until(lambda: watcher.poll_once() and Order.objects.get(pk=order.pk).status == Status.EXECUTED, 30,
               f"the order EXECUTED ({audit_trail(Order.objects.get(pk=order.pk))})")
    # A fresh cluster: django-q2 redelivers the killed task after its retry (6 s here); it finds
    # the order claimed and does nothing.
    healthy = cluster(ORDERDESK_Q_TIMEOUT="5", ORDERDESK_Q_RETRY="6")
    healthy.start()
    time.sleep(12)
    order.refresh_from_db()
    [paper] = PaperOrder.objects.filter(client_order_id=command_id)  # one broker order
    assert order.events.filter(kind=EventKind.CLAIMED).count() == 1
    assert order.events.filter(kind=EventKind.BROKER_ID_ADOPTED).exists()
    assert order.broker_order_id == paper.broker_order_id
