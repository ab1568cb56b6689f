"""Cancelling orders (a user's request, the broker's cancel, the cancel that waits for an
in-doubt order's broker id).

The order ends only through the lifecycle: a queued order fails at once, by a
compare-and-set the worker's claim then loses; one at the broker ends when the broker
reports it CANCELED, on the feed or in the book, with whatever was filled before. No broker
I/O here but in `send_cancel`, which a django-q2 worker runs.
"""

import logging

from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from brokers.base import RequestOutcome, RequestResult
from brokers.registry import get_broker

from . import broker_rate, events, lifecycle
from .models import TERMINAL_STATUSES, EventKind, Order, Status
from .queue import enqueue_cancel

log = logging.getLogger("orderdesk.cancels")

ACTOR = "worker"
CANCELLED, REQUESTED, WAITING = "cancelled", "requested", "waiting_for_broker_id"
ATTEMPTS = 3  # the order moved under the request (claimed, its broker id stored): read it again


class NotCancellable(Exception):
    def __init__(self, order: Order, reason: str):
        super().__init__(reason)
        self.order = order


def request_cancel(order: Order, actor: str) -> str:
    """Cancel one order for `actor` (`api:<user>`, `admin:<user>`). Returns what happened:
    `cancelled` (it was still queued: FAILED now, never sent), `requested` (a worker asks the
    broker), `waiting_for_broker_id` (sent once the broker's id of an in-doubt order is known).
    Raises NotCancellable for an order that has ended."""
    for _ in range(ATTEMPTS):
        if order.status in TERMINAL_STATUSES:
            raise NotCancellable(order, f"order {order.command_id} is {order.status}: nothing to cancel")
        if order.status == Status.CREATED:
            if lifecycle.move(order, Status.FAILED, tag=f"CANCELLED:not sent, by {actor}", actor=actor,
                              kind=EventKind.CANCEL_REQUESTED, detail="cancelled before a worker claimed it"):
                return CANCELLED
        else:
            known = order.broker_order_id is not None
            if lifecycle.annotate(order, kind=EventKind.CANCEL_REQUESTED, actor=actor,
                                  cancel_requested_at=timezone.now(),
                                  detail="to the broker" if known else "to the broker once it has the order's id"):
                if known:
                    enqueue_cancel(order.command_id)
                return REQUESTED if known else WAITING
        order = Order.objects.get(pk=order.pk)
    raise NotCancellable(order, f"order {order.command_id} kept changing; try again")


def open_orders(strategy: str | None = None, symbol: str | None = None):
    orders = Order.objects.all()
    if strategy:
        orders = orders.filter(strategy__name=strategy)
    if symbol:
        orders = orders.filter(symbol__iexact=symbol)
    return orders


def cancel_each(orders, actor: str) -> list[tuple[Order, str]]:
    """Cancel every open order of a queryset, each in its own transaction; (the order as it
    now is, the outcome) for each one acted on. Orders that ended meanwhile are passed over."""
    acted = []
    for order in orders.filter(status__in=[Status.CREATED, Status.SENT_TO_BROKER]).order_by("id"):
        try:
            with transaction.atomic():
                outcome = request_cancel(order, actor)
        except NotCancellable:
            continue
        order.refresh_from_db()
        acted.append((order, outcome))
    return acted


def send_cancel(command_id: str) -> str:
    """The worker's part: one CancelOrder for an order at the broker, its answer recorded."""
    order = Order.objects.filter(command_id=command_id).first()
    if order is None or order.status != Status.SENT_TO_BROKER:
        return "not open"
    if order.broker_order_id is None:
        return "waiting for the broker id"
    broker_rate.take_slot(urgent=True, what=f"cancel {command_id}")  # cancels go before new entries
    try:
        result = get_broker().cancel(order.broker_order_id)
    except Exception as exc:  # noqa: BLE001 - the book or the feed tells what became of it
        log.exception("order %s: cancel failed", command_id)
        result = RequestResult(RequestOutcome.IN_DOUBT, f"{type(exc).__name__}: {exc}"[:200])
    if result.outcome == RequestOutcome.REFUSED:
        kind, detail = EventKind.CANCEL_REFUSED, result.message or "refused"
        log.warning("order %s: the broker refused the cancel: %s", command_id, detail)
    else:
        kind = EventKind.CANCEL_SENT
        detail = "the broker took it" if result.outcome == RequestOutcome.SENT else f"no definite answer: {result.message}"
    if not lifecycle.annotate(order, kind=kind, actor=ACTOR, detail=detail):
        log.info("order %s changed while its cancel was sent (%s)", command_id, detail)
    return result.outcome.value.lower()


@receiver(events.order_event)
def _send_waiting_cancel(sender, order: Order, event, **kwargs):
    """A cancel asked for before the broker's id was known goes out once it is (the worker's
    late reply, or the id adopted from the book or the feed)."""
    if (event.kind in (EventKind.BROKER_ACCEPTED, EventKind.BROKER_ID_ADOPTED) and order.cancel_requested_at
            and order.status == Status.SENT_TO_BROKER):
        enqueue_cancel(order.command_id)
