from django.core.management.base import BaseCommand, CommandError

from orderdesk.network import parse_networks
from orders.models import TRADINGVIEW_SENDER_IPS, Strategy


class Command(BaseCommand):
    help = "Create a strategy and print its webhook secret (once: only a digest is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--secret", help="use this secret (at least 24 characters) instead of a generated one")
        parser.add_argument("--disabled", action="store_true", help="create it disabled")
        parser.add_argument("--allowed-ips", default="",
                            help="accept its alerts only from these IPs/CIDRs (comma-separated; 'tradingview' for "
                                 "TradingView's sender addresses); default: any")

    def handle(self, name, secret=None, disabled=False, allowed_ips="", **options):
        max_length = Strategy._meta.get_field("name").max_length
        if not name.strip() or name != name.strip() or len(name) > max_length:
            # The webhook strips the name it is sent: " demo" could never authenticate.
            raise CommandError(f"a strategy name is 1 to {max_length} characters without surrounding spaces")
        if Strategy.objects.filter(name=name).exists():
            raise CommandError(f"strategy {name!r} already exists")
        if allowed_ips.strip().lower() == "tradingview":
            allowed_ips = ", ".join(TRADINGVIEW_SENDER_IPS)
        try:
            parse_networks(allowed_ips)
        except ValueError as exc:
            raise CommandError(f"--allowed-ips: {exc}") from None
        strategy = Strategy(name=name, enabled=not disabled, allowed_ips=allowed_ips)
        try:
            secret = strategy.set_secret(secret)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        strategy.save()
        self.stdout.write(f"strategy {name} created; webhook secret (shown once): {secret}")
        if allowed_ips:
            self.stdout.write(f"alerts accepted only from: {allowed_ips}")
