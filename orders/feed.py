"""The broker's push feed of order updates, listened to in `manage.py orderwatcher`.

One listener at a time, under its own lease (django-q2's watcher slices never open the
socket). Every pushed update goes through the watcher's own reconciliation code
(OrderWatcher.apply_update), and every (re)connect is followed by a full order-book read, so
nothing that happened while disconnected is lost. While the feed is healthy the watcher's
REST poll slows down to a reconciliation (orders.watcher.pass_period).
"""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from brokers.base import BookEntry, FeedListener
from brokers.registry import new_broker

from . import feedstate, leases
from .watcher import OrderWatcher

log = logging.getLogger("orderdesk.feed")

TOUCH_S = 2.0  # the lease renewal and the recorded sign of life, at most this often
WAIT_FOR_LEASE_S = 5.0  # another process listens: look again this often


class Listener(FeedListener):
    def __init__(self, owner: str, broker_name: str, stop: threading.Event, watcher: OrderWatcher):
        self.owner, self.broker_name, self.stop = owner, broker_name, stop
        self.watcher = watcher
        self.lost = False
        self._touched = time.monotonic()
        self._message_at = None  # an update since the last touch

    def connected(self) -> None:
        feedstate.record_connected(self.broker_name, self.owner)
        log.info("order feed: connected to %s", self.broker_name)
        try:
            self.watcher.reconcile_book()  # what happened while we were not listening
        except Exception:  # noqa: BLE001 - the next pass reads the book again
            log.exception("order feed: the order-book read after connecting failed")
        self._touched = time.monotonic()

    def update(self, entry: BookEntry) -> None:
        try:
            self.watcher.apply_update(entry)
        except Exception:  # noqa: BLE001 - one update must not stop the feed; the next pass has it
            log.exception("order feed: update for %s failed", entry.broker_order_id)
        self._message_at = timezone.now()
        self.heartbeat()

    def heartbeat(self) -> None:
        if time.monotonic() - self._touched >= TOUCH_S:
            self._touch()

    def running(self) -> bool:
        if self.stop.is_set() or self.lost:
            return False
        if time.monotonic() - self._touched >= TOUCH_S * 2:  # quiet: still renew the lease
            self._touch(alive=False)
        return not self.lost

    def disconnected(self, reason: str) -> None:
        log.warning("order feed: disconnected from %s: %s", self.broker_name, reason)
        try:
            feedstate.record_disconnected(reason)
        except Exception:  # noqa: BLE001
            log.exception("order feed: could not record the disconnection")

    def _touch(self, alive: bool = True) -> None:
        self._touched = time.monotonic()
        try:
            close_old_connections()
            if not leases.renew(feedstate.FEED_NAME, self.owner):
                log.warning("order feed: %s lost its lease; stopping", self.owner)
                self.lost = True
                return
            if alive:
                feedstate.record_seen(self._message_at)
                self._message_at = None
        except Exception:  # noqa: BLE001 - the database away: the lease runs out, another takes over
            log.exception("order feed: could not renew the lease")


def listen(owner: str, stop: threading.Event, broker=None) -> bool | None:
    """Hold the feed's lease and listen until `stop` or the lease is lost. None: the broker
    has no feed (or ORDER_FEED is off); False: another process listens."""
    broker = broker or new_broker()
    feed = broker.order_feed() if settings.ORDER_FEED else None
    if feed is None:
        return None
    if leases.acquire(feedstate.FEED_NAME, owner) is None:
        return False
    listener = Listener(owner, settings.ORDERDESK_BROKER, stop, OrderWatcher(broker))
    try:
        feedstate.record_listening(settings.ORDERDESK_BROKER, owner)
        feed.run(listener)
    finally:
        try:
            feedstate.record_disconnected("stopped")
            leases.release(feedstate.FEED_NAME, owner)
        except Exception:  # noqa: BLE001 - it expires on its own
            log.exception("order feed: could not release the lease")
        connection.close()  # this thread's own: nothing else would close it
    return True


def start_listener(owner: str, stop: threading.Event | None = None) -> threading.Thread | None:
    """The feed thread of `manage.py orderwatcher`: listens whenever it can take the lease."""
    if not settings.ORDER_FEED:
        return None
    stop = stop or threading.Event()

    def loop():
        while not stop.is_set():
            try:
                listened = listen(owner, stop)
            except Exception:  # noqa: BLE001 - the broker or the database away: keep trying
                log.exception("order feed: listening failed")
                listened = True
            finally:
                close_old_connections()
            if listened is None:
                log.info("order feed: %s pushes no order updates; the watcher polls", settings.ORDERDESK_BROKER)
                return
            stop.wait(WAIT_FOR_LEASE_S)

    thread = threading.Thread(target=loop, name="order-feed", daemon=True)
    thread.start()
    return thread
