import argparse
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orders.models import Strategy
from risk.services import set_limits


def _amount_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive amount")
    return value


class Command(BaseCommand):
    help = "Set a strategy's risk limits (without --strategy: the whole account's) and print them."

    def add_arguments(self, parser):
        parser.add_argument("--strategy", help="the strategy's name; without it, the account-wide limits")
        parser.add_argument("--daily-loss", type=_amount_arg, metavar="N",
                            help="₹: no new ENTRY once today's P&L <= -N")
        parser.add_argument("--max-loss", type=_amount_arg, metavar="N",
                            help="₹: entries locked until reset once the P&L since now <= -N")
        parser.add_argument("--cooldown-min", type=int, metavar="N", help="minutes without an ENTRY after losing exits")
        parser.add_argument("--cooldown-after-losses", type=int, metavar="N",
                            help="losing exits in a row that start the cooldown (default 1)")
        parser.add_argument("--max-qty", type=int, metavar="N", help="per order")
        parser.add_argument("--max-notional", type=_amount_arg, metavar="N", help="₹ per order (qty × price)")
        parser.add_argument("--max-orders-per-min", type=int, metavar="N")
        parser.add_argument("--max-positions", type=int, metavar="N", help="open positions")
        parser.add_argument("--price-band-pct", type=_amount_arg, metavar="P",
                            help="%% a LIMIT/SL price may be from the latest known price")
        parser.add_argument("--mtm-stop-loss", type=_amount_arg, metavar="N",
                            help="₹: day P&L at -N squares the strategy off and locks its entries for the day")
        parser.add_argument("--mtm-target", type=_amount_arg, metavar="N",
                            help="₹: day P&L at +N squares the strategy off and locks its entries for the day")
        parser.add_argument("--clear", action="store_true", help="remove every limit first")

    def handle(self, *args, strategy=None, clear=False, **options):
        target = None
        if strategy is not None:
            target = Strategy.objects.filter(name=strategy).first()
            if target is None:
                raise CommandError(f"no strategy {strategy!r}")
        names = ("daily_loss", "max_loss", "cooldown_min", "cooldown_after_losses", "max_qty", "max_notional",
                 "max_orders_per_min", "max_positions", "price_band_pct", "mtm_stop_loss", "mtm_target")
        values = {name: options.get(name) for name in names}
        for name in ("cooldown_min", "cooldown_after_losses", "max_qty", "max_orders_per_min", "max_positions"):
            if values[name] is not None and values[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        try:
            limits = set_limits(target, actor="cli:set_limits", clear=clear, **values)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        scope = f"strategy {target.name}" if target else "the account"
        configured = limits.configured()
        if limits.cooldown_min:
            configured["cooldown_after_losses"] = limits.cooldown_after_losses
        shown = ", ".join(f"{k}={v}" for k, v in configured.items()) or "no limits"
        self.stdout.write(f"risk limits of {scope}: {shown}")
