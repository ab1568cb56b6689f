"""A verifiable audit trail: every OrderEvent carries a SHA-256 of its own content and of the
previous event of the same order (a chain per order, so the hot path takes no global lock);
the creation event's hash also covers the order's immutable details. The order keeps the
hash of its last event (`audit_head`), so a deleted last event shows too.

`verify` recomputes, from the events and the fills ledger, what the rows claim: every chain,
each order's status, tag, broker id, filled quantity and average price, and every position.
Anything written behind orders.lifecycle's back (an UPDATE in SQL, a deleted row) is reported.
The hash is a digest, not a signature: it shows edits made without recomputing the chain.
"""

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import AuditCheck, EventKind, Fill, Order, OrderEvent, Position
from .positions import Book

VERSION = "v1"
PRICE_QUANTUM = Decimal("0.0001")  # the order's prices are stored to 4 places
AVG_TOLERANCE = Decimal("0.0001")  # the order's average is stored to 4 places, the fills' prices to 6
REPORT_LINES = 200  # mismatches kept with the check's result


def _text(value):
    """A value as the database returns it, for the digest: Decimals to 4 places, times in UTC
    to the microsecond; None stays null (never the same as '')."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP), "f")
    if hasattr(value, "astimezone"):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def _order_details(order: Order) -> list:
    return [order.command_id, order.alert_id, order.leg, order.slice, order.strategy_id, order.source,
            order.execution_type, order.exchange, order.symbol, order.side, order.qty, order.order_type,
            order.price, order.trigger_price, order.product, order.created_at]


def event_hash(event: OrderEvent, command_id: str, order: Order | None = None) -> str:
    """The event's digest: its content, the previous event's hash, and for a creation the
    order's immutable details. Values are written as the database returns them (Decimals to
    4 places, times in UTC to the microsecond) so a row read back hashes the same."""
    parts = [VERSION, event.prev_hash, command_id, event.kind, event.from_status, event.to_status, event.tag,
             event.actor, event.detail, event.at, event.broker_order_id, event.filled_qty]
    if event.kind == EventKind.CREATED and order is not None:
        parts += _order_details(order)
    # A JSON array: each field keeps its bounds, whatever text a broker put in a tag or detail.
    return hashlib.sha256(json.dumps([_text(p) for p in parts], ensure_ascii=False).encode()).hexdigest()


def seal(event: OrderEvent, command_id: str, prev_hash: str, order: Order | None = None) -> str:
    """Link `event` after `prev_hash` and set its hash; returns the hash."""
    event.prev_hash = prev_hash
    event.hash = event_hash(event, command_id, order)
    return event.hash


# --- verification ---------------------------------------------------------------------------

@dataclass
class Result:
    orders: int = 0
    positions: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _check_chain(order: Order, events: list[OrderEvent], out: list[str]) -> None:
    def say(text):
        out.append(f"{order.command_id}: {text}")

    if not events:
        say("no audit trail")
        return
    if events[0].kind != EventKind.CREATED:
        say(f"the first event is {events[0].kind}, not CREATED (events deleted?)")
    prev = ""
    for e in events:
        if e.prev_hash != prev:
            say(f"event {e.pk} ({e.kind}) does not follow the one before it (an event deleted or inserted?)")
        if e.hash != event_hash(e, order.command_id, order):
            what = "the order's details" if e.kind == EventKind.CREATED else "its content"
            say(f"event {e.pk} ({e.kind}) does not match its hash ({what} edited?)")
        prev = e.hash
    if order.audit_head != prev:
        say("the order's last recorded event is missing (an event deleted?)")


def _check_state(order: Order, events: list[OrderEvent], fills: list[Fill], out: list[str]) -> None:
    def say(text):
        out.append(f"{order.command_id}: {text}")

    if events:
        last = events[-1]
        for name, recorded in (("status", last.to_status), ("tag", last.tag),
                               ("broker_order_id", last.broker_order_id), ("filled_qty", last.filled_qty)):
            if getattr(order, name) != recorded:
                say(f"{name} is {getattr(order, name)!r}, its events say {recorded!r}")
    filled = sum(f.qty for f in fills)
    if filled != order.filled_qty:
        say(f"filled_qty is {order.filled_qty}, its fills add up to {filled}")
    if fills and fills[-1].cum_qty != filled:
        say(f"its last fill says {fills[-1].cum_qty} filled in all, its fills add up to {filled}")
    if filled and order.avg_price is not None:
        average = sum(f.qty * f.price for f in fills) / filled
        if abs(average - order.avg_price) > AVG_TOLERANCE:
            say(f"avg_price is {order.avg_price}, its fills average {average.quantize(Decimal('0.000001'))}")


def _check_positions(positions: QuerySet, out: list[str]) -> int:
    """Each position replayed from its fills, in the order they were written."""
    books: dict[tuple, Book] = defaultdict(Book)
    for qty, price, side, strategy, exchange, symbol, product in Fill.objects.order_by("id").values_list(
            "qty", "price", "order__side", "strategy_id", "order__exchange", "order__symbol", "order__product"):
        key = (strategy, exchange, symbol, product)
        books[key] = books[key].add(qty if side == "BUY" else -qty, price)
    checked = 0
    for p in positions:
        checked += 1
        book = books.get((p.strategy_id, p.exchange, p.symbol, p.product), Book())
        for name, recorded, replayed in (("net_qty", p.net_qty, book.net_qty),
                                         ("avg_price", p.avg_price, book.avg_price),
                                         ("realized_pnl", p.realized_pnl, book.realized_pnl)):
            if Decimal(recorded) != Decimal(replayed):
                out.append(f"position {p.strategy_id} {p.exchange}:{p.symbol} {p.product}: {name} is {recorded}, "
                           f"its fills say {replayed}")
    return checked


def verify(orders: QuerySet | None = None, positions: QuerySet | None = None, since=None) -> Result:
    """Every order (created on or after `since`, if given) and every position, checked. On
    PostgreSQL in one REPEATABLE READ snapshot, so a transition committed while it reads is
    not taken for a mismatch. (SQLite's transactions here take the write lock: there it reads
    without one, and a check run while orders move may report one that moved; run it again.)"""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return _verify(orders, positions, since)
    return _verify(orders, positions, since)


def _verify(orders, positions, since) -> Result:
    orders = Order.objects.all() if orders is None else orders
    if since is not None:
        orders = orders.filter(created_at__gte=since)
    positions = Position.objects.all() if positions is None else positions
    result = Result()
    pks = list(orders.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), 500):
        batch = pks[start:start + 500]
        events, fills = defaultdict(list), defaultdict(list)
        for e in OrderEvent.objects.filter(order_id__in=batch).order_by("id"):
            events[e.order_id].append(e)
        for f in Fill.objects.filter(order_id__in=batch).order_by("id"):
            fills[f.order_id].append(f)
        for order in Order.objects.filter(pk__in=batch).order_by("pk"):
            result.orders += 1
            _check_chain(order, events[order.pk], result.mismatches)
            _check_state(order, events[order.pk], fills[order.pk], result.mismatches)
    result.positions = _check_positions(positions, result.mismatches)
    return result


def nightly_since(now=None):
    """The nightly check's reach: the orders of the last AUDIT_VERIFY_DAYS days (and every
    position); `manage.py verify_audit` without --since checks them all."""
    days = settings.AUDIT_VERIFY_DAYS
    return (now or timezone.now()) - timedelta(days=days) if days else None


def run_and_record(since=None) -> tuple[Result, AuditCheck]:
    """verify, and keep its result (for /api/health/ and the admin)."""
    result = verify(since=since)
    check = AuditCheck.objects.create(
        ran_at=timezone.now(), since=since, orders=result.orders, positions=result.positions,
        mismatches=len(result.mismatches), report="\n".join(result.mismatches[:REPORT_LINES]))
    return result, check
