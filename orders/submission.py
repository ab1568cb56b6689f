"""Submission: claim an order, send it to the broker once, record what the broker said.

The CREATED -> SENT_TO_BROKER compare-and-set is the claim: a duplicated or redelivered
task loses it and does nothing. An answer that is not definite leaves the order in doubt
for the watcher to resolve from the order book; it is never sent again blindly.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from brokers.base import Broker, BrokerInDoubt, PlaceOutcome, PlaceRequest, PlaceResult
from brokers.registry import get_broker
from orderdesk import statements

from . import broker_rate, lifecycle, protection
from .blocker_registry import claim_guard
from .models import EventKind, ExecutionType, Order, OrderType, Status
from .queue import enqueue_watcher
from .watcher import watcher_running

log = logging.getLogger("orderdesk.submission")

ACTOR = "worker"
STALE_TAG = "GUARD_BLOCKED:STALE_ORDER"
# A watcher seen holding its lease is taken to hold it this long: one lease read per order
# was one of 18 statements of a submission. A watcher that dies meanwhile leaves its orders
# to the next check, its successor or the schedule (WATCHER_LEASE_TTL_S is longer).
WATCHER_SEEN_FOR_S = 5.0
_watcher_seen_at: float | None = None


def place_on_broker(broker: Broker, order: Order) -> PlaceResult:
    """The only call of a broker's place() in the project. Never raises: after the claim,
    anything but a definite answer (an acceptance with an id, or a rejection) is in doubt."""
    protected = order.order_type == OrderType.MARKET and order.working_price is not None
    request = PlaceRequest(
        client_order_id=order.command_id,
        exchange=order.exchange,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        order_type=OrderType.LIMIT if protected else order.order_type,  # market protection's LIMIT
        product=order.product,
        price=order.working_price if protected else order.price,
        trigger_price=order.trigger_price,
    )
    try:
        result = broker.place(request)
    except BrokerInDoubt as exc:
        return PlaceResult(PlaceOutcome.IN_DOUBT, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - after the claim, anything unexpected is "in doubt"
        log.exception("order %s: unexpected error from broker place", order.command_id)
        return PlaceResult(PlaceOutcome.IN_DOUBT, message=f"{type(exc).__name__}: {exc}"[:200])
    if not isinstance(result, PlaceResult):
        return PlaceResult(PlaceOutcome.IN_DOUBT, message=f"unclear outcome {type(result).__name__}")
    if result.outcome == PlaceOutcome.ACCEPTED and not result.broker_order_id:
        # An acceptance without an id cannot be tracked; the watcher finds it by client order id.
        return PlaceResult(PlaceOutcome.IN_DOUBT, message="accepted without a broker order id")
    if result.outcome not in (PlaceOutcome.ACCEPTED, PlaceOutcome.REJECTED, PlaceOutcome.SESSION_INVALID):
        return PlaceResult(PlaceOutcome.IN_DOUBT, message=result.message or f"unclear outcome {result.outcome!r}")
    return result


def submit_order(command_id: str) -> str:
    """Returns what happened, for the task log: claimed-and-sent, or why nothing was done."""
    # With its strategy: market protection reads the strategy's own percentage.
    order = statements.first(Order, related="strategy", command_id=command_id)
    if order is None:
        log.error("submit: no order %s", command_id)
        return "missing"
    if order.status != Status.CREATED:
        # A repeated delivery of the task (django-q2's retry, a re-enqueue): nothing to do.
        log.info("submit: order %s is %s, not claimable; nothing sent", command_id, order.status)
        return f"not claimable ({order.status})"
    # Before the claim, never between it and the broker call: a worker waiting here holds no
    # order, and the age check below still sees the time it waited.
    broker_rate.take_slot(urgent=order.execution_type == ExecutionType.EXIT, what=f"order {command_id}")
    age = timezone.now() - order.created_at
    if age > timedelta(seconds=settings.ORDER_MAX_AGE_S):
        won = lifecycle.move(order, Status.FAILED, tag=STALE_TAG, actor=ACTOR,
                             detail=f"{age.total_seconds():.1f}s old at claim time, "
                                    f"limit {settings.ORDER_MAX_AGE_S:g}s")
        return "stale" if won else "claim lost"
    # Resolved before the claim: a broker that cannot even be set up leaves the order CREATED
    # (never sent) instead of claimed and in doubt.
    broker = get_broker()
    # Market protection asks the broker for a quote before the claim: without one the order
    # is definitely not sent (FAILED from CREATED, never in doubt).
    claim = {}
    if (pct := protection.percentage(order)) is not None:
        try:
            protected = protection.protect(broker, order, pct)
        except protection.NoValidQuote as exc:
            won = lifecycle.move(order, Status.FAILED, tag=protection.NO_QUOTE_TAG, actor=ACTOR, detail=str(exc),
                                 kind=EventKind.BROKER_REJECTED)
            return "no valid quote" if won else "claim lost"
        claim = {"working_price": protected.price, "detail": protected.detail}
    # The claim itself checks the kill switch, in the same UPDATE: an order queued before the
    # switch was thrown to HALTED can never be claimed after it.
    guard = claim_guard()
    if not lifecycle.move(order, Status.SENT_TO_BROKER, actor=ACTOR, when=~guard.blocks(order.strategy_id), **claim):
        refusal = guard.refusal(order.strategy_id)
        if refusal:
            won = lifecycle.move(order, Status.FAILED, tag=refusal[0], actor=ACTOR, detail=refusal[1])
            return "halted" if won else "claim lost"
        return "claim lost"

    result = place_on_broker(broker, order)

    if result.outcome == PlaceOutcome.ACCEPTED:
        if not lifecycle.annotate(order, kind=EventKind.BROKER_ACCEPTED, actor=ACTOR, broker_order_id=result.broker_order_id):
            log.warning("order %s: broker accepted as %s but the watcher got there first",
                        order.command_id, result.broker_order_id)
        outcome = "accepted"
    elif result.outcome == PlaceOutcome.REJECTED:
        lifecycle.move(order, Status.FAILED, tag=f"BROKER_REJECTED:{result.message}", actor=ACTOR,
                       kind=EventKind.BROKER_REJECTED)
        return "rejected"
    elif result.outcome == PlaceOutcome.SESSION_INVALID:
        log.error("order %s NOT PLACED: the broker session is invalid (%s); log in again",
                  order.command_id, result.message)
        lifecycle.move(order, Status.FAILED, tag=f"BROKER_SESSION:{result.message}", actor=ACTOR,
                       kind=EventKind.BROKER_REJECTED)
        return "session invalid"
    else:
        lifecycle.annotate(order, kind=EventKind.BROKER_IN_DOUBT, actor=ACTOR,
                           tag=f"BROKER_IN_DOUBT:{result.message}")
        outcome = "in doubt"
    _follow_up()
    return outcome


def _follow_up() -> None:
    """A watcher follows the order from here: start one unless one was seen running lately."""
    global _watcher_seen_at
    now = time.monotonic()
    if _watcher_seen_at is not None and now - _watcher_seen_at < WATCHER_SEEN_FOR_S:
        return
    if watcher_running():
        _watcher_seen_at = now
    else:
        _watcher_seen_at = None
        enqueue_watcher()
