from django.core.management.base import BaseCommand, CommandError

from risk.services import load_holidays


class Command(BaseCommand):
    help = "Load exchange holidays from a CSV file: date,exchange,description (exchange empty: every exchange)."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, *args, file, **options):
        try:
            added, existing = load_holidays(file)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        self.stdout.write(f"{added} holiday(s) added, {existing} already there")
