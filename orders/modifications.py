"""Modifying an open order: a new price, trigger price or quantity (Noren's ModifyOrder).

The order's own details stay as registered; each request is an OrderModification row (what
was asked, by whom, the broker's answer), and the order's working terms (working_qty,
working_price, working_trigger_price, written by the lifecycle) follow the modifications the
broker took. The guard's exposure, the `filled f/q` suffix and EXECUTED use the working
quantity. No broker I/O here but in `send_modify`, which a django-q2 worker runs.
"""

import logging

from django.utils import timezone

from brokers import instruments
from brokers.base import ModifyRequest, RequestOutcome, RequestResult
from brokers.registry import get_broker

from . import broker_rate, lifecycle
from .blocker_registry import modification_check
from .models import TERMINAL_STATUSES, EventKind, Order, OrderModification, OrderType, Status
from .queue import enqueue_modify

log = logging.getLogger("orderdesk.modifications")

ACTOR = "worker"
PRICED = {OrderType.LIMIT, OrderType.SL}
TRIGGERED = {OrderType.SL, OrderType.SL_M}


class NotModifiable(Exception):
    def __init__(self, message: str, conflict: bool = False):
        super().__init__(message)
        self.conflict = conflict  # the order's state (409) rather than the request (400)


def request_modify(order: Order, actor: str, *, qty: int | None = None, price=None,
                   trigger_price=None) -> OrderModification:
    """Record a modification of an open order and queue its broker call. Raises NotModifiable."""
    if order.status in TERMINAL_STATUSES:
        raise NotModifiable(f"order {order.command_id} is {order.status}: nothing to modify", conflict=True)
    if order.status != Status.SENT_TO_BROKER or order.broker_order_id is None:
        raise NotModifiable(f"order {order.command_id} is not at the broker yet (or in doubt): cancel it instead",
                            conflict=True)
    protected = order.order_type == OrderType.MARKET and order.working_price is not None  # sent as a LIMIT
    if order.order_type == OrderType.MARKET and not protected:
        raise NotModifiable("a MARKET order has no price to change, and goes at once")
    if price is not None and order.order_type not in PRICED and not protected:
        raise NotModifiable(f"an {order.order_type} order has no limit price (give trigger_price or qty)")
    if trigger_price is not None and order.order_type not in TRIGGERED:
        raise NotModifiable(f"a {order.order_type} order has no trigger price")
    if qty is not None and qty <= order.filled_qty:
        raise NotModifiable(f"qty {qty} must be above the {order.filled_qty} already filled (it is the total)")
    specs = instruments.specs(order.exchange, [order.symbol])
    refusal = modification_check()(order, qty=qty, price=price, trigger_price=trigger_price,
                                   instrument=specs.get(order.symbol) if specs else None)
    if refusal:
        raise NotModifiable(f"{refusal.tag} ({refusal.detail})" if refusal.detail else refusal.tag)
    modification = OrderModification.objects.create(order=order, qty=qty, price=price, trigger_price=trigger_price,
                                                    actor=actor[:64])
    if not lifecycle.annotate(order, kind=EventKind.MODIFY_REQUESTED, actor=actor, detail=modification.requested()):
        raise NotModifiable(f"order {order.command_id} changed meanwhile; try again", conflict=True)
    enqueue_modify(modification.pk)
    return modification


def send_modify(modification_id: int) -> str:
    """The worker's part: one ModifyOrder with the order's terms as they would then be."""
    modification = OrderModification.objects.select_related("order").filter(pk=modification_id).first()
    if modification is None or modification.outcome:
        return "gone or already sent"
    order = modification.order
    if order.status != Status.SENT_TO_BROKER:
        return _answer(modification, order, RequestResult(RequestOutcome.REFUSED, f"not sent: the order is {order.status}"))
    protected = order.order_type == OrderType.MARKET and order.working_price is not None
    request = ModifyRequest(
        exchange=order.exchange, symbol=order.symbol, order_type=OrderType.LIMIT if protected else order.order_type,
        qty=modification.qty if modification.qty is not None else order.open_qty,
        price=_first(modification.price, order.working_price, order.price),
        trigger_price=_first(modification.trigger_price, order.working_trigger_price, order.trigger_price))
    broker_rate.take_slot(urgent=False, what=f"modify {order.command_id}")
    try:
        result = get_broker().modify(order.broker_order_id, request)
    except Exception as exc:  # noqa: BLE001 - the book tells what became of it
        log.exception("order %s: modify failed", order.command_id)
        result = RequestResult(RequestOutcome.IN_DOUBT, f"{type(exc).__name__}: {exc}"[:200])
    return _answer(modification, order, result, request)


def _first(*values):
    return next((v for v in values if v is not None), None)


def _answer(modification, order: Order, result: RequestResult, request: ModifyRequest | None = None) -> str:
    OrderModification.objects.filter(pk=modification.pk).update(
        outcome=result.outcome.value, message=result.message[:255], answered_at=timezone.now())
    if order.status != Status.SENT_TO_BROKER:
        return result.outcome.value.lower()
    if result.outcome == RequestOutcome.SENT and request is not None:
        won = lifecycle.annotate(order, kind=EventKind.MODIFIED, actor=ACTOR, detail=modification.requested(),
                                 working_qty=request.qty, working_price=request.price,
                                 working_trigger_price=request.trigger_price)
    else:
        detail = result.message or "refused"
        if result.outcome == RequestOutcome.IN_DOUBT:
            detail = f"no definite answer: {detail}"
        won = lifecycle.annotate(order, kind=EventKind.MODIFY_REFUSED, actor=ACTOR, detail=detail)
    if not won:
        log.info("order %s changed while its modification was answered (%s)", order.command_id, result.outcome)
    return result.outcome.value.lower()
