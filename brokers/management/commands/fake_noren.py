"""A fake Noren OMS for demos: `manage.py fake_noren --port 9800`, then point orderdesk at it
with the SHOONYA_* lines it prints."""

import signal
import time

from django.core.management.base import BaseCommand

from brokers.fake_noren import Behaviour, FakeNoren


class Command(BaseCommand):
    help = "Run a fake Noren OMS (Shoonya API) on this machine, for demos."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9800)
        parser.add_argument("--feed-port", type=int, default=9801, help="the order feed's websocket port")
        parser.add_argument("--fill-delay", type=float, default=1.0, help="seconds an order stays OPEN")
        parser.add_argument("--oauth", action="store_true", help="print OAuth settings instead of QuickAuth ones")

    def handle(self, *args, host, port, feed_port, fill_delay, oauth, **options):
        fake = FakeNoren(host=host, port=port, fill_delay_s=fill_delay, feed_port=feed_port).start()
        self.stdout.write(f"fake Noren OMS at {fake.base_url}, order feed at {fake.feed.url} "
                          "(demo credentials; Ctrl-C stops it)\n")
        self.stdout.write("environment for orderdesk:\n  export ORDERDESK_BROKER=shoonya\n")
        for name, value in fake.settings(oauth=oauth).items():
            if value:
                self.stdout.write(f"  export {name}='{value}'\n")
        self.stdout.write(
            "control (curl):\n"
            f"  curl -s -X POST {fake.address}/_fake/behaviour"
            f" -d '{{\"behaviour\": \"REJECT_LATER\", \"symbol\": \"SBIN-EQ\"}}'\n"
            f"  curl -s -X POST {fake.address}/_fake/price -d '{{\"symbol\": \"RELIANCE-EQ\", \"price\": \"2990\"}}'\n"
            f"  curl -s -X POST {fake.address}/_fake/expire\n"
            f"  curl -s {fake.address}/_fake/orders\n"
            f"  curl -s -X POST {fake.address}/_fake/feed -d '{{\"action\": \"drop\"}}'"
            "   (feed actions: normal stall refuse drop malformed)\n"
            f"  behaviours: {' '.join(b.value for b in Behaviour)}\n")

        def stop(signum, frame):
            raise KeyboardInterrupt

        # Ctrl-C or a plain `kill`; SIGINT is installed too, as a background job starts with it ignored.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stdout.write("fake Noren OMS stopped\n")
        finally:
            fake.stop()
