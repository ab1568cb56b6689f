import math
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from orders.watcher import new_owner, run_watcher


class Command(BaseCommand):
    help = "Run the OrderWatcher in the foreground, under the same lease as the queued watcher."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: never)")
        parser.add_argument("--no-wait", action="store_true", help="exit if another watcher holds the lease")

    def handle(self, seconds=None, no_wait=False, **options):
        owner = new_owner("cli")
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        total = 0
        # One run holds the lease for the whole time (renewed every pass); if another watcher
        # holds it, or takes it over, wait for it (or exit with --no-wait).
        while (remaining := deadline - time.monotonic()) > 0:
            passes = run_watcher(owner, remaining)
            total += passes
            if passes == 0:
                if no_wait:
                    self.stdout.write("another watcher holds the lease; exiting")
                    break
                time.sleep(min(settings.WATCHER_INTERVAL_S, max(deadline - time.monotonic(), 0)))
        self.stdout.write(f"passes={total}")
