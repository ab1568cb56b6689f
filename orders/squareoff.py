"""Square-off: make positions flat. A request cancels the matching open orders first (a pending
exit would make the full exit EXIT_EXCEEDS_POSITION, a pending entry would reopen the position),
then registers, per position, the EXIT of the quantity then held once its instrument has no live
order, or SQUAREOFF_CANCEL_WAIT_S after the request, whichever is first. The exit goes through
the one intake (source `system`), so it is registered first and every blocker applies (those that
never stop a square-off exit let it through; the kill switch's HALTED still stops it).

Triggers: a strategy's `squareoff_time` (IST, once a trading day), an MTM stop or target (once a
day, then entries stay locked), and `close()`: POST /api/positions/close/, the admin's action on
positions, `manage.py squareoff`. The watcher's passes move waiting requests on (`run_due`); a
daily django-q2 schedule per strategy is the backstop.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from django_q.models import Schedule

from . import cancels, events
from .blocker_registry import mtm_check
from .models import (
    LIVE_STATUSES,
    ExecutionType,
    Order,
    OrderType,
    Position,
    Product,
    Side,
    Source,
    SquareOff,
    SquareOffDay,
    SquareOffTrigger,
    Strategy,
)
from .services import register_alert
from .tradingday import local_now, trading_day_start
from .validation import AlertRequest, LegRequest

log = logging.getLogger("orderdesk.squareoff")

ACTOR = "squareoff"


@dataclass(frozen=True)
class CloseResult:
    cancelled: list  # (order, cancel outcome)
    orders: list[Order]  # the exits registered now (CREATED, or FAILED with the reason)
    waiting: list[SquareOff]  # positions whose exit waits for their cancels


def open_positions(strategy: str | None = None, exchange: str | None = None, symbol: str | None = None):
    """Positions that are open now: an intraday (MIS) one only from today's trading day (the
    broker squared yesterday's off with orders that are not ours)."""
    positions = Position.objects.exclude(net_qty=0).exclude(product=Product.MIS, updated_at__lt=trading_day_start())
    if strategy:
        positions = positions.filter(strategy__name=strategy)
    if exchange:
        positions = positions.filter(exchange=exchange.upper())
    if symbol:
        positions = positions.filter(symbol__iexact=symbol)
    return positions.select_related("strategy").order_by("strategy_id", "exchange", "symbol", "product")


def close(*, strategy: str | None = None, exchange: str | None = None, symbol: str | None = None,
          actor: str) -> CloseResult:
    """Cancel the matching open orders, then exit every matching open position (at once where
    nothing is left live on the instrument, else once the cancels are through)."""
    stamp = timezone.now().strftime("%Y%m%d%H%M%S%f")
    with transaction.atomic():  # the requests first: the cancels then never leave a position unhandled
        requests = [_request(p, SquareOffTrigger.MANUAL, actor, f"close-{stamp}-{p.pk}")
                    for p in open_positions(strategy, exchange, symbol)]
    orders = _cancellable(cancels.open_orders(strategy=strategy, symbol=symbol))
    if exchange:
        orders = orders.filter(exchange=exchange.upper())
    cancelled = cancels.cancel_each(orders, actor)
    return _settle(cancelled, [r for r in requests if r is not None])


def square_off_strategy(strategy: Strategy, trigger: str, now: datetime | None = None,
                        why: str = "") -> CloseResult | None:
    """The day's automatic square-off of a strategy (TIME or MTM); None if it already ran today."""
    now = now or timezone.now()
    day = local_now(now).date()
    prefix = f"{trigger.lower()}-{day:%Y%m%d}"
    try:
        # The day's mark and a request per position in one transaction: a crash after it
        # leaves requests that the next pass moves on, never a marked day without them.
        with transaction.atomic():
            SquareOffDay.objects.create(strategy=strategy, day=day, trigger=trigger, at=now, detail=why[:255])
            requests = [_request(p, trigger, ACTOR, f"{prefix}-{p.exchange}-{p.symbol}-{p.product}")
                        for p in open_positions(strategy.name)]
            events.on_commit(events.desk_event, __name__, kind="SQUARE_OFF", params={
                "strategy": strategy.name, "trigger": trigger, "why": why})
    except IntegrityError:
        return None  # another process (or an earlier pass) did it
    log.warning("square-off of %s (%s) %s", strategy.name, trigger, why)
    cancelled = cancels.cancel_each(_cancellable(Order.objects.filter(strategy=strategy)), ACTOR)
    return _settle(cancelled, [r for r in requests if r is not None])


def _cancellable(orders):
    """Every open order but an earlier square-off's exit: that one is already making the
    position flat (the new exit counts it and covers only the rest)."""
    return orders.exclude(source=Source.SYSTEM, execution_type=ExecutionType.EXIT)


def _request(position: Position, trigger: str, actor: str, alert_id: str) -> SquareOff | None:
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction
            return SquareOff.objects.create(strategy=position.strategy, exchange=position.exchange,
                                            symbol=position.symbol, product=position.product, trigger=trigger,
                                            actor=actor[:64], alert_id=_fitted(alert_id))
    except IntegrityError:
        return None  # requested already (a second delivery of the same trigger)


def _fitted(alert_id: str) -> str:
    """At most 64 characters, still one per position: a long one keeps a digest of the whole."""
    if len(alert_id) <= 64:
        return alert_id
    return f"{alert_id[:47]}-{hashlib.sha256(alert_id.encode()).hexdigest()[:16]}"


def _settle(cancelled: list, requests: list[SquareOff]) -> CloseResult:
    orders = [order for request in requests for order in advance(request)]
    waiting = [r for r in requests if r.done_at is None]
    return CloseResult(cancelled, orders, waiting)


def advance(request: SquareOff, now: datetime | None = None) -> list[Order]:
    """Register the request's EXIT if its instrument has no live order left, or the wait is
    over; the orders registered (the exit's slices above a freeze quantity; none: still
    waiting, or nothing left to exit)."""
    now = now or timezone.now()
    live = Order.objects.filter(strategy=request.strategy_id, exchange=request.exchange, symbol=request.symbol,
                                status__in=LIVE_STATUSES)
    waited = now - request.requested_at >= timedelta(seconds=settings.SQUAREOFF_CANCEL_WAIT_S)
    if live.exists() and not waited:
        return []
    position = Position.objects.filter(strategy=request.strategy_id, exchange=request.exchange,
                                       symbol=request.symbol, product=request.product).first()
    net = position.net_qty if position else 0
    side = Side.SELL if net > 0 else Side.BUY
    exiting = live.filter(execution_type=ExecutionType.EXIT, product=request.product, side=side).aggregate(
        qty=Sum(Coalesce("working_qty", "qty") - F("filled_qty")))["qty"] or 0  # as the broker works them
    qty = abs(net) - exiting
    if qty <= 0:
        _done(request, None, "flat" if net == 0 else f"covered by live exits of {exiting}")
        return []
    alert = AlertRequest(strategy=request.strategy.name, secret="", alert_id=request.alert_id,
                         execution_type=ExecutionType.EXIT, exchange=request.exchange,
                         legs=(LegRequest(1, request.symbol, side, qty, OrderType.MARKET, request.product, None, None),))
    result = register_alert(strategy=request.strategy, request=alert, source=Source.SYSTEM, actor=request.actor,
                            payload={"squareoff": request.trigger, "position": net, "live_exits": exiting},
                            sender_ip=None)
    order = result.orders[0]
    _done(request, order, order.tag or f"EXIT {side} {qty} registered"
          + (f" in {len(result.orders)} slices" if len(result.orders) > 1 else ""))
    return result.orders


def _done(request: SquareOff, order: Order | None, note: str) -> None:
    request.done_at, request.exit_order, request.note = timezone.now(), order, note[:255]
    SquareOff.objects.filter(pk=request.pk, done_at__isnull=True).update(
        done_at=request.done_at, exit_order=order, note=request.note)


@receiver(post_save, sender=Strategy)
def _schedule_backstop(sender, instance: Strategy, **kwargs):
    """A daily django-q2 schedule at the strategy's squareoff_time (cron in IST, the minute it
    falls in rounded up), behind the watcher's check; removed when the time is cleared."""
    name = f"squareoff:{instance.name}"
    if instance.squareoff_time is None:
        Schedule.objects.filter(name=name).delete()
        return
    at = (datetime.combine(date.today(), instance.squareoff_time) + timedelta(seconds=59)).time()
    Schedule.objects.update_or_create(name=name, defaults={
        "func": "orders.tasks.run_squareoffs", "schedule_type": Schedule.CRON, "cron": f"{at.minute} {at.hour} * * *",
        "repeats": -1})


def run_due(now: datetime | None = None) -> list[Order]:
    """What the watcher's passes do: start the square-offs whose time has come today, and
    move every waiting request on. The exits registered."""
    now = now or timezone.now()
    local = local_now(now)
    done_today = SquareOffDay.objects.filter(day=local.date(), trigger=SquareOffTrigger.TIME).values("strategy")
    due = [(strategy, SquareOffTrigger.TIME, f"squareoff_time {strategy.squareoff_time:%H:%M} IST")
           for strategy in Strategy.objects.filter(squareoff_time__lte=local.time()).exclude(pk__in=done_today)]
    due += [(strategy, SquareOffTrigger.MTM, why) for strategy, why in mtm_check()(now)]
    registered = []
    for strategy, trigger, why in due:
        if (result := square_off_strategy(strategy, trigger, now, why)) is not None:
            registered += result.orders
    for request in SquareOff.objects.filter(done_at__isnull=True).select_related("strategy").order_by("id"):
        try:
            registered += advance(request, now)
        except Exception:  # noqa: BLE001 - one request must not hold up the others
            log.exception("square-off request %s failed", request.pk)
    return registered

