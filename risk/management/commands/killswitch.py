import getpass
import os

from django.core.management.base import BaseCommand, CommandError

from orders.models import Strategy
from risk.killswitch import set_mode
from risk.models import KillSwitch, Mode


def _cli_user() -> str:
    """Who ran the command, for the change record. getpass.getuser() raises in a container
    with neither $USER nor a passwd entry; throwing the switch must not depend on it."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - OSError (3.13+), KeyError (older)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


class Command(BaseCommand):
    help = ("Set the global kill switch, or one strategy's: ACTIVE, REDUCING (exits only) or HALTED "
            "(nothing new reaches the broker). Without MODE, show the switches.")

    def add_arguments(self, parser):
        parser.add_argument("mode", nargs="?", choices=Mode.values)
        parser.add_argument("--strategy", help="a strategy's switch instead of the global one")

    def handle(self, mode=None, strategy=None, **options):
        target = None
        if strategy is not None:
            target = Strategy.objects.filter(name=strategy).first()
            if target is None:
                raise CommandError(f"no strategy {strategy!r}")
        if mode is None:
            for switch in KillSwitch.objects.select_related("strategy").order_by("-is_global", "strategy__name"):
                self.stdout.write(f"{switch}  (by {switch.updated_by or '-'} at {switch.updated_at:%Y-%m-%d %H:%M:%S}Z)")
            return
        switch = set_mode(mode, actor=f"cli:{_cli_user()}", strategy=target)
        self.stdout.write(f"kill switch {switch}")
