"""Square off from the command line: cancel the matching open orders, exit the open positions."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from orders import squareoff


class Command(BaseCommand):
    help = ("Cancel the open orders and exit every open position that matches (all of them without filters), "
            "through the intake; prints the exit orders created.")

    def add_arguments(self, parser):
        parser.add_argument("--strategy", metavar="NAME")
        parser.add_argument("--exchange", metavar="EXCH")
        parser.add_argument("--symbol", metavar="SYM")

    def handle(self, *args, strategy=None, exchange=None, symbol=None, **options):
        result = squareoff.close(strategy=strategy, exchange=exchange, symbol=symbol, actor="cli:squareoff")
        for order, outcome in result.cancelled:
            self.stdout.write(f"cancel {order.command_id} {order.symbol}: {outcome}")
        exits, waiting = list(result.orders), list(result.waiting)
        # The positions whose instruments still had live orders: their exits follow the cancels.
        deadline = time.monotonic() + settings.SQUAREOFF_CANCEL_WAIT_S + 2
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            for request in list(waiting):
                request.refresh_from_db()
                if request.done_at:  # the watcher got there first
                    waiting.remove(request)
                    exits += [request.exit_order] if request.exit_order else []
                elif registered := squareoff.advance(request):
                    waiting.remove(request)
                    exits += registered
        for order in exits:
            self.stdout.write(f"exit {order.command_id} {order.strategy.name} {order.exchange}:{order.symbol} "
                              f"{order.side} {order.qty} {order.product}: {order.status}"
                              + (f" {order.tag}" if order.tag else ""))
        for request in waiting:
            self.stdout.write(f"waiting {request.exchange}:{request.symbol}: the watcher exits it once its cancels "
                              "are through")
        if not exits and not waiting:
            self.stdout.write("nothing open: no exit created")
