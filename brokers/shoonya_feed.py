"""Shoonya's push feed of order updates: the Noren websocket (SHOONYA_WS_URL).

After connecting: log in with the stored session (`t:"a"` with an OAuth access token, ack
`ak`; `t:"c"` with a QuickAuth susertoken, ack `ck`), then subscribe to the account's order
updates (`t:"o"`, ack `ok`). Heartbeats are websocket ping frames carrying `{"t":"h"}`, as the
official client sends them. A login that is not acknowledged within
SHOONYA_WS_LOGIN_TIMEOUT_S (a refused login can leave the socket open and silent), or a
connection that shows no life (no frame, no reply to a heartbeat) for ORDER_FEED_STALE_S,
is closed and opened again after a pause that doubles up to a minute.

Nothing here logs a token: the login message is never logged, and a frame is logged only
as its length and type.
"""

import json
import logging
import time

from django.conf import settings
from django.db import close_old_connections
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from . import shoonya_session as sessions
from .base import FeedListener, OrderFeed
from .models import SessionKind
from .shoonya import SessionUnavailable, order_update_entry

log = logging.getLogger("orderdesk.brokers.shoonya.feed")

HEARTBEAT = '{"t":"h"}'
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 60.0
STEADY_S = 30.0  # connected at least this long: the next reconnect starts again at the shortest pause
RECV_SLICE_S = 0.5  # the listener is asked whether to go on at least this often


class FeedRefused(Exception):
    """No usable login or subscription (the message says why; never a token)."""


def login_message(session: sessions.Session) -> dict:
    if session.kind == SessionKind.OAUTH:
        return {"t": "a", "uid": sessions.user_id(), "actid": sessions.account_id(), "accesstoken": session.token,
                "source": "API"}
    return {"t": "c", "uid": sessions.user_id(), "actid": sessions.account_id(), "susertoken": session.token,
            "source": "API"}


def _decode(frame) -> dict | None:
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


class NorenOrderFeed(OrderFeed):
    def __init__(self, broker):
        self.broker = broker  # a ShoonyaBroker of the feed's own (its session, its logins)

    def run(self, listener: FeedListener) -> None:
        backoff = BACKOFF_MIN_S
        while listener.running():
            started = time.monotonic()
            try:
                self._connection(listener)
                reason = "closed"
            except FeedRefused as exc:
                reason = str(exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - the feed must outlive anything it meets
                log.exception("shoonya feed: unexpected error")
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                close_old_connections()
            listener.disconnected(reason[:255])
            if time.monotonic() - started >= STEADY_S:
                backoff = BACKOFF_MIN_S
            resume = time.monotonic() + backoff
            while time.monotonic() < resume and listener.running():
                time.sleep(min(RECV_SLICE_S, max(0.0, resume - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def probe(self) -> str:
        """Connect, log in and subscribe once, then close (manage.py shoonya_check). Returns
        what happened; raises FeedRefused (or a network error) saying why not."""
        listener = _Probe()
        self._connection(listener)
        return "logged in and subscribed to order updates"

    def _connection(self, listener: FeedListener) -> None:
        try:
            session = self.broker.feed_session()
        except SessionUnavailable as exc:
            raise FeedRefused(str(exc)) from None
        url = settings.SHOONYA_WS_URL
        login_timeout = settings.SHOONYA_WS_LOGIN_TIMEOUT_S
        # Our own heartbeats (their payload is Noren's), so the library's are off.
        with connect(url, open_timeout=login_timeout, ping_interval=None, close_timeout=1, proxy=None,
                     max_size=2**22) as ws:
            ws.send(json.dumps(login_message(session)))
            ack = "ak" if session.kind == SessionKind.OAUTH else "ck"
            reply = self._expect(ws, ack, login_timeout, "login")
            if str(reply.get("s", "")).upper() != "OK":
                raise FeedRefused(f"login refused: {str(reply.get('emsg') or reply.get('s') or '')[:120]}")
            ws.send(json.dumps({"t": "o", "actid": sessions.account_id()}))
            self._expect(ws, "ok", login_timeout, "order subscription")
            listener.connected()
            self._listen(ws, listener)

    def _expect(self, ws, kind: str, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = _decode(ws.recv(timeout=remaining))
            except TimeoutError:
                break
            if message is not None and message.get("t") == kind:
                return message
        raise FeedRefused(f"no {what} acknowledgement ({kind}) within {timeout:g}s")

    def _listen(self, ws, listener: FeedListener) -> None:
        heartbeat_s, stale_s = settings.SHOONYA_WS_HEARTBEAT_S, settings.ORDER_FEED_STALE_S
        last_life = next_ping = time.monotonic()
        pong = None
        while listener.running():
            now = time.monotonic()
            if pong is not None and pong.is_set():
                last_life, pong = now, None
                listener.heartbeat()
            if now - last_life > stale_s:
                raise FeedRefused(f"no frame and no heartbeat reply for {now - last_life:.0f}s")
            if now >= next_ping:
                pong = ws.ping(HEARTBEAT) if pong is None else pong  # still waiting: one at a time
                next_ping = now + heartbeat_s
            try:
                frame = ws.recv(timeout=max(0.01, min(RECV_SLICE_S, next_ping - time.monotonic())))
            except TimeoutError:
                continue
            last_life = time.monotonic()
            self._handle(frame, listener)

    def _handle(self, frame, listener: FeedListener) -> None:
        message = _decode(frame)
        if message is None:
            log.warning("shoonya feed: ignored a malformed frame (%s, %d bytes)", type(frame).__name__, len(frame))
            return
        kind = message.get("t")
        if kind == "om":
            entry = order_update_entry(message)
            if entry is None:
                log.warning("shoonya feed: ignored an order update without an order number")
                return
            listener.update(entry)
        elif kind in ("ak", "ck") and str(message.get("s", "")).upper() != "OK":
            raise FeedRefused("the broker ended the feed's login")
        else:
            listener.heartbeat()


class _Probe(FeedListener):
    """Stops at the first sign of a working feed."""

    def __init__(self):
        self.done = False

    def connected(self) -> None:
        self.done = True

    def running(self) -> bool:
        return not self.done
