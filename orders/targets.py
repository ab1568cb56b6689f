"""Target positions ("smart orders"): a leg that gives `target_qty` (10 long, -10 short, 0 flat)
instead of a side and a quantity. Under the instrument locks (taken before the leg is registered,
so two alerts at once see each other's orders), the intake computes the order that moves the
strategy's position, counting its live orders, toward the target: BUY or SELL, ENTRY or EXIT.
A flip (long 10 -> short 5) is the EXIT now and, once that EXIT is EXECUTED, the ENTRY as a
follow-up alert (a TargetFollowUp row: visible, cancellable). At the target: no order, and the
answer's note says so."""

import logging
from dataclasses import dataclass, replace

from django.db import transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .blocker_registry import early_locks
from .models import (
    LIVE_STATUSES,
    ExecutionType,
    FollowUpStatus,
    Order,
    Position,
    Product,
    Side,
    Status,
    TargetFollowUp,
)
from .tradingday import trading_day_start
from .validation import AlertRequest, LegRequest

log = logging.getLogger("orderdesk.targets")

ACTOR = "target"


@dataclass(frozen=True)
class Resolved:
    legs: tuple[LegRequest, ...]  # the orders to register now (side, qty and execution type computed)
    notes: dict[int, str]  # leg -> the computation, for its audit row and the answer
    follow_ups: dict[int, tuple[str, int]]  # leg -> (side, qty) of the ENTRY after its EXIT


def has_targets(request: AlertRequest) -> bool:
    return any(leg.target_qty is not None for leg in request.legs)


def resolve(strategy, request: AlertRequest) -> Resolved:
    """The target legs made into ordinary legs, from the position and live orders now."""
    # The blockers' locks, in their one order, before the position is read.
    early_locks()(strategy, request.exchange, [leg.symbol for leg in request.legs])
    legs, notes, follow_ups = [], {}, {}
    for leg in request.legs:
        if leg.target_qty is None:
            legs.append(leg)
            continue
        # A new target replaces the entry a flip left waiting: it is computed from scratch.
        superseded = TargetFollowUp.objects.filter(
            strategy=strategy, exchange=request.exchange, symbol=leg.symbol, product=leg.product,
            status=FollowUpStatus.WAITING).update(status=FollowUpStatus.CANCELLED, done_at=timezone.now(),
                                                  note="superseded by a later target")
        net, live, closing = _holding(strategy, request.exchange, leg.symbol, leg.product)
        projected = net + live
        target = leg.target_qty
        seen = f"target {target:+d}: position {net:+d}, live orders {live:+d}" + (
            " (a waiting follow-up entry cancelled)" if superseded else "")
        if target == projected:
            notes[leg.leg] = f"{seen}: at the target, no order"
            continue
        side = Side.BUY if target > projected else Side.SELL
        # An exit closes at most what is held and not being closed already; live entries
        # beyond that stay (cancel them to go further).
        exitable = abs(net) - closing
        flips = net != 0 and (target > 0 > projected or target < 0 < projected)
        reduces = net != 0 and abs(target) < abs(projected) and target * projected >= 0
        if flips or reduces:
            wanted = abs(projected) if flips else abs(target - projected)
            qty = min(wanted, exitable)
            short = f"; live entries of {wanted - qty} stay: cancel them to go further" if qty < wanted else ""
            if qty <= 0:
                notes[leg.leg] = f"{seen}: nothing held to exit{short}"
                continue
            legs.append(replace(leg, side=side, qty=qty, target_qty=None, execution_type=ExecutionType.EXIT))
            if flips and not short:
                follow_ups[leg.leg] = (side, abs(target))
                notes[leg.leg] = (f"{seen}: a flip, EXIT {side} {qty} now, then ENTRY {side} {abs(target)} "
                                  "once it is executed")
            else:
                notes[leg.leg] = f"{seen}: EXIT {side} {qty}{short}"
            continue
        qty = abs(target - projected)
        legs.append(replace(leg, side=side, qty=qty, target_qty=None, execution_type=ExecutionType.ENTRY))
        notes[leg.leg] = f"{seen}: ENTRY {side} {qty}"
    return Resolved(tuple(legs), notes, follow_ups)


def _holding(strategy, exchange: str, symbol: str, product: str) -> tuple[int, int, int]:
    """(the position's net qty, the live orders' signed remaining qty, the remaining qty of the
    live orders that close the position) of one instrument."""
    position = Position.objects.filter(strategy=strategy, exchange=exchange, symbol=symbol, product=product).exclude(
        product=Product.MIS, updated_at__lt=trading_day_start()).values_list("net_qty", flat=True).first() or 0
    live = Order.objects.filter(strategy=strategy, exchange=exchange, symbol=symbol, product=product,
                                status__in=LIVE_STATUSES)
    remaining = Coalesce("working_qty", "qty") - F("filled_qty")  # as the broker works them
    bought = live.filter(side=Side.BUY).aggregate(q=Sum(remaining))["q"] or 0
    sold = live.filter(side=Side.SELL).aggregate(q=Sum(remaining))["q"] or 0
    closing = sold if position > 0 else bought if position < 0 else 0
    return position, bought - sold, closing


def record_follow_ups(alert, orders: list[Order], resolved: Resolved) -> None:
    for order in orders:
        if order.leg in resolved.follow_ups and order.slice == 1:
            side, qty = resolved.follow_ups[order.leg]
            TargetFollowUp.objects.create(alert=alert, leg=order.leg, strategy=order.strategy,
                                          exchange=order.exchange, symbol=order.symbol, product=order.product,
                                          side=side, qty=qty, order_type=order.order_type, price=order.price,
                                          after=order)


def run_due() -> list[Order]:
    """What the watcher's passes do: register the ENTRY of every follow-up whose EXIT (all its
    slices) is EXECUTED; a follow-up whose exit failed is void. The entries registered."""
    registered = []
    for follow_up in TargetFollowUp.objects.filter(status=FollowUpStatus.WAITING).select_related("after", "alert",
                                                                                                  "strategy"):
        try:
            entry = _follow(follow_up)
        except Exception:  # noqa: BLE001 - one follow-up must not hold up the others
            log.exception("follow-up %s failed", follow_up.pk)
            continue
        if entry is not None:
            registered.append(entry)
    return registered


def _follow(follow_up: TargetFollowUp) -> Order | None:
    """The follow-up's ENTRY, registered once its EXIT (every slice) is EXECUTED."""
    from .services import register_alert

    statuses = set(Order.objects.filter(alert=follow_up.alert_id, leg=follow_up.leg).values_list("status", flat=True))
    if statuses & set(LIVE_STATUSES):
        return None
    if statuses != {Status.EXECUTED}:
        _finish(follow_up, FollowUpStatus.VOID, None, "the exit did not execute in full: no entry")
        return None
    # Its own id (a later pass, or another process, registers nothing again), of fixed length.
    request = AlertRequest(
        strategy=follow_up.strategy.name, secret="", alert_id=f"target-follow-up-{follow_up.pk}",
        execution_type=ExecutionType.ENTRY, exchange=follow_up.exchange,
        legs=(LegRequest(1, follow_up.symbol, follow_up.side, follow_up.qty, follow_up.order_type,
                         follow_up.product, follow_up.price, None),))
    result = register_alert(strategy=follow_up.strategy, request=request, source=follow_up.alert.source,
                            actor=ACTOR, payload={"follow_up_of": follow_up.alert.alert_id, "leg": follow_up.leg})
    entry = result.orders[0] if result.orders else None
    _finish(follow_up, FollowUpStatus.REGISTERED, entry, entry.tag if entry and entry.tag else "entry registered")
    return entry


def cancel(follow_ups, actor: str) -> int:
    """Cancel waiting follow-ups (their entries will not be registered)."""
    return follow_ups.filter(status=FollowUpStatus.WAITING).update(
        status=FollowUpStatus.CANCELLED, done_at=timezone.now(), note=f"cancelled by {actor}"[:255])


def _finish(follow_up: TargetFollowUp, status: str, entry: Order | None, note: str) -> None:
    with transaction.atomic():
        TargetFollowUp.objects.filter(pk=follow_up.pk, status=FollowUpStatus.WAITING).update(
            status=status, entry=entry, done_at=timezone.now(), note=note[:255])
