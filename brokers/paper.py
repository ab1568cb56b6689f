"""The paper broker: the embedded default. It fills orders realistically enough to run the
whole pipeline with no account, and can be told per instrument to misbehave."""

import logging
import secrets
import time
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from orderdesk import statements

from . import instruments
from .base import (
    BookEntry,
    Broker,
    BrokerInDoubt,
    BrokerUnavailable,
    FeedListener,
    Funds,
    ModifyRequest,
    OrderFeed,
    PlaceOutcome,
    PlaceRequest,
    PlaceResult,
    Position,
    RequestOutcome,
    RequestResult,
    add_fill,
    normalize_status,
)
from .models import Behaviour, PaperInstrument, PaperOrder

log = logging.getLogger("orderdesk.brokers.paper")

INVALID_SYMBOL = "Invalid Trading Symbol"  # Noren's wording
NO_PRICE = "paper broker: no price to fill a market order at for"  # in the master, not in the price list
LATE_REJECT_REASON = "RED:Margin Shortfall:INSUFFICIENT BALANCE"
CANCEL_REASON = "Canceled by exchange: IOC remainder"
USER_CANCEL_REASON = "Canceled by user"
ID_ATTEMPTS = 5
STAY_OPEN_FOR = timedelta(days=3650)
FILL_BATCH = 500  # orders per fill UPDATE (bound on the statement's parameters)


def _new_broker_order_id(now) -> str:
    return f"{now:%y%m%d}{secrets.randbelow(10**9):09d}"


def _fill_price(ref_price: Decimal | None, request: PlaceRequest) -> Decimal | None:
    if request.order_type in ("LIMIT", "SL") and request.price:
        return request.price
    if request.order_type == "SL-M" and request.trigger_price:
        return request.trigger_price
    return ref_price


INSTRUMENTS = connection.ops.quote_name(PaperInstrument._meta.db_table)


ORDERS = connection.ops.quote_name(PaperOrder._meta.db_table)
BOOK_COLUMNS = ("broker_order_id, client_order_id, status, filled_qty, avg_price, reason, exchange, symbol, side, qty,"
                " product, order_type, price, placed_at")
FILL_COLUMNS = "id, exchange, symbol, product, side, filled_qty, avg_price"
PRICE_QUANTUM = Decimal("0.0001")  # PaperOrder's prices have 4 decimal places
REREAD = timedelta(seconds=5)
PURGE_EVERY = timedelta(minutes=1)


def _decimal(value) -> Decimal | None:
    """A raw price column: a Decimal on PostgreSQL, a float or an int on SQLite."""
    return None if value is None else Decimal(str(value)).quantize(PRICE_QUANTUM)


def _utc(moment: datetime) -> datetime:
    """A raw datetime column: aware on PostgreSQL, naive UTC on SQLite."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)


def _book_entry(row: tuple) -> BookEntry:
    broker_order_id, client_order_id, status, filled_qty, avg_price, reason, *order = row
    exchange, symbol, side, qty, product, order_type, price = order
    return BookEntry(broker_order_id=broker_order_id, client_order_id=client_order_id,
                     status=normalize_status(status), raw_status=status, filled_qty=filled_qty,
                     avg_price=_decimal(avg_price), reason=reason, exchange=exchange, symbol=symbol, side=side,
                     qty=qty, product=product, order_type=order_type, price=_decimal(price))


class PaperBroker(Broker):
    def __init__(self):
        self._book: dict[str, BookEntry] = {}  # broker order id -> its entry as last read
        self._placed: dict[str, datetime] = {}  # broker order id -> placed at (orders leave the book after a day)
        self._book_read_at = self._purged_at = None
        self._books: dict[tuple, tuple] = {}  # (exchange, symbol, product) -> net qty, average, realized
        self._filled: dict[int, tuple] = {}  # paper order id -> (filled qty, average) counted in _books
        self._books_day = self._fills_read_at = None

    def _delay(self) -> timedelta:
        return timedelta(seconds=settings.PAPER_FILL_DELAY_S)

    def place(self, request: PlaceRequest) -> PlaceResult:
        instrument = statements.first(PaperInstrument, exchange=request.exchange, symbol=request.symbol)
        listed = instruments.specs(request.exchange, [request.symbol])  # one statement; None: no master
        if listed is not None:
            # The symbol master says what exists; the price list still gives prices (and switches).
            if request.symbol not in listed:
                return PlaceResult(PlaceOutcome.REJECTED, message=INVALID_SYMBOL)
        elif instrument is None:
            return PlaceResult(PlaceOutcome.REJECTED, message=INVALID_SYMBOL)
        if instrument is not None and not instrument.enabled:
            return PlaceResult(PlaceOutcome.REJECTED, message=INVALID_SYMBOL)
        fill_price = _fill_price(instrument.ref_price if instrument else None, request)
        if fill_price is None:
            return PlaceResult(PlaceOutcome.REJECTED, message=f"{NO_PRICE} {request.exchange}:{request.symbol}")
        now = timezone.now()
        fields = dict(
            asdict(request),  # the PlaceRequest fields are PaperOrder columns of the same names
            fill_price=fill_price,
            behaviour=instrument.behaviour if instrument else Behaviour.NORMAL,
            placed_at=now,
            # A resting order never comes due: only a cancel (or a modification) moves it.
            due_at=now + (STAY_OPEN_FOR if instrument and instrument.behaviour == Behaviour.STAY_OPEN else self._delay()),
        )
        for attempt in range(ID_ATTEMPTS):
            # Noren-like numeric ids; a random one can collide with another of the same day.
            try:
                # A savepoint only inside a caller's transaction: in autocommit a failed INSERT
                # leaves the connection usable, and BEGIN/COMMIT were two statements of every place.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    order = PaperOrder(broker_order_id=_new_broker_order_id(now), **fields)
                    statements.insert(order)
                break
            except IntegrityError:
                if attempt == ID_ATTEMPTS - 1:
                    raise
        if fields["behaviour"] == Behaviour.TIMEOUT_ON_PLACE:
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
                status="COMPLETE", filled_qty=F("qty"), avg_price=F("fill_price"), changed_at=now)
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
            if PaperOrder.objects.filter(pk=order.pk, status="OPEN", filled_qty=order.filled_qty).update(
                    changed_at=now, **changes):
                for field, value in changes.items():
                    setattr(order, field, value)
                moved.append(order)
        return [self._entry(o) for o in moved]

    def order_feed(self) -> OrderFeed:
        return PaperFeed(self)

    def modify(self, broker_order_id: str, request: ModifyRequest) -> RequestResult:
        order = PaperOrder.objects.filter(broker_order_id=broker_order_id).first()
        if order is None:
            return RequestResult(RequestOutcome.REFUSED, f"no order {broker_order_id}")
        if order.status != "OPEN":
            return RequestResult(RequestOutcome.REFUSED, f"order {broker_order_id} is {order.status}")
        if request.qty <= order.filled_qty:
            return RequestResult(RequestOutcome.REFUSED, f"qty {request.qty} is not above the {order.filled_qty} filled")
        instrument = PaperInstrument.objects.filter(exchange=order.exchange, symbol=order.symbol).first()
        placed = PlaceRequest(order.client_order_id, order.exchange, order.symbol, order.side, request.qty,
                              request.order_type, order.product, request.price, request.trigger_price)
        changed = PaperOrder.objects.filter(pk=order.pk, status="OPEN", filled_qty=order.filled_qty).update(
            qty=request.qty, price=request.price, trigger_price=request.trigger_price,
            fill_price=_fill_price(instrument.ref_price if instrument else order.fill_price, placed),
            changed_at=timezone.now())
        if not changed:
            return RequestResult(RequestOutcome.REFUSED, f"order {broker_order_id} is not open")
        return RequestResult(RequestOutcome.SENT)

    def cancel(self, broker_order_id: str) -> RequestResult:
        if PaperOrder.objects.filter(broker_order_id=broker_order_id, status="OPEN").update(
                status="CANCELED", reason=USER_CANCEL_REASON, changed_at=timezone.now()):
            return RequestResult(RequestOutcome.SENT)
        order = PaperOrder.objects.filter(broker_order_id=broker_order_id).values_list("status", flat=True).first()
        return RequestResult(RequestOutcome.REFUSED, f"order {broker_order_id} is {order}" if order else
                            f"no order {broker_order_id}")

    def _changed_rows(self, columns: str, since, where: str = "") -> list[tuple]:
        """Rows changed since `since` (placed or moved: every write sets changed_at).
        Hand-written: the first read of a busy day is thousands of rows; through the ORM
        (values_list and its converters) 17,000 took 55 ms, raw 25 ms."""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM {ORDERS} WHERE changed_at >= %s {where}",
                           [connection.ops.adapt_datetimefield_value(since)])
            return cursor.fetchall()

    def _since(self, last_read, now):
        """From a little before the last read on (a write stamped just before it may have
        committed just after it), or the whole day's rows at first."""
        start_of_book = now - timedelta(days=1)
        return start_of_book if last_read is None else max(start_of_book, last_read - REREAD)

    @staticmethod
    def _entry(order: PaperOrder) -> BookEntry:
        return _book_entry((order.broker_order_id, order.client_order_id, order.status, order.filled_qty,
                            order.avg_price, order.reason, order.exchange, order.symbol, order.side, order.qty,
                            order.product, order.order_type, order.price))

    def order_book(self) -> list[BookEntry]:
        # Each step is its own compare-and-set: no transaction (which on SQLite would take the
        # write lock on every read of the book, even when nothing is due).
        self.advance()
        # A busy day's book is thousands of orders, nearly all as they were at the last read:
        # only the rows changed since are read; the rest are the entries made for them then.
        now = timezone.now()
        for *row, placed_at in self._changed_rows(BOOK_COLUMNS, self._since(self._book_read_at, now)):
            self._book[row[0]] = _book_entry(row)
            self._placed[row[0]] = _utc(placed_at)
        self._book_read_at = now
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            start_of_book, self._purged_at = now - timedelta(days=1), now
            for broker_order_id in [k for k, placed in self._placed.items() if placed < start_of_book]:
                del self._book[broker_order_id], self._placed[broker_order_id]
        return list(self._book.values())

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

    def quote(self, exchange: str, symbol: str) -> Decimal:
        price = PaperInstrument.objects.filter(exchange=exchange, symbol=symbol, enabled=True).values_list(
            "ref_price", flat=True).first()
        if price is None:
            raise BrokerUnavailable(f"no paper price for {exchange}:{symbol}")
        return price

    def funds(self) -> Funds:
        """PAPER_CASH, and as margin in use the open positions at their average price."""
        used = sum((abs(p.net_qty) * p.net_avg_price for p in self.positions()), Decimal(0))
        return Funds(Decimal(settings.PAPER_CASH), Decimal(0), used, Decimal(0))

    def positions(self) -> list[Position]:
        """Net quantity, average price and P&L per instrument from the fills (average cost),
        in the order this broker object saw them. Only fills new since its last look are
        added: a busy day's thousands of fills are not replayed on every watcher pass."""
        now = timezone.now()
        if self._books_day != timezone.localdate(now):
            self._books, self._filled, self._books_day, self._fills_read_at = {}, {}, timezone.localdate(now), None
        since = self._since(self._fills_read_at, now)
        self._fills_read_at = now
        for pk, exchange, symbol, product, side, filled, avg in self._changed_rows(FILL_COLUMNS, since,
                                                                                   "AND filled_qty > 0"):
            seen_qty, seen_avg = self._filled.get(pk, (0, Decimal(0)))
            if filled <= seen_qty:
                continue
            avg = _decimal(avg)
            qty = filled - seen_qty
            price = (avg * filled - seen_avg * seen_qty) / qty  # the new fills' own average
            key = (exchange, symbol, product)
            self._books[key] = add_fill(*self._books.get(key, (0, Decimal(0), Decimal(0))),
                                        qty if side == "BUY" else -qty, price)
            self._filled[pk] = (filled, avg)
        prices = {(e, s): price for e, s, price in PaperInstrument.objects.values_list("exchange", "symbol", "ref_price")}
        result = []
        for (exchange, symbol, product), (qty, avg, realized) in self._books.items():
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
