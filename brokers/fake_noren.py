"""A fake Noren OMS (Shoonya's broker API) for tests and demos.

A threaded HTTP server that speaks the wire format the official client speaks (POST
`<base>/<Route>`, raw body `jData=<json>` plus `&jKey=<token>` for legacy sessions, or an
`Authorization: Bearer` header for OAuth ones) and answers as Noren does. It keeps an order
book that fills after a delay, net positions with `rpnl`/`urmtom` from the fills and a settable
last price, and can be told, per symbol or per order (by `remarks`), to misbehave.

It also serves Noren's websocket (`FEED_PATH` on a port of its own): a login (`t:"c"` with a
QuickAuth token, `t:"a"` with an OAuth one), the order subscription (`t:"o"`), then an `om`
message for every change of an order (NewAck, New, Fill with `flqty`/`flprc`/`flid`, Rejected,
Canceled). `feed` can be told to drop its connections, stall (no messages, no heartbeat
replies), refuse logins silently, or send malformed frames.

Tests drive it with Python methods (set_behaviour, set_last_price, expire_sessions,
issue_auth_code, calls, feed) and read every request it received in `self.calls`. Demos
(`manage.py fake_noren --port P`) use the HTTP control routes under `/_fake/`.
"""

import hashlib
import itertools
import json
import random
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pyotp
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.sync.server import ServerConnection, serve

from .base import add_fill

SESSION_EXPIRED = "Session Expired :  Invalid Session Key"
NO_DATA = 'Error Occurred : 5 "no data"'
INVALID_SYMBOL = "Invalid Trading Symbol"
DEFAULT_REJECT_EMSG = "RED:Rejected by risk: order value exceeds limit"
DEFAULT_LATE_REJECT = "RED:Margin Shortfall:INSUFFICIENT BALANCE"
DEFAULT_CANCEL_REASON = "Canceled by exchange"
GARBAGE_BODY = "<html><body><h1>502 Bad Gateway</h1></body></html>"
HANG_UP_REPLY = (0, "", "")
PRODUCT_CODES = {"MIS": "I", "CNC": "C", "NRML": "M"}  # the handler closes the connection instead of answering
BASE_PATH = "/NorenWClientAPI"
FEED_PATH = "/NorenWSAPI/"
TICK_S = 0.02  # due orders move on this often even when nobody reads the book (the feed announces them)

INSTRUMENTS = {
    ("NSE", "RELIANCE-EQ"): Decimal("2950.00"),
    ("NSE", "SBIN-EQ"): Decimal("815.50"),
    ("NSE", "INFY-EQ"): Decimal("1875.25"),
    ("NSE", "TCS-EQ"): Decimal("4120.00"),
    ("NSE", "HDFCBANK-EQ"): Decimal("1720.40"),
    ("NSE", "M&M-EQ"): Decimal("2890.10"),
    ("BSE", "RELIANCE"): Decimal("2950.00"),
}


class Behaviour(str, Enum):
    ACCEPT = "ACCEPT"  # OPEN, then COMPLETE after the fill delay
    REJECT = "REJECT"  # Not_Ok + emsg at placement; no order
    REJECT_LATER = "REJECT_LATER"  # OPEN, then REJECTED with rejreason
    CANCEL = "CANCEL"  # OPEN, then CANCELED (after filling `fill_qty`, default none)
    PARTIAL = "PARTIAL"  # OPEN with `fill_qty` (default half) filled, and stays OPEN
    TIMEOUT = "TIMEOUT"  # the order is placed, the reply comes only after `sleep_s`
    HTTP_500 = "HTTP_500"  # HTTP 500 (the order is still booked unless record=False)
    GARBAGE = "GARBAGE"  # a 200 with an HTML body (the order is still booked unless record=False)
    EXPIRE_SESSION = "EXPIRE_SESSION"  # "Session Expired" to every PlaceOrder of it
    OK_WITHOUT_NUMBER = "OK_WITHOUT_NUMBER"  # booked, then "Ok" with no norenordno in the reply
    HANG_UP = "HANG_UP"  # booked, then the connection is closed with no reply at all


@dataclass
class Rule:
    behaviour: Behaviour = Behaviour.ACCEPT
    emsg: str = DEFAULT_REJECT_EMSG
    reason: str = ""
    fill_qty: int | None = None
    sleep_s: float = 2.0
    record: bool = True  # HTTP_500 / GARBAGE: whether the order still reaches the book


@dataclass
class Account:
    """The one user the fake knows; defaults are demo values, not anyone's credentials."""

    user_id: str = "FA12345"
    account_id: str = ""
    password: str = "fake-password-123"
    totp_secret: str = "JBSWY3DPEHPK3PXPJBSWY3DP"
    vendor_code: str = "FA12345_U"
    api_key: str = "fake-api-key-0123456789abcdef"
    imei: str = "abc1234"
    client_id: str = "FA12345_U"
    secret: str = "fake-oauth-secret-0123456789abcdef"

    def __post_init__(self):
        self.account_id = self.account_id or self.user_id


# Distinct, recognisable secrets: tests assert that none of them ever reaches a log line.
TEST_ACCOUNT = Account(
    user_id="FT4242",
    password="pw-Secr3t-never-logged",
    totp_secret="KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU",
    vendor_code="FT4242_U",
    api_key="apikey-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    imei="imei-test-1",
    client_id="FT4242_U",
    secret="oauth-secret-9a8b7c6d5e4f3a2b1c0d",
)


@dataclass
class Call:
    """One request the fake received, as it arrived."""

    route: str
    headers: dict
    body: str
    jdata: dict | None
    jkey: str | None
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class FakeOrder:
    norenordno: str
    fields: dict  # what PlaceOrder sent (tsym decoded)
    rule: Rule
    fill_price: Decimal
    placed_at: float  # monotonic
    status: str = "OPEN"
    fillshares: int = 0
    avgprc: Decimal | None = None
    rejreason: str = ""
    settled: bool = False  # no further automatic step
    hidden: bool = False  # left out of OrderBook (a lagging book); SingleOrdHist still knows it
    history: list = field(default_factory=list)  # rows, oldest first
    stepped_at: float | None = None  # wall clock of its automatic step (the fill), for benchmarks

    @property
    def qty(self) -> int:
        return int(self.fields["qty"])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _money(value: Decimal | None) -> str:
    return f"{(value or Decimal(0)).quantize(Decimal('0.01'))}"


def _noren_time(now: datetime | None = None) -> str:
    return (now or datetime.now()).strftime("%H:%M:%S %d-%m-%Y")


def parse_body(raw: str) -> tuple[dict | None, str | None]:
    """`jData=<json>[&jKey=<token>]` as the official client writes it (raw, not form-encoded);
    a form-encoded jData is accepted too."""
    if not raw.startswith("jData="):
        return None, None
    data, jkey = raw[len("jData="):], None
    cut = data.rfind("&jKey=")
    if cut != -1:
        data, jkey = data[:cut], data[cut + len("&jKey="):]
    for candidate in (data, unquote_plus(data)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        return (parsed if isinstance(parsed, dict) else None), jkey
    return None, jkey


class FeedMode(str, Enum):
    NORMAL = "NORMAL"
    REFUSE_SILENTLY = "REFUSE_SILENTLY"  # a login gets no answer; the socket stays open
    STALL = "STALL"  # connections stay open, but nothing more is sent: no updates, no heartbeat replies


MALFORMED_FRAMES = ("not json {", "[1, 2, 3]", b"\x00\xff binary", '{"t": "om"}', '{"t": "om", "norenordno": ""}')


class FakeFeed:
    """The websocket side of the fake: who logged in, who is subscribed, what was announced."""

    def __init__(self, fake: "FakeNoren", host: str, port: int = 0):
        self.fake = fake
        self.mode = FeedMode.NORMAL
        self.spelling = "norenordno"  # Noren also sends "norenoordno"
        self.logins: list[dict] = []  # the login messages received, token replaced by its kind
        self.announced: list[dict] = []
        self._subscribers: set[ServerConnection] = set()
        self._connections: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self._fill_ids = itertools.count(1)
        self.server = serve(self._serve, host, port, create_connection=_stallable(self), compression=None,
                            ping_interval=None)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"ws://{host}:{port}{FEED_PATH}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-noren-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.drop()
        self.server.shutdown()
        if self._thread:
            self._thread.join(timeout=5)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def drop(self) -> None:
        """Every connection ends at once, without a closing handshake (a network drop)."""
        with self._lock:
            connections = list(self._connections)
        for ws in connections:
            try:
                ws.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_malformed(self) -> None:
        self._send_all(MALFORMED_FRAMES)

    def announce(self, messages: list[dict]) -> None:
        if not messages:
            return
        with self._lock:
            self.announced.extend(messages)
        if self.mode != FeedMode.STALL:
            self._send_all([json.dumps(m) for m in messages])

    def order_message(self, order: "FakeOrder", report: str, row: dict, fill_qty: int = 0) -> dict:
        message = {k: v for k, v in row.items() if k not in ("stat", "rpt", "norenordno")}
        message.update({"t": "om", self.spelling: order.norenordno, "reporttype": report})
        if fill_qty:
            message.update(flqty=str(fill_qty), flprc=_money(order.fill_price), flid=str(next(self._fill_ids)),
                           fltm=row.get("exch_tm", ""))
        return message

    def _send_all(self, frames) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for ws in subscribers:
            for frame in frames:
                try:
                    ws.send(frame)
                except (ConnectionClosed, OSError):
                    break

    def _serve(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != FEED_PATH:
            ws.close(1008, "unknown path")
            return
        with self._lock:
            self._connections.add(ws)
        logged_in = False
        try:
            for frame in ws:
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                kind = message.get("t") if isinstance(message, dict) else None
                if kind in ("c", "a"):
                    token = message.get("susertoken" if kind == "c" else "accesstoken", "")
                    token_kind = self.fake.token_kind(token)
                    with self._lock:
                        self.logins.append({"t": kind, "uid": message.get("uid"), "actid": message.get("actid"),
                                            "source": message.get("source"), "token": token_kind})
                    if self.mode == FeedMode.REFUSE_SILENTLY:
                        continue
                    logged_in = message.get("uid") == self.fake.account.user_id and token_kind == (
                        "LEGACY" if kind == "c" else "OAUTH")
                    ws.send(json.dumps({"t": "ck" if kind == "c" else "ak", "s": "OK" if logged_in else "NOT_OK",
                                        "uid": message.get("uid")}))
                elif kind == "o" and logged_in and message.get("actid") == self.fake.account.account_id:
                    ws.send(json.dumps({"t": "ok"}))
                    with self._lock:
                        self._subscribers.add(ws)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._subscribers.discard(ws)
                self._connections.discard(ws)


def _stallable(feed: FakeFeed):
    """Connections that stop answering heartbeats while the feed is told to stall (websockets
    answers pings by itself, below the handler)."""

    class StallableConnection(ServerConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            send_frame = self.protocol.send_frame

            def send_unless_stalled(frame):
                if frame.opcode == Opcode.PONG and feed.mode == FeedMode.STALL:
                    return
                send_frame(frame)

            self.protocol.send_frame = send_unless_stalled

    return StallableConnection


class FakeNoren:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, account: Account | None = None,
                 fill_delay_s: float = 0.0, feed_port: int = 0):
        self.account = account or Account()
        self.fill_delay_s = fill_delay_s
        self.calls: list[Call] = []
        self.orders: list[FakeOrder] = []
        self.tokens: dict[str, str] = {}  # token -> "LEGACY" / "OAUTH"
        self.auth_codes: set[str] = set()
        self.last_prices = dict(INSTRUMENTS)
        self.scrip_tokens: dict[tuple[str, str], str] = {}  # (exch, token) -> tsym, for GetQuotes
        self.quote_mixups = 0  # this many GetQuotes replies describe another instrument (a known Noren fault)
        self.default_rule = Rule()
        self.mix: list[tuple[Rule, float]] = []  # set_mix
        self.position_shifts: dict[tuple, int] = {}  # shift_position
        self._random = random.Random(7)  # a soak's misbehaviour is the same from run to run
        self.rules_by_symbol: dict[str, Rule] = {}
        self.rules_by_remarks: dict[str, Rule] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._sequence = 0
        self.server = _QuietServer((host, port), _handler_for(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.feed = FakeFeed(self, host, feed_port)
        self._ticker: threading.Thread | None = None

    # --- running --------------------------------------------------------------------------

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.address + BASE_PATH

    @property
    def login_url(self) -> str:
        return self.address + "/_fake/login"

    def start(self) -> "FakeNoren":
        # A short poll interval: stop() (shutdown) waits for up to one interval.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-noren", daemon=True)
        self._thread.start()
        self.feed.start()
        self._ticker = threading.Thread(target=self._tick, name="fake-noren-ticker", daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a TIMEOUT, and the ticker
        self.feed.stop()
        self.server.shutdown()
        self.server.server_close()
        for thread in (self._thread, self._ticker):
            if thread:
                thread.join(timeout=5)

    def _tick(self) -> None:
        while not self._stopping.wait(TICK_S):
            self.advance()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def settings(self, oauth: bool = False) -> dict:
        """The SHOONYA_* settings that point orderdesk at this fake, legacy or OAuth."""
        a = self.account
        values = {"SHOONYA_BASE_URL": self.base_url, "SHOONYA_OAUTH_URL": self.login_url,
                  "SHOONYA_WS_URL": self.feed.url, "SHOONYA_USER_ID": a.user_id, "SHOONYA_ACCOUNT_ID": a.account_id}
        if oauth:
            values.update(SHOONYA_CLIENT_ID=a.client_id, SHOONYA_SECRET=a.secret, SHOONYA_PASSWORD="",
                          SHOONYA_TOTP_SECRET="", SHOONYA_VENDOR_CODE="", SHOONYA_API_KEY="", SHOONYA_IMEI="")
        else:
            values.update(SHOONYA_CLIENT_ID="", SHOONYA_SECRET="", SHOONYA_PASSWORD=a.password,
                          SHOONYA_TOTP_SECRET=a.totp_secret, SHOONYA_VENDOR_CODE=a.vendor_code,
                          SHOONYA_API_KEY=a.api_key, SHOONYA_IMEI=a.imei)
        return values

    # --- control --------------------------------------------------------------------------

    def set_behaviour(self, behaviour: Behaviour | str, *, symbol: str | None = None, remarks: str | None = None,
                      **options) -> Rule:
        """For one symbol, one order (by remarks = our command id), or (neither) every order."""
        rule = Rule(Behaviour(behaviour), **options)
        with self._lock:
            if remarks is not None:
                self.rules_by_remarks[remarks] = rule
            elif symbol is not None:
                self.rules_by_symbol[symbol] = rule
            else:
                self.default_rule = rule
        return rule

    def list_scrip(self, symbol: str, token: str, exchange: str = "NSE") -> None:
        """Give an instrument a token, as the symbol master does, for GetQuotes."""
        with self._lock:
            self.scrip_tokens[(exchange, token)] = symbol

    def _quote(self, exch: str, token: str) -> dict:
        with self._lock:
            tsym = self.scrip_tokens.get((exch, token))
            price = self.last_prices.get((exch, tsym)) if tsym else None
            if price is None:
                return {"request_time": _noren_time(), "stat": "Not_Ok", "emsg": NO_DATA}
            if self.quote_mixups:
                self.quote_mixups -= 1
                other = next(((e, t) for (e, t), s in sorted(self.scrip_tokens.items()) if t != token), (exch, "0"))
                exch, token, tsym = other[0], other[1], self.scrip_tokens.get(other, "OTHER-EQ")
        return {"request_time": _noren_time(), "stat": "Ok", "exch": exch, "tsym": tsym, "token": token,
                "lp": _money(price), "ls": "1", "ti": "0.05"}

    def set_last_price(self, symbol: str, price, exchange: str = "NSE") -> None:
        with self._lock:
            self.last_prices[(exchange, symbol)] = Decimal(str(price))

    def expire_sessions(self) -> None:
        """Every token issued so far stops working (as at the broker's daily session end)."""
        with self._lock:
            self.tokens.clear()

    def issue_auth_code(self) -> str:
        """What the OAuth login page hands the user after they log in."""
        code = secrets.token_hex(8)
        with self._lock:
            self.auth_codes.add(code)
        return code

    def calls_to(self, route: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.route == route]

    def order_for(self, remarks: str) -> FakeOrder | None:
        with self._lock:
            return next((o for o in self.orders if o.fields.get("remarks") == remarks), None)

    def hide_from_book(self, remarks: str) -> None:
        """OrderBook stops listing this order, as a lagging book might; SingleOrdHist still has it."""
        with self._lock:
            self.order_for(remarks).hidden = True

    def place_by_hand(self, symbol: str, side: str = "BUY", qty: int = 1, product: str = "MIS",
                      exchange: str = "NSE", remarks: str = "") -> FakeOrder:
        """An order the trader placed in the broker's own app, not through orderdesk: at
        market, it fills after the delay like any other."""
        a = self.account
        fields = {"uid": a.user_id, "actid": a.account_id, "exch": exchange, "tsym": symbol, "qty": str(qty),
                  "prd": PRODUCT_CODES[product], "trantype": "B" if side == "BUY" else "S", "prctyp": "MKT",
                  "ret": "DAY", "prc": "0", "remarks": remarks}
        return self._record_order(fields, Rule(), self.last_prices[(exchange, symbol)])

    def fill_late(self, remarks: str, qty: int) -> None:
        """A fill the exchange reports after the order was CANCELED (the cancel crossed it)."""
        with self._lock:
            order = self.order_for(remarks)
            order.fillshares, order.avgprc = min(order.qty, order.fillshares + qty), order.fill_price
            row = self._row(order, rpt="Fill")
            order.history.append(row)
            message = self.feed.order_message(order, "Fill", row, fill_qty=qty)
        self.feed.announce([message])

    def shift_position(self, symbol: str, qty: int, product: str = "MIS", exchange: str = "NSE") -> None:
        """A position the day's order book does not explain (carried over, or an exchange
        adjustment): PositionBook shows `qty` more of it."""
        with self._lock:
            key = (exchange, symbol, PRODUCT_CODES[product])
            self.position_shifts[key] = self.position_shifts.get(key, 0) + qty

    def complete(self, remarks: str) -> None:
        """Fill the rest of an order now (e.g. after a PARTIAL)."""
        with self._lock:
            order = self.order_for(remarks)
            filled_before = order.fillshares
            order.status, order.fillshares, order.avgprc, order.settled = "COMPLETE", order.qty, order.fill_price, True
            row = self._row(order, rpt="Fill")
            order.history.append(row)
            message = self.feed.order_message(order, "Fill", row, fill_qty=order.qty - filled_before)
        self.feed.announce([message])

    def advance(self) -> None:
        """Move due orders on (a ticker does it every TICK_S, and every read before it answers)."""
        with self._lock:
            now = time.monotonic()
            messages = [self._step(order) for order in self.orders
                        if not order.settled and now - order.placed_at >= self.fill_delay_s]
        self.feed.announce(messages)

    def token_kind(self, token: str) -> str | None:
        with self._lock:
            return self.tokens.get(token or "")

    # --- the routes -------------------------------------------------------------------------

    def handle(self, route: str, headers: dict, body: str) -> tuple[int, str, str]:
        """(HTTP status, content type, body) for one POST."""
        jdata, jkey = parse_body(body)
        with self._lock:
            self.calls.append(Call(route, headers, body, jdata, jkey))
        if jdata is None:
            return self._json({"stat": "Not_Ok", "emsg": "Invalid Input : jData is missing or not JSON"})
        if route == "QuickAuth":
            return self._json(self._quick_auth(jdata))
        if route == "GenAcsTok":
            return self._json(self._gen_acs_tok(jdata))
        if not self._authorised(headers, jkey):
            return self._json({"stat": "Not_Ok", "emsg": SESSION_EXPIRED})
        if route == "PlaceOrder":
            return self._place(jdata)
        if route == "Limits":
            return self._json({"request_time": _noren_time(), "stat": "Ok", "actid": self.account.account_id,
                               "cash": "100000.00", "payin": "0.00", "marginused": "0.00", "brkcollamt": "0.00"})
        if route == "GetQuotes":
            return self._json(self._quote(str(jdata.get("exch", "")), str(jdata.get("token", ""))))
        if route == "ModifyOrder":
            return self._json(self._modify(jdata))
        if route == "CancelOrder":
            return self._json(self._cancel(str(jdata.get("norenordno", ""))))
        if route == "OrderBook":
            return self._json(self._book())
        if route == "SingleOrdHist":
            return self._json(self._history(str(jdata.get("norenordno", ""))))
        if route == "PositionBook":
            return self._json(self._positions())
        if route == "Logout":
            self._logout(headers, jkey)
            return self._json({"stat": "Ok", "request_time": _noren_time()})
        return 404, "text/plain", f"no route {route}"

    def _json(self, payload, status: int = 200) -> tuple[int, str, str]:
        return status, "application/json", json.dumps(payload)

    def _authorised(self, headers: dict, jkey: str | None) -> bool:
        bearer = headers.get("authorization", "")
        with self._lock:
            if bearer.startswith("Bearer "):
                return self.tokens.get(bearer[len("Bearer "):]) == "OAUTH"
            return jkey is not None and self.tokens.get(jkey) == "LEGACY"

    def _logout(self, headers: dict, jkey: str | None) -> None:
        bearer = headers.get("authorization", "")
        token = bearer[len("Bearer "):] if bearer.startswith("Bearer ") else jkey
        with self._lock:
            self.tokens.pop(token or "", None)

    def _new_token(self, kind: str) -> str:
        token = secrets.token_hex(32)
        with self._lock:
            self.tokens[token] = kind
        return token

    def _quick_auth(self, jdata: dict) -> dict:
        a = self.account
        failure = None
        if jdata.get("uid") != a.user_id or jdata.get("pwd") != _sha256(a.password):
            failure = "Invalid Input : Wrong Password"
        elif not pyotp.TOTP(a.totp_secret).verify(str(jdata.get("factor2", "")), valid_window=1):
            failure = "Invalid Input : Invalid OTP"
        elif jdata.get("vc") != a.vendor_code or jdata.get("appkey") != _sha256(f"{a.user_id}|{a.api_key}"):
            failure = "Invalid Input : Invalid Vendor code or App Key"
        if failure:
            return {"request_time": _noren_time(), "stat": "Not_Ok", "emsg": failure}
        return {"request_time": _noren_time(), "stat": "Ok", "susertoken": self._new_token("LEGACY"),
                "lastaccesstime": str(int(time.time())), "actid": a.account_id, "uname": "FAKE USER",
                "exarr": ["NSE", "BSE", "NFO"], "brkname": "FAKE"}

    def _gen_acs_tok(self, jdata: dict) -> dict:
        a = self.account
        code = str(jdata.get("code", ""))
        with self._lock:
            known = code in self.auth_codes
            self.auth_codes.discard(code)  # a code is good for one exchange
        if not known or jdata.get("checksum") != _sha256(a.client_id + a.secret + code):
            return {"stat": "Not_Ok", "emsg": "Invalid Input : Invalid code or checksum"}
        return {"stat": "Ok", "access_token": self._new_token("OAUTH"), "refresh_token": secrets.token_hex(32),
                "USERID": a.user_id, "actid": a.account_id, "susertoken": secrets.token_hex(32)}

    def set_mix(self, weights: dict[Behaviour | str, float], **options) -> None:
        """Orders without a rule of their own misbehave at random: `{"ACCEPT": 0.9, "GARBAGE": 0.1}`
        (for soaks; `options` as in set_behaviour, e.g. sleep_s for TIMEOUT)."""
        rules = [(Rule(Behaviour(b), **options), float(w)) for b, w in weights.items()]
        with self._lock:
            self.mix = rules

    def _rule_for(self, fields: dict) -> Rule:
        with self._lock:
            rule = self.rules_by_remarks.get(fields.get("remarks") or "") or self.rules_by_symbol.get(fields["tsym"])
            if rule is None and self.mix:
                rules, weights = zip(*self.mix, strict=True)
                rule = self._random.choices(rules, weights)[0]
            return rule or self.default_rule

    def _place(self, jdata: dict) -> tuple[int, str, str]:
        missing = [k for k in ("uid", "actid", "exch", "tsym", "qty", "prd", "trantype", "prctyp", "ret")
                   if not jdata.get(k)]
        if missing:
            return self._json({"stat": "Not_Ok", "emsg": f"Invalid Input : Missing {missing[0]}"})
        fields = dict(jdata, tsym=unquote_plus(str(jdata["tsym"])))
        rule = self._rule_for(fields)
        if rule.behaviour == Behaviour.EXPIRE_SESSION:
            return self._json({"stat": "Not_Ok", "emsg": SESSION_EXPIRED})
        if rule.behaviour == Behaviour.REJECT:
            return self._json({"request_time": _noren_time(), "stat": "Not_Ok", "emsg": rule.emsg})
        market = self.last_prices.get((fields["exch"], fields["tsym"]))
        if market is None:
            return self._json({"request_time": _noren_time(), "stat": "Not_Ok", "emsg": INVALID_SYMBOL})
        placed = rule.record or rule.behaviour not in (Behaviour.HTTP_500, Behaviour.GARBAGE)
        order = self._record_order(fields, rule, market) if placed else None
        if rule.behaviour == Behaviour.TIMEOUT:
            self._stopping.wait(rule.sleep_s)  # the client has given up by now
        elif rule.behaviour == Behaviour.HTTP_500:
            return 500, "text/html", "<html><body>500 Internal Server Error</body></html>"
        elif rule.behaviour == Behaviour.GARBAGE:
            return 200, "text/html", GARBAGE_BODY
        elif rule.behaviour == Behaviour.OK_WITHOUT_NUMBER:
            return self._json({"request_time": _noren_time(), "stat": "Ok"})
        elif rule.behaviour == Behaviour.HANG_UP:
            return HANG_UP_REPLY
        return self._json({"request_time": _noren_time(), "stat": "Ok", "norenordno": order.norenordno})

    def _cancel(self, norenordno: str) -> dict:
        with self._lock:
            order = next((o for o in self.orders if o.norenordno == norenordno), None)
            if order is None:
                return {"request_time": _noren_time(), "stat": "Not_Ok", "emsg": "Rejected : ORA:Order not found"}
            if order.status != "OPEN":
                return {"request_time": _noren_time(), "stat": "Not_Ok",
                        "emsg": f"Rejected : ORA:Order is in {order.status} status"}
            order.status, order.settled = "CANCELED", True
            row = self._row(order, rpt="Canceled")
            order.history.append(row)
            message = self.feed.order_message(order, "Canceled", row)
        self.feed.announce([message])
        return {"request_time": _noren_time(), "stat": "Ok", "result": norenordno}

    def _modify(self, jdata: dict) -> dict:
        with self._lock:
            order = next((o for o in self.orders if o.norenordno == str(jdata.get("norenordno", ""))), None)
            if order is None:
                return {"request_time": _noren_time(), "stat": "Not_Ok", "emsg": "Rejected : ORA:Order not found"}
            if order.status != "OPEN":
                return {"request_time": _noren_time(), "stat": "Not_Ok",
                        "emsg": f"Rejected : ORA:Order is in {order.status} status"}
            qty = int(jdata.get("qty") or order.qty)
            if qty <= order.fillshares:
                return {"request_time": _noren_time(), "stat": "Not_Ok",
                        "emsg": "Rejected : Quantity cannot be less than the filled quantity"}
            order.fields.update({k: jdata[k] for k in ("qty", "prc", "trgprc", "prctyp") if k in jdata})
            if order.fields.get("prctyp") in ("LMT", "SL-LMT") and Decimal(str(order.fields.get("prc") or 0)):
                order.fill_price = Decimal(str(order.fields["prc"]))
            row = self._row(order, rpt="Replaced")
            order.history.append(row)
            message = self.feed.order_message(order, "Replaced", row)
        self.feed.announce([message])
        return {"request_time": _noren_time(), "stat": "Ok", "result": order.norenordno}

    def _record_order(self, fields: dict, rule: Rule, market: Decimal) -> FakeOrder:
        prctyp = fields["prctyp"]
        if prctyp in ("LMT", "SL-LMT") and Decimal(str(fields.get("prc") or 0)):
            fill_price = Decimal(str(fields["prc"]))
        elif prctyp == "SL-MKT" and fields.get("trgprc") not in (None, "", "None"):
            fill_price = Decimal(str(fields["trgprc"]))
        else:
            fill_price = market
        with self._lock:
            self._sequence += 1
            order = FakeOrder(norenordno=f"{datetime.now():%y%m%d}{self._sequence:08d}", fields=fields, rule=rule,
                              fill_price=fill_price, placed_at=time.monotonic())
            acknowledged = self._row(order, status="PENDING", rpt="NewAck")
            opened = self._row(order, status="OPEN", rpt="New")
            order.history += [acknowledged, opened]
            self.orders.append(order)
            messages = [self.feed.order_message(order, "NewAck", acknowledged),
                        self.feed.order_message(order, "New", opened)]
        self.feed.announce(messages)
        return order

    def _step(self, order: FakeOrder) -> dict:
        """One automatic step of an order; returns its feed message."""
        filled_before = order.fillshares
        behaviour = order.rule.behaviour
        if behaviour == Behaviour.REJECT_LATER:
            order.status, order.rejreason = "REJECTED", order.rule.reason or DEFAULT_LATE_REJECT
        elif behaviour == Behaviour.CANCEL:
            if order.rule.fill_qty:
                order.fillshares, order.avgprc = order.rule.fill_qty, order.fill_price
            order.status, order.rejreason = "CANCELED", order.rule.reason or DEFAULT_CANCEL_REASON
        elif behaviour == Behaviour.PARTIAL:
            order.fillshares = order.rule.fill_qty or max(1, order.qty // 2)
            order.avgprc = order.fill_price
        else:
            order.status, order.fillshares, order.avgprc = "COMPLETE", order.qty, order.fill_price
        order.settled, order.stepped_at = True, time.time()
        rpt = {"COMPLETE": "Fill", "REJECTED": "Rejected", "CANCELED": "Canceled"}.get(order.status, "Fill")
        row = self._row(order, rpt=rpt)
        order.history.append(row)
        return self.feed.order_message(order, rpt, row, fill_qty=order.fillshares - filled_before)

    def _row(self, order: FakeOrder, status: str | None = None, rpt: str = "") -> dict:
        f = order.fields
        row = {"stat": "Ok", "norenordno": order.norenordno, "uid": f["uid"], "actid": f["actid"],
               "exch": f["exch"], "tsym": f["tsym"], "qty": str(order.qty), "trantype": f["trantype"],
               "prctyp": f["prctyp"], "ret": f["ret"], "prd": f["prd"], "prc": f.get("prc", "0"),
               "dscqty": f.get("dscqty", "0"), "status": status or order.status, "rpt": rpt,
               "remarks": f.get("remarks") or "", "norentm": _noren_time(), "ordenttm": str(int(time.time()))}
        if f.get("trgprc") not in (None, "", "None"):
            row["trgprc"] = f["trgprc"]
        if row["status"] != "PENDING":
            row["exchordid"] = f"1100000{order.norenordno[-8:]}"
            row["exch_tm"] = datetime.now().strftime("%d-%m-%Y %H:%M:%S")
        if order.fillshares and row["status"] != "PENDING":
            row["fillshares"] = str(order.fillshares)
            row["avgprc"] = _money(order.avgprc)
        if order.rejreason:
            row["rejreason"] = order.rejreason
        return row

    def _book(self):
        self.advance()
        with self._lock:
            rows = [self._row(o) for o in reversed(self.orders) if not o.hidden]  # newest first, as Noren lists them
        return rows or {"stat": "Not_Ok", "request_time": _noren_time(), "emsg": NO_DATA}

    def _history(self, norenordno: str):
        self.advance()
        with self._lock:
            order = next((o for o in self.orders if o.norenordno == norenordno), None)
            if order is None:
                return {"stat": "Not_Ok", "request_time": _noren_time(), "emsg": NO_DATA}
            return list(reversed(order.history))  # newest first

    def _positions(self):
        self.advance()
        with self._lock:
            books: dict[tuple, tuple] = {}
            for o in self.orders:
                if not o.fillshares:
                    continue
                f = o.fields
                key = (f["exch"], f["tsym"], f["prd"])
                signed = o.fillshares if f["trantype"] == "B" else -o.fillshares
                books[key] = add_fill(*books.get(key, (0, Decimal(0), Decimal(0))), signed, o.avgprc)
            for key, shift in self.position_shifts.items():
                qty, avg, rpnl = books.get(key, (0, Decimal(0), Decimal(0)))
                books[key] = (qty + shift, avg or self.last_prices.get(key[:2], Decimal(0)), rpnl)
            rows = []
            for (exch, tsym, prd), (qty, avg, rpnl) in books.items():
                lp = self.last_prices.get((exch, tsym), Decimal(0))
                avg = avg if qty else Decimal(0)  # Noren shows a closed position's average as 0
                rows.append({"stat": "Ok", "uid": self.account.user_id, "actid": self.account.account_id,
                             "exch": exch, "tsym": tsym, "prd": prd, "netqty": str(qty),
                             "netavgprc": _money(avg), "lp": _money(lp), "rpnl": _money(rpnl),
                             "urmtom": _money((lp - avg) * qty)})
        return rows or {"stat": "Not_Ok", "request_time": _noren_time(), "emsg": NO_DATA}

    # --- HTTP control, for demos -------------------------------------------------------------

    def _control_feed(self, action: str) -> None:
        """normal, stall, refuse (logins silently), drop (every connection), malformed (frames)."""
        modes = {"normal": FeedMode.NORMAL, "stall": FeedMode.STALL, "refuse": FeedMode.REFUSE_SILENTLY}
        if action in modes:
            self.feed.mode = modes[action]
        elif action == "drop":
            self.feed.drop()
        elif action == "malformed":
            self.feed.send_malformed()
        else:
            raise ValueError(f"feed action {action!r}: one of {sorted([*modes, 'drop', 'malformed'])}")

    def control(self, method: str, path: str, query: dict, body: str) -> tuple[int, str, str]:
        action = path[len("/_fake/"):]
        if method == "GET" and action == "login":
            code = self.issue_auth_code()
            page = (f"Fake Noren login for client id {query.get('client_id', ['?'])[0]}.\n"
                    f"Your auth code: {code}\n(paste it into `manage.py shoonya_login`)\n")
            return 200, "text/plain", page
        if method == "GET" and action == "orders":
            self.advance()
            with self._lock:
                return self._json([self._row(o) for o in self.orders])
        try:
            payload = json.loads(body or "{}")
        except ValueError:
            return 400, "text/plain", "body must be JSON"
        try:
            if method == "POST" and action == "behaviour":
                options = {k: v for k, v in payload.items() if k not in ("behaviour", "symbol", "remarks")}
                self.set_behaviour(payload["behaviour"], symbol=payload.get("symbol"),
                                   remarks=payload.get("remarks"), **options)
            elif method == "POST" and action == "price":
                self.set_last_price(payload["symbol"], payload["price"], payload.get("exchange", "NSE"))
            elif method == "POST" and action == "expire":
                self.expire_sessions()
            elif method == "POST" and action == "feed":
                self._control_feed(payload["action"])
            else:
                return 404, "text/plain", f"no control route {method} {action}"
        except (KeyError, TypeError, ValueError) as exc:
            return 400, "text/plain", f"bad control request: {exc}"
        return self._json({"ok": True})


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that went away (a worker killed mid-request, say) is no error of ours."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(fake: FakeNoren):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session expects
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def _reply(self, status: int, content_type: str, body: str) -> None:
            if (status, content_type, body) == HANG_UP_REPLY:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = body.encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def _body(self) -> str:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length).decode("utf-8", errors="replace") if length else ""

        def do_POST(self):
            parts = urlsplit(self.path)
            body = self._body()
            if parts.path.startswith("/_fake/"):
                self._reply(*fake.control("POST", parts.path, parse_qs(parts.query), body))
                return
            route = parts.path.rstrip("/").rsplit("/", 1)[-1]
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._reply(*fake.handle(route, headers, body))

        def do_GET(self):
            parts = urlsplit(self.path)
            if parts.path.startswith("/_fake/"):
                self._reply(*fake.control("GET", parts.path, parse_qs(parts.query), ""))
            else:
                self._reply(405, "text/plain", "Noren routes take POST")

        def log_message(self, format, *args):  # noqa: A002 - no request lines (and no tokens) on stderr
            return

    return Handler
