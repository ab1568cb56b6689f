from django.core.management.base import BaseCommand, CommandError

from orders.models import Strategy
from risk.services import reset_lock


class Command(BaseCommand):
    help = "Lift a strategy's max-loss lock (NAME), or the account's (--account); recorded with who and when."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="the strategy")
        parser.add_argument("--account", action="store_true", help="the account-wide lock")

    def handle(self, *args, name=None, account=False, **options):
        if bool(name) == bool(account):
            raise CommandError("give a strategy NAME or --account")
        strategy = None
        if name:
            strategy = Strategy.objects.filter(name=name).first()
            if strategy is None:
                raise CommandError(f"no strategy {name!r}")
        count = reset_lock(strategy, actor="cli:reset_risk_lock")
        scope = f"strategy {name}" if name else "the account"
        self.stdout.write(f"{count} lock(s) of {scope} reset" if count else f"{scope} had no standing lock")
