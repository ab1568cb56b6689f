"""The live broker: Shoonya (Finvasia) through the Noren OMS REST API.

Outcomes of a place call:
- `Ok` with `norenordno` -> ACCEPTED; `Not_Ok` -> REJECTED with the broker's `emsg` verbatim,
  unless the `emsg` says the broker timed out (then in doubt, as below).
- timeout, connection lost after sending, 5xx, unreadable reply -> BrokerInDoubt: the watcher
  finds the order in the book by `remarks` (our command id). Never sent again.
- the connection could not even be opened -> REJECTED "not sent: …" (see place).
- "session expired": with legacy credentials, log in again once and send that order once more;
  otherwise mark the stored session invalid and return SESSION_INVALID (the user must run
  `manage.py shoonya_login`). Never a loop: at most two PlaceOrder requests, the first of
  which the broker refused; a new session refused at once holds back further automatic
  logins for SHOONYA_LOGIN_RETRY_S, as a failed login does.
"""

import logging
import os
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from urllib.parse import quote_plus

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import instruments
from . import shoonya_session as sessions
from .base import (
    BookEntry,
    Broker,
    BrokerInDoubt,
    BrokerUnavailable,
    Funds,
    ModifyRequest,
    PlaceOutcome,
    PlaceRequest,
    PlaceResult,
    Position,
    RequestOutcome,
    RequestResult,
    normalize_status,
)
from .noren import (
    NoAnswer,
    NorenError,
    NotSent,
    Refused,
    error_message,
    is_no_data,
    is_not_ok,
    is_ok,
    is_session_expired,
)

log = logging.getLogger("orderdesk.brokers.shoonya")

PRODUCTS = {"CNC": "C", "NRML": "M", "MIS": "I"}
PRODUCT_NAMES = {code: name for name, code in PRODUCTS.items()}
SIDES = {"BUY": "B", "SELL": "S"}
PRICE_TYPES = {"MARKET": "MKT", "LIMIT": "LMT", "SL": "SL-LMT", "SL-M": "SL-MKT"}
ORDER_TYPE_NAMES = {code: name for name, code in PRICE_TYPES.items()}
SIDE_NAMES = {code: name for name, code in SIDES.items()}
PRICED = {"LIMIT", "SL"}  # the others go at market: prc "0"
TRIGGERED = {"SL", "SL-M"}  # trgprc is sent only for these (Noren: "only in case of SL / SL-M")
UNAUTHORIZED = 401
# A PlaceOrder `Not_Ok` saying this comes from Noren's web tier giving up on its OMS, which
# may have taken the order: in doubt, not rejected.
IN_DOUBT_EMSG_MARKERS = ("timeout", "timed out")


class SessionUnavailable(Exception):
    """No usable broker session: nothing was sent, or the broker refused it for the session."""


def price_text(price: Decimal | None) -> str:
    """"2950.50" for Decimal("2950.5000"): no float, no exponent, at least two decimals."""
    if price is None:
        return "0"
    text = format(price.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def place_values(request: PlaceRequest) -> dict:
    """PlaceOrder's jData, keys in the official client's order."""
    values = {
        "ordersource": "API",
        "uid": sessions.user_id(),
        "actid": sessions.account_id(),
        "trantype": SIDES[request.side],
        "prd": PRODUCTS[request.product],
        "exch": request.exchange,
        "tsym": quote_plus(request.symbol),  # `M&M-EQ` must not break the raw jData body
        "qty": str(request.qty),
        "dscqty": "0",
        "prctyp": PRICE_TYPES[request.order_type],
        "prc": price_text(request.price) if request.order_type in PRICED else "0",
    }
    if request.order_type in TRIGGERED:
        values["trgprc"] = price_text(request.trigger_price)
    values["ret"] = "DAY"
    values["remarks"] = request.client_order_id
    if settings.SHOONYA_ALGO_ID:
        values["algo_id"] = settings.SHOONYA_ALGO_ID
    return values


def _decimal(value) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _int(value) -> int:
    number = _decimal(value)
    return int(number) if number is not None else 0


def book_entry(row: dict) -> BookEntry | None:
    """A row of OrderBook or SingleOrdHist; None for a row without an order number."""
    broker_order_id = str(row.get("norenordno") or "")
    if not broker_order_id:
        return None
    raw_status = str(row.get("status") or "")
    filled = _int(row.get("fillshares"))
    return BookEntry(
        broker_order_id=broker_order_id,
        client_order_id=str(row.get("remarks") or ""),
        status=normalize_status(raw_status),
        raw_status=raw_status,
        filled_qty=filled,
        avg_price=_decimal(row.get("avgprc")) if filled else None,  # "0" or absent until a fill
        reason=str(row.get("rejreason") or ""),
        exchange=str(row.get("exch") or ""),
        symbol=str(row.get("tsym") or ""),
        side=SIDE_NAMES.get(str(row.get("trantype") or ""), ""),
        qty=_int(row.get("qty")),
        product=PRODUCT_NAMES.get(str(row.get("prd") or ""), str(row.get("prd") or "")),
        order_type=ORDER_TYPE_NAMES.get(str(row.get("prctyp") or ""), str(row.get("prctyp") or "")),
        price=_decimal(row.get("prc")) or None,  # "0" at market
    )


def order_update_entry(message: dict) -> BookEntry | None:
    """A push feed `om` message, read as a book row (one parser for both). Noren also spells
    the order number `norenoordno`; a fill report's `flid` becomes the fill's id, prefixed
    with the order number (exchange trade ids repeat across days and exchanges)."""
    row = dict(message)
    row["norenordno"] = message.get("norenordno") or message.get("norenoordno")
    entry = book_entry(row)
    if entry is not None and str(message.get("reporttype") or "").lower() == "fill" and message.get("flid"):
        entry = replace(entry, fill_id=f"{entry.broker_order_id}:{message['flid']}"[:64])
    return entry


def position(row: dict) -> Position:
    zero = Decimal(0)
    return Position(
        exchange=str(row.get("exch") or ""),
        symbol=str(row.get("tsym") or ""),
        product=PRODUCT_NAMES.get(str(row.get("prd") or ""), str(row.get("prd") or "")),
        net_qty=_int(row.get("netqty")),
        net_avg_price=_decimal(row.get("netavgprc")) or zero,
        realized_pnl=_decimal(row.get("rpnl")) or zero,
        unrealized_pnl=_decimal(row.get("urmtom")) or zero,
        last_price=_decimal(row.get("lp")),
    )


class ShoonyaBroker(Broker):
    def __init__(self):
        if not settings.SHOONYA_USER_ID:
            raise ImproperlyConfigured(
                "ORDERDESK_BROKER=shoonya needs SHOONYA_USER_ID (and OAuth or QuickAuth credentials)")
        self.client = sessions.new_client()
        self._pid = os.getpid()

    def _refresh_client_settings(self) -> None:
        if self._pid != os.getpid():
            # Created before a fork (django-q2 forks its workers): pooled connections must not
            # be shared between processes.
            self.client, self._pid = sessions.new_client(), os.getpid()
        # Read per call, so a changed timeout or base URL (tests, a reloaded setting) applies.
        self.client.base_url = settings.SHOONYA_BASE_URL.rstrip("/")
        self.client.timeout = (settings.BROKER_CONNECT_TIMEOUT_S, settings.BROKER_READ_TIMEOUT_S)
        self.client.secrets = sessions.secret_values()

    # --- sessions -------------------------------------------------------------------------

    def _session(self) -> sessions.Session:
        session = sessions.load()
        if session is not None:
            return session
        if sessions.legacy_configured():
            return self._login()
        raise SessionUnavailable("no valid Shoonya session: run `manage.py shoonya_login`")

    def _login(self) -> sessions.Session:
        blocked = sessions.login_blocked()
        if blocked:
            raise SessionUnavailable(f"Shoonya login needed but {blocked}")
        try:
            return sessions.quick_auth(self.client)
        except sessions.LoginFailed as exc:
            log.error("SHOONYA LOGIN FAILED for %s: %s", sessions.user_id(), exc)
            raise SessionUnavailable(f"Shoonya login failed: {exc}") from None

    def _after_expiry(self, expired: sessions.Session, route: str) -> sessions.Session:
        """The one recovery allowed after a "session expired" reply."""
        current = sessions.load()
        if current is not None and current.token != expired.token:
            return current  # another process has logged in since
        sessions.invalidate(expired, f"session expired ({route})")
        if sessions.legacy_configured():
            log.warning("shoonya: session expired on %s; logging in again once", route)
            return self._login()
        log.error("SHOONYA SESSION EXPIRED (%s): marked invalid; orders fail until someone runs "
                  "`manage.py shoonya_login`", route)
        raise SessionUnavailable("Shoonya session expired: log in again with `manage.py shoonya_login`")

    def _send(self, route: str, values: dict, session: sessions.Session):
        try:
            return self.client.post(route, values, session.auth)
        except Refused as exc:
            if exc.http_status == UNAUTHORIZED:  # the token itself was refused: same as an expired session
                return {"stat": "Not_Ok", "emsg": f"Session Expired : {exc}"}
            raise

    def _call(self, route: str, values: dict):
        """One request with the stored session, and at most one more after a "session
        expired" reply once a new session is at hand. Raises SessionUnavailable or NorenError."""
        try:
            self._refresh_client_settings()
            session = self._session()
        except SessionUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - before the request: it cannot have reached the broker
            log.error("shoonya: %s not sent: %s: %s", route, type(exc).__name__, exc)
            raise SessionUnavailable(f"not sent: {type(exc).__name__}: {exc}") from None
        reply = self._send(route, values, session)
        if not is_session_expired(reply):
            return reply
        try:
            session = self._after_expiry(session, route)
        except SessionUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the first request was refused, the second not sent
            log.error("shoonya: %s not sent again: %s: %s", route, type(exc).__name__, exc)
            raise SessionUnavailable(f"not sent: {type(exc).__name__}: {exc}") from None
        reply = self._send(route, values, session)
        if is_session_expired(reply):
            reason = f"session expired again right after a new login ({route})"
            if sessions.invalidate(session, reason) and sessions.legacy_configured():
                # The newest session was refused at once: logging in again on the next call
                # would be a login per call. Wait as after a failed login.
                sessions.note_login_failure(reason)
            log.error("SHOONYA SESSION EXPIRED again on %s right after a new session; giving up", route)
            raise SessionUnavailable(f"Shoonya session expired: {error_message(reply)}")
        return reply

    # --- the Broker interface ---------------------------------------------------------------

    def place(self, request: PlaceRequest) -> PlaceResult:
        try:
            values = place_values(request)
        except KeyError as exc:  # nothing was sent
            return PlaceResult(PlaceOutcome.REJECTED, message=f"not sent: unsupported value {exc} for Shoonya")
        try:
            reply = self._call("PlaceOrder", values)
        except SessionUnavailable as exc:
            return PlaceResult(PlaceOutcome.SESSION_INVALID, message=str(exc))
        except NotSent as exc:
            # The TCP connection was never opened, so the broker cannot have the order: a
            # definite "not placed". Failing it now tells the trader at once; leaving it in
            # doubt would wait for book reads that the same outage makes fail.
            return PlaceResult(PlaceOutcome.REJECTED, message=f"not sent: {exc}")
        except Refused as exc:  # a 4xx: the server did not process the request
            return PlaceResult(PlaceOutcome.REJECTED, message=str(exc))
        except NoAnswer as exc:
            raise BrokerInDoubt(str(exc)) from None
        if is_ok(reply) and reply.get("norenordno"):
            log.info("shoonya: order %s accepted as %s", request.client_order_id, reply["norenordno"])
            return PlaceResult(PlaceOutcome.ACCEPTED, broker_order_id=str(reply["norenordno"]))
        if is_not_ok(reply):
            message = error_message(reply)
            if any(marker in message.lower() for marker in IN_DOUBT_EMSG_MARKERS):
                raise BrokerInDoubt(f"PlaceOrder: {message}")
            return PlaceResult(PlaceOutcome.REJECTED, message=message)
        raise BrokerInDoubt(f"PlaceOrder: reply without an order number or a rejection ({_shape(reply)})")

    def cancel(self, broker_order_id: str) -> RequestResult:
        return self._request("CancelOrder", {"ordersource": "API", "uid": sessions.user_id(),
                                             "norenordno": broker_order_id})

    def modify(self, broker_order_id: str, request: ModifyRequest) -> RequestResult:
        # The official client's ModifyOrder jData, keys in its order.
        values = {"ordersource": "API", "uid": sessions.user_id(), "actid": sessions.account_id(),
                  "norenordno": broker_order_id, "exch": request.exchange, "tsym": quote_plus(request.symbol),
                  "qty": str(request.qty), "prctyp": PRICE_TYPES.get(request.order_type, ""),
                  "prc": price_text(request.price) if request.order_type in PRICED else "0"}
        if request.order_type in TRIGGERED:
            values["trgprc"] = price_text(request.trigger_price)
        return self._request("ModifyOrder", values)

    def _request(self, route: str, values: dict) -> RequestResult:
        """A cancel or a modification: sent, refused (with the broker's words), or in doubt."""
        try:
            reply = self._call(route, values)
        except SessionUnavailable as exc:
            return RequestResult(RequestOutcome.REFUSED, f"not sent: {exc}")
        except NotSent as exc:
            return RequestResult(RequestOutcome.REFUSED, f"not sent: {exc}")
        except Refused as exc:
            return RequestResult(RequestOutcome.REFUSED, str(exc))
        except NoAnswer as exc:
            return RequestResult(RequestOutcome.IN_DOUBT, str(exc))
        if is_ok(reply):
            return RequestResult(RequestOutcome.SENT)
        if is_not_ok(reply):
            return RequestResult(RequestOutcome.REFUSED, error_message(reply))
        return RequestResult(RequestOutcome.IN_DOUBT, f"{route}: unclear reply ({_shape(reply)})")

    def _read(self, route: str, values: dict) -> list[dict]:
        """A list reply; [] for the "no data" reply. Anything else raises BrokerUnavailable."""
        try:
            reply = self._call(route, values)
        except (SessionUnavailable, NorenError) as exc:
            raise BrokerUnavailable(str(exc)) from None
        if isinstance(reply, list):
            return [row for row in reply if isinstance(row, dict)]
        if is_no_data(reply):
            return []
        raise BrokerUnavailable(f"{route}: {error_message(reply) if isinstance(reply, dict) else _shape(reply)}")

    def order_feed(self):
        from .shoonya_feed import NorenOrderFeed

        return NorenOrderFeed(self)

    def feed_session(self) -> sessions.Session:
        """The session the push feed logs in with: the stored one, or (legacy credentials) a
        new login. Raises SessionUnavailable."""
        self._refresh_client_settings()
        return self._session()

    def limits(self) -> dict:
        """The account's funds and margins (Noren's Limits), as the broker words them. Raises
        BrokerUnavailable."""
        try:
            reply = self._call("Limits", {"uid": sessions.user_id(), "actid": sessions.account_id()})
        except (SessionUnavailable, NorenError) as exc:
            raise BrokerUnavailable(str(exc)) from None
        if not is_ok(reply):
            raise BrokerUnavailable(f"Limits: {error_message(reply) if isinstance(reply, dict) else _shape(reply)}")
        return reply

    def quote(self, exchange: str, symbol: str) -> Decimal:
        """GetQuotes by the symbol master's token. A reply about another instrument (exch,
        token or tsym not the ones asked for: about 9 % of replies in one published test) is
        discarded and asked again once."""
        token = instruments.token_of(exchange, symbol)
        if token is None:
            raise BrokerUnavailable(f"no token for {exchange}:{symbol}: load the symbol master (sync_instruments)")
        problem = ""
        for _ in range(2):
            try:
                reply = self._call("GetQuotes", {"uid": sessions.user_id(), "exch": exchange, "token": token})
            except (SessionUnavailable, NorenError) as exc:
                raise BrokerUnavailable(f"GetQuotes: {exc}") from None
            if not is_ok(reply):
                raise BrokerUnavailable(f"GetQuotes: {error_message(reply) if isinstance(reply, dict) else _shape(reply)}")
            about = (str(reply.get("exch", "")), str(reply.get("token", "")), str(reply.get("tsym", symbol)))
            if about != (exchange, token, symbol):
                problem = f"the reply was about {':'.join(about)}, not {exchange}:{token}:{symbol}"
                log.warning("shoonya: GetQuotes for %s:%s answered another instrument; asking again", exchange, symbol)
                continue
            try:
                price = Decimal(str(reply.get("lp", "")))
            except InvalidOperation:
                price = Decimal(0)
            if price.is_finite() and price > 0:
                return price
            problem = f"no usable last price ({str(reply.get('lp'))[:20]!r})"
        raise BrokerUnavailable(f"GetQuotes for {exchange}:{symbol}: {problem}")

    def funds(self) -> Funds:
        reply = self.limits()
        try:
            figures = [Decimal(str(reply.get(key) or "0")) for key in ("cash", "payin", "marginused", "brkcollamt")]
        except InvalidOperation:
            figures = []
        if len(figures) != 4 or not all(f.is_finite() for f in figures):
            raise BrokerUnavailable(f"Limits: a figure that is not a number in {_shape(reply)}")
        return Funds(*figures)

    def order_book(self) -> list[BookEntry]:
        rows = self._read("OrderBook", {"ordersource": "API", "uid": sessions.user_id()})
        entries = [book_entry(row) for row in rows]
        return [entry for entry in entries if entry is not None]

    def order_status(self, broker_order_id: str) -> BookEntry | None:
        rows = self._read("SingleOrdHist", {"ordersource": "API", "uid": sessions.user_id(),
                                            "norenordno": broker_order_id})
        for row in rows:  # newest first
            entry = book_entry(row)
            if entry is not None:
                return entry
        return None

    def positions(self) -> list[Position]:
        rows = self._read("PositionBook", {"uid": sessions.user_id(), "actid": sessions.account_id()})
        return [position(row) for row in rows]

    def logout(self) -> bool:
        """Ends the stored session at the broker and here."""
        session = sessions.load()
        if session is None:
            return False
        self._refresh_client_settings()
        try:
            reply = self.client.post("Logout", {"ordersource": "API", "uid": sessions.user_id()}, session.auth)
        except NorenError as exc:
            log.warning("shoonya: logout failed: %s", exc)
            reply = None
        sessions.invalidate(session, "logged out")
        return is_ok(reply)


def _shape(reply) -> str:
    if isinstance(reply, dict):
        return f"keys {sorted(reply)[:8]}"
    return type(reply).__name__
