"""Recompute every order and position from the audit trail and the fills ledger."""

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders import audit


def ist_midnight(value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=ZoneInfo(settings.TRADING_TZ))
    except ValueError:
        raise CommandError(f"--since {value!r}: a date as YYYY-MM-DD") from None


class Command(BaseCommand):
    help = ("Recompute every order's status, tag, broker id, filled quantity and average price from its audit "
            "events and fills, every position from the fills, and every event's hash chain; print each mismatch "
            "with the order's command id and exit non-zero if there is any.")

    def add_arguments(self, parser):
        parser.add_argument("--since", metavar="DATE", help="only orders created on or after this date, on the exchange's clock (YYYY-MM-DD)")

    def handle(self, *args, since=None, **options):
        result, _ = audit.run_and_record(since=ist_midnight(since) if since else None)
        for line in result.mismatches:
            self.stdout.write(line)
        summary = f"{result.orders} orders and {result.positions} positions checked"
        if not result.ok:
            raise CommandError(f"{len(result.mismatches)} mismatches; {summary}")
        self.stdout.write(f"audit trail verified: {summary}, no mismatch")
