"""Check a Shoonya set-up before the market opens: the settings, a login (or the stored
session), the account's limits, the order book, the positions and the order feed. Prints a
summary, or the exact error of the first step that failed; exit status 1 on any failure.
Never prints a credential or a token."""

from django.core.management.base import BaseCommand, CommandError

from brokers.checks import shoonya_problems


class Command(BaseCommand):
    help = "Verify the Shoonya settings, login, limits, order book, positions and order feed."
    requires_system_checks = []  # the settings are this command's first step, said in its own words

    def handle(self, *args, **options):
        problems = shoonya_problems()
        if problems:
            for code, message, hint in problems:
                self.stdout.write(f"✗ settings: {message} (orderdesk.{code}; {hint})")
            raise CommandError("the Shoonya settings cannot work; nothing was sent")
        self.stdout.write("✓ settings")
        from brokers.shoonya import ShoonyaBroker

        broker = ShoonyaBroker()
        steps = [
            ("session", lambda: _session(broker)),
            ("limits", lambda: _limits(broker.limits())),
            ("order book", lambda: f"{len(broker.order_book())} orders today"),
            ("positions", lambda: f"{len(broker.positions())} positions"),
            ("order feed", lambda: broker.order_feed().probe()),
        ]
        failed = 0
        for name, step in steps:
            try:
                self.stdout.write(f"✓ {name}: {step()}")
            except Exception as exc:  # noqa: BLE001 - each step's own error, in its words
                failed += 1
                self.stdout.write(f"✗ {name}: {type(exc).__name__}: {exc}")
                if name == "session":
                    break  # nothing after it can work
        if failed:
            raise CommandError(f"{failed} check(s) failed")
        self.stdout.write("Shoonya is ready.")


def _session(broker) -> str:
    session = broker.feed_session()
    return f"{session.kind} session of {session.user_id}"


def _limits(reply: dict) -> str:
    shown = [f"{key} {reply[key]}" for key in ("cash", "payin", "marginused") if key in reply]
    return ", ".join(shown) or "answered"
