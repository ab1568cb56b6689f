import logging
import math
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from orders.feed import start_listener
from orders.telegram_commands import start_reader
from orders.watcher import new_owner, run_watcher

log = logging.getLogger("orderdesk.watcher")


class Command(BaseCommand):
    help = ("Run the OrderWatcher in the foreground, under the same lease as the queued watcher, and listen "
            "to the broker's push feed of order updates (under a lease of its own).")

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: never)")
        parser.add_argument("--no-wait", action="store_true", help="exit if another watcher holds the lease")

    def handle(self, seconds=None, no_wait=False, **options):
        owner = new_owner("cli")
        if start_reader(owner):  # Telegram commands: one reader, under its own lease
            self.stdout.write("reading Telegram commands")
        stop_listening = threading.Event()
        if start_listener(owner, stop_listening):  # the push feed: one listener, under its own lease
            self.stdout.write("listening to the broker's order feed when it has one")
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        total = 0
        # One run holds the lease for the whole time (renewed every pass); if another watcher
        # holds it, or takes it over, wait for it (or exit with --no-wait).
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    passes = run_watcher(owner, remaining)
                except Exception:  # noqa: BLE001 - the database went away while taking the lease
                    if no_wait:
                        raise
                    # Keep waiting for it rather than exit: under `up`, one child that exits stops all.
                    log.exception("watcher %s could not take the lease; retrying", owner)
                    close_old_connections()
                    passes = None
                total += passes or 0
                if passes is None:
                    if no_wait:
                        self.stdout.write("another watcher holds the lease; exiting")
                        break
                    time.sleep(min(settings.WATCHER_INTERVAL_S, max(deadline - time.monotonic(), 0)))
        except KeyboardInterrupt:  # Ctrl-C in the foreground: a clean stop, not a traceback
            pass
        stop_listening.set()
        self.stdout.write(f"passes={total}")
