"""The paper broker: the embedded default. It fills orders realistically enough to run the
whole pipeline with no account, and can be told per instrument to misbehave."""

import logging
import secrets
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .base import (BookEntry, Broker, BrokerInDoubt, FeedListener, OrderFeed, PlaceOutcome, PlaceRequest,
                   PlaceResult, Position, add_fill, normalize_status)
from .models import Behaviour, PaperInstrument, PaperOrder

log = logging.getLogger("orderdesk.brokers.paper")

INVALID_SYMBOL = "Invalid Trading Symbol"  # Noren's wording
LATE_REJECT_REASON = "RED:Margin Shortfall:INSUFFICIENT BALANCE"
CANCEL_REASON = "Canceled by exchange: IOC remainder"
ID_ATTEMPTS = 5
FILL_BATCH = 500  # orders per fill UPDATE (bound on the statement's parameters)


def _new_broker_order_id(now) -> str:
    return f"{now:%y%m%d}{secrets.randbelow(10**9):09d}"


def _fill_price(instrument: PaperInstrument, request: PlaceRequest) -> Decimal:
    if request.order_type in ("LIMIT", "SL") and request.price:
        return request.price
    if request.order_type == "SL-M" and request.trigger_price:
        return request.trigger_price
    return instrument.ref_price


INSTRUMENTS = connection.ops.quote_name(PaperInstrument._meta.db_table)


class PaperBroker(Broker):
    def _delay(self) -> timedelta:
        return timedelta(seconds=settings.PAPER_FILL_DELAY_S)

    def place(self, request: PlaceRequest) -> PlaceResult:
        instrument = PaperInstrument.objects.filter(
            exchange=request.exchange, symbol=request.symbol, enabled=True
        ).first()
        if instrument is None:
            return PlaceResult(PlaceOutcome.REJECTED, message=INVALID_SYMBOL)
        now = timezone.now()
        fields = dict(
            asdict(request),  # the PlaceRequest fields are PaperOrder columns of the same names
            fill_price=_fill_price(instrument, request),
            behaviour=instrument.behaviour,
            placed_at=now,
            due_at=now + self._delay(),
        )
        for attempt in range(ID_ATTEMPTS):
            # Noren-like numeric ids; a random one can collide with another of the same day.
            try:
                with transaction.atomic():
                    order = PaperOrder.objects.create(broker_order_id=_new_broker_order_id(now), **fields)
                break
            except IntegrityError:
                if attempt == ID_ATTEMPTS - 1:
                    raise
        if instrument.behaviour == Behaviour.TIMEOUT_ON_PLACE:
            # The order exists at the "broker"; only the reply is lost.
            raise BrokerInDoubt("read timed out (paper broker TIMEOUT_ON_PLACE)")
        return PlaceResult(PlaceOutcome.ACCEPTED, broker_order_id=order.broker_order_id)

    def advance(self) -> list[BookEntry]:
        """Move every due OPEN order one step (compare-and-set, so concurrent readers agree);
        returns the entries of the orders moved, for the paper feed to announce."""
        now = timezone.now()
        due = list(PaperOrder.objects.filter(status="OPEN", due_at__lte=now))
        # The common case, a plain fill, is one UPDATE for all due orders: on SQLite every
        # statement outside a transaction takes the database's one write lock, and a write
        # per filled order made the watcher queue for it once per order, every pass.
        stepwise = (Behaviour.REJECT_LATER, Behaviour.CANCEL_AFTER_PARTIAL)
        plain = [order for order in due if order.behaviour not in stepwise]
        moved = []
        for start in range(0, len(plain), FILL_BATCH):
            batch = plain[start:start + FILL_BATCH]
            PaperOrder.objects.filter(pk__in=[o.pk for o in batch], status="OPEN").update(
                status="COMPLETE", filled_qty=F("qty"), avg_price=F("fill_price"))
            # Announced even if a concurrent reader moved some first: it made the same move.
            for order in batch:
                order.status, order.filled_qty, order.avg_price = "COMPLETE", order.qty, order.fill_price
            moved += batch
        for order in (o for o in due if o.behaviour in stepwise):
            if order.behaviour == Behaviour.REJECT_LATER:
                changes = {"status": "REJECTED", "reason": LATE_REJECT_REASON}
            elif order.filled_qty == 0 and order.qty > 1:  # CANCEL_AFTER_PARTIAL, first step
                changes = {"filled_qty": order.qty // 2, "avg_price": order.fill_price, "due_at": now + self._delay()}
            else:
                changes = {"status": "CANCELED", "reason": CANCEL_REASON}
            if PaperOrder.objects.filter(pk=order.pk, status="OPEN", filled_qty=order.filled_qty).update(**changes):
                for field, value in changes.items():
                    setattr(order, field, value)
                moved.append(order)
        return [self._entry(o) for o in moved]

    def order_feed(self) -> OrderFeed:
        return PaperFeed(self)

    def _todays_orders(self):
        return PaperOrder.objects.filter(placed_at__gte=timezone.now() - timedelta(days=1)).order_by("id")

    @staticmethod
    def _entry(order: PaperOrder) -> BookEntry:
        return BookEntry(broker_order_id=order.broker_order_id, client_order_id=order.client_order_id,
                         status=normalize_status(order.status), raw_status=order.status,
                         filled_qty=order.filled_qty, avg_price=order.avg_price, reason=order.reason)

    def order_book(self) -> list[BookEntry]:
        # Each step is its own compare-and-set: no transaction (which on SQLite would take the
        # write lock on every read of the book, even when nothing is due).
        self.advance()
        return [self._entry(o) for o in self._todays_orders()]

    def order_status(self, broker_order_id: str) -> BookEntry | None:
        """Any day's order, like Noren's SingleOrdHist: the book only lists today's."""
        self.advance()
        order = PaperOrder.objects.filter(broker_order_id=broker_order_id).first()
        return self._entry(order) if order else None

    def reference_prices(self, instruments):
        if not instruments:
            return {}
        symbols = sorted({symbol for _, symbol in instruments})
        # Hand-written: the ORM's compile of this read was most of its 0.2 ms in every intake
        # with a price limit (benchmarks/intake.py).
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT exchange, symbol, ref_price FROM {INSTRUMENTS} "
                           f"WHERE symbol IN ({', '.join(['%s'] * len(symbols))})", symbols)
            rows = cursor.fetchall()
        return {(e, s): Decimal(str(price)) for e, s, price in rows if (e, s) in instruments}

    def positions(self) -> list[Position]:
        """Net quantity, average price and P&L per instrument from the fills (average cost)."""
        books = defaultdict(lambda: (0, Decimal(0), Decimal(0)))  # net qty, average, realized P&L
        for o in self._todays_orders().filter(filled_qty__gt=0):
            key = (o.exchange, o.symbol, o.product)
            books[key] = add_fill(*books[key], o.filled_qty if o.side == "BUY" else -o.filled_qty, o.avg_price)
        prices = {(i.exchange, i.symbol): i.ref_price for i in PaperInstrument.objects.all()}
        result = []
        for (exchange, symbol, product), (qty, avg, realized) in books.items():
            last = prices.get((exchange, symbol))
            unrealized = (last - avg) * qty if last is not None and qty else Decimal(0)
            result.append(Position(exchange, symbol, product, qty, avg.quantize(Decimal("0.0001")), realized,
                                   unrealized, last))
        return result


class PaperFeed(OrderFeed):
    """The paper broker's push path: a timer in the listening process (manage.py orderwatcher)
    advances due paper orders and announces what moved, so EXECUTED follows the paper fill
    delay instead of the next poll."""

    def __init__(self, broker: PaperBroker):
        self.broker = broker

    def run(self, listener: FeedListener) -> None:
        listener.connected()
        try:
            while listener.running():
                try:
                    for entry in self.broker.advance():
                        listener.update(entry)
                    listener.heartbeat()
                except Exception:  # noqa: BLE001 - the database away for a moment: the next tick
                    log.exception("paper feed: advancing orders failed")
                time.sleep(settings.PAPER_FEED_TICK_S)
        finally:
            listener.disconnected("stopped")
