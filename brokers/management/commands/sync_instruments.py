"""Load Shoonya's symbol masters (and optionally a freeze-quantity file) into Instrument rows."""

from django.core.management.base import BaseCommand, CommandError

from brokers import instruments


class Command(BaseCommand):
    help = ("Download Shoonya's daily symbol masters (<SHOONYA_MASTER_URL>/<EXCH>_symbols.txt.zip) and replace "
            "those exchanges' instruments; an exchange whose download or file fails keeps its rows.")

    def add_arguments(self, parser):
        parser.add_argument("--exchange", nargs="+", choices=instruments.EXCHANGES, metavar="EXCH",
                            help=f"the exchanges to load (default: all of {' '.join(instruments.EXCHANGES)})")
        parser.add_argument("--freeze-file", metavar="F",
                            help="a CSV of freeze quantities (symbol, freeze_qty or VOL_FRZ_QTY, optional exchange)")

    def handle(self, *args, exchange=None, freeze_file=None, **options):
        if freeze_file:
            try:
                count = instruments.load_freeze_file(freeze_file)
            except instruments.MasterError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"freeze quantities: {count} loaded from {freeze_file}")
        failed = instruments.sync(dict.fromkeys(exchange or instruments.EXCHANGES), say=self.stdout.write)
        if failed:
            raise CommandError(f"not loaded: {', '.join(f'{e} ({why})' for e, why in failed.items())}")
