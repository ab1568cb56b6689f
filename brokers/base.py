"""The broker interface: place an order, read the order book, read positions, and (where the
broker has one) listen to its push feed of order updates.

Adapters translate their wire format into these types; the pipeline never sees a broker's
own field names.
"""

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum


class PlaceOutcome(str, Enum):
    ACCEPTED = "ACCEPTED"  # the broker gave us its order id
    REJECTED = "REJECTED"  # definitely not placed; `message` says why
    IN_DOUBT = "IN_DOUBT"  # no definite answer (timeout, 5xx, garbage): may or may not exist
    SESSION_INVALID = "SESSION_INVALID"  # definitely not placed: the broker session is gone


@dataclass(frozen=True)
class PlaceRequest:
    client_order_id: str  # our command id; the broker echoes it in its order book
    exchange: str
    symbol: str
    side: str  # BUY / SELL
    qty: int
    order_type: str  # MARKET / LIMIT / SL / SL-M
    product: str  # CNC / NRML / MIS
    price: Decimal | None = None
    trigger_price: Decimal | None = None


@dataclass(frozen=True)
class PlaceResult:
    outcome: PlaceOutcome
    broker_order_id: str | None = None
    message: str = ""


class RequestOutcome(str, Enum):
    """A cancel's or a modification's answer."""

    SENT = "SENT"  # the broker took the request (a cancel: the order ends when it says CANCELED)
    REFUSED = "REFUSED"  # definitely not done (already complete, unknown id …); `message` says why
    IN_DOUBT = "IN_DOUBT"  # no definite answer: the order book will tell


@dataclass(frozen=True)
class RequestResult:
    outcome: RequestOutcome
    message: str = ""


@dataclass(frozen=True)
class ModifyRequest:
    """An open order's new terms, as the broker wants them: `qty` is the total (filled and
    pending); the rest as placed."""

    exchange: str
    symbol: str
    order_type: str
    qty: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None


class BookStatus(str, Enum):
    OPEN = "OPEN"  # pending, open, trigger pending: still working
    COMPLETE = "COMPLETE"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"


# Noren spells it CANCELED; the old system waited for CANCELLED and left orders stuck.
_STATUS_MAP = {
    "PENDING": BookStatus.OPEN,
    "OPEN": BookStatus.OPEN,
    "TRIGGER_PENDING": BookStatus.OPEN,
    "PUT ORDER REQ RECEIVED": BookStatus.OPEN,
    "VALIDATION PENDING": BookStatus.OPEN,
    "COMPLETE": BookStatus.COMPLETE,
    "REJECTED": BookStatus.REJECTED,
    "REJECT": BookStatus.REJECTED,  # the spelling in Noren's own order-book sample
    "CANCELED": BookStatus.CANCELLED,
    "CANCELLED": BookStatus.CANCELLED,
    "EXPIRED": BookStatus.EXPIRED,
    # Noren's catch-all: the order exists but its state is not known; keep watching it.
    "INVALID_STATUS_TYPE": BookStatus.UNKNOWN,
}


def normalize_status(raw: str | None) -> BookStatus:
    return _STATUS_MAP.get((raw or "").strip().upper(), BookStatus.UNKNOWN)


@dataclass(frozen=True)
class BookEntry:
    broker_order_id: str
    client_order_id: str  # what we sent as the client order id ('' if none)
    status: BookStatus
    raw_status: str
    filled_qty: int = 0
    avg_price: Decimal | None = None
    reason: str = ""
    fill_id: str = ""  # a pushed fill report's own id (Noren's flid), for the fills ledger
    # What the order is, for one we did not send (an external order, placed in the broker's app)
    exchange: str = ""
    symbol: str = ""
    side: str = ""  # BUY / SELL
    qty: int = 0
    product: str = ""  # our names: MIS / CNC / NRML
    order_type: str = ""  # our names: MARKET / LIMIT / SL / SL-M
    price: Decimal | None = None


@dataclass(frozen=True)
class Position:
    exchange: str
    symbol: str
    product: str
    net_qty: int
    net_avg_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    last_price: Decimal | None


def add_fill(net_qty: int, avg_price: Decimal, realized_pnl: Decimal, signed_qty: int,
             price: Decimal) -> tuple[int, Decimal, Decimal]:
    """(net qty, average price, realized P&L) after a fill of `signed_qty` (> 0 bought, < 0
    sold) at `price`, at average cost. The average is left as it was when the fill exactly
    closes the position (a caller that shows flat positions as 0 says so itself)."""
    if net_qty == 0 or (net_qty > 0) == (signed_qty > 0):  # opening or adding
        avg_price = (avg_price * abs(net_qty) + price * abs(signed_qty)) / (abs(net_qty) + abs(signed_qty))
    else:  # reducing, closing or flipping
        closed = min(abs(net_qty), abs(signed_qty))
        realized_pnl += (price - avg_price) * closed * (1 if net_qty > 0 else -1)
        if abs(signed_qty) > abs(net_qty):
            avg_price = price
    return net_qty + signed_qty, avg_price, realized_pnl


class BrokerUnavailable(Exception):
    """A read (order book, positions) that gave no usable answer."""


class BrokerInDoubt(Exception):
    """Raised by an adapter's place() when the order may or may not have reached the broker."""


class FeedListener:
    """What an OrderFeed tells while it runs (orders.feed implements it). Called from the
    feed's own thread; none of these blocks for long."""

    def connected(self) -> None:
        """Logged in and subscribed (again): what happened while disconnected is unknown."""

    def update(self, entry: BookEntry) -> None:
        """One order's new state, as pushed."""

    def heartbeat(self) -> None:
        """The connection showed life without an order update (a heartbeat reply, say)."""

    def running(self) -> bool:
        """Asked at least every second: False stops the feed (shutdown, or its lease lost)."""
        return True

    def disconnected(self, reason: str) -> None:
        """The connection ended or could not be set up; the feed tries again after a pause."""


@dataclass(frozen=True)
class Funds:
    """The account's money as the broker reports it (Noren's Limits)."""

    cash: Decimal
    payin: Decimal  # added today
    margin_used: Decimal
    collateral: Decimal  # pledged holdings' value (margin products only)

    @property
    def available_cash(self) -> Decimal:
        """What a delivery (CNC) buy can spend: cash and today's pay-in, less the margin in use
        (collateral backs margin products only)."""
        return self.cash + self.payin - self.margin_used


class OrderFeed:
    def run(self, listener: FeedListener) -> None:
        """Connect, log in, subscribe and report to `listener` while listener.running(),
        reconnecting with backoff. Never raises."""
        raise NotImplementedError


class Broker:
    def place(self, request: PlaceRequest) -> PlaceResult:
        """One attempt, never retried: ACCEPTED, REJECTED, or raise BrokerInDoubt."""
        raise NotImplementedError

    def cancel(self, broker_order_id: str) -> RequestResult:
        """Ask the broker to cancel an open order, once. The order ends only when the broker
        reports it CANCELED (book or feed), with whatever was filled before."""
        return RequestResult(RequestOutcome.REFUSED, f"{type(self).__name__} cannot cancel orders")

    def modify(self, broker_order_id: str, request: ModifyRequest) -> RequestResult:
        """Ask the broker to change an open order's price, trigger or quantity, once."""
        return RequestResult(RequestOutcome.REFUSED, f"{type(self).__name__} cannot modify orders")

    def order_book(self) -> list[BookEntry]:
        """Today's orders. Raises BrokerUnavailable when the broker gave no usable answer."""
        raise NotImplementedError

    def order_status(self, broker_order_id: str) -> BookEntry | None:
        """One order's latest state, for an order whose broker id is known but which is
        missing from the book. None: the broker does not know the id (after the order's
        trading day the watcher then fails it as BROKER_UNKNOWN). Raises BrokerUnavailable
        when the broker gave no usable answer or cannot tell."""
        return None

    def positions(self) -> list[Position]:
        """Today's net positions. Raises BrokerUnavailable when the broker gave no usable answer."""
        raise NotImplementedError

    def order_feed(self) -> OrderFeed | None:
        """The broker's push feed of order updates, or None (then the watcher polls)."""
        return None

    def quote(self, exchange: str, symbol: str) -> Decimal:
        """The instrument's last traded price, asked of the broker now. Raises
        BrokerUnavailable when it gave no usable, matching answer."""
        raise BrokerUnavailable(f"{type(self).__name__} gives no quotes")

    def funds(self) -> Funds | None:
        """The account's cash and margins, or None when the broker cannot tell. Raises
        BrokerUnavailable when a read failed."""
        return None

    def reference_prices(self, instruments: set[tuple[str, str]]) -> dict[tuple[str, str], Decimal]:
        """{(exchange, symbol): price} the adapter knows without I/O (the paper broker's
        instrument prices); a live broker's prices come from its position snapshots."""
        return {}
