"""Bring the whole system up on this machine: the gunicorn web server, the django-q2 cluster
(submission workers, and the queued OrderWatcher chain as the fallback) and the foreground
`orderwatcher` process, with a demo strategy and an admin login. Ctrl-C stops all three.
Its secret key file (db/secret_key) is created by manage.py, before the settings load."""

import os
import secrets
import signal
import subprocess
import sys
import time

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from orders.models import Strategy

DEMO_STRATEGY = "demo"
ADMIN_USER = "admin"
STOP_GRACE_S = 5


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Migrate, create the demo strategy and admin login, and run web server + workers + watcher."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--rotate", action="store_true",
                            help="issue a new demo webhook secret and admin password (printed once)")
        parser.add_argument("--no-serve", action="store_true", help="prepare and print credentials only")

    def handle(self, addr, rotate=False, no_serve=False, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)  # served by WhiteNoise
        secret, password = self._demo_credentials(rotate)
        base = f"http://{addr}"
        self.stdout.write(self.style.SUCCESS("orderdesk is ready."))
        # Only digests are stored, so a secret or password can be shown only when it is issued;
        # keeping them across restarts keeps the user's TradingView alerts working.
        kept = "unchanged since it was printed (`manage.py up --rotate` issues a new one)"
        self.stdout.write(f"  admin blotter  {base}/admin/   user {ADMIN_USER}  password {password or kept}")
        self.stdout.write(f"  webhook        {base}/api/webhook/   strategy {DEMO_STRATEGY}  secret {secret or kept}")
        if secret:
            self.stdout.write(f"  export ORDERDESK_SECRET={secret}")
        self.stdout.write("  send an alert (with ORDERDESK_SECRET exported):")
        self.stdout.write(
            f"""  curl -s -X POST {base}/api/webhook/ -H 'Content-Type: text/plain' -d '{{"strategy": "demo", """
            """"secret": "'"$ORDERDESK_SECRET"'", "execution_type": "ENTRY", "exchange": "NSE", "legs": [{"symbol": """
            """"RELIANCE-EQ", "side": "BUY", "qty": 10, "order_type": "MARKET", "product": "MIS"}]}'"""
        )
        if no_serve:
            return
        connections.close_all()  # this process only waits from here on: hold no connection
        self._serve(addr)

    def _demo_credentials(self, rotate: bool) -> tuple[str | None, str | None]:
        """The demo strategy's secret and the admin password when issued now, else None."""
        secret = password = None
        strategy = Strategy.objects.filter(name=DEMO_STRATEGY).first()
        if strategy is None or rotate:
            strategy = strategy or Strategy(name=DEMO_STRATEGY)
            secret = strategy.set_secret()
            strategy.save()
        user_model = get_user_model()
        user = user_model.objects.filter(username=ADMIN_USER).first()
        if user is None or rotate:
            user = user or user_model(username=ADMIN_USER, is_staff=True, is_superuser=True)
            password = secrets.token_urlsafe(12)
            user.set_password(password)
            user.save()
        return secret, password

    def _serve(self, addr: str) -> None:
        # Each child leads its own process group, so stopping it stops its workers too. We
        # forward Ctrl-C (SIGINT) and SIGTERM ourselves (set explicitly: a shell may have
        # started us with SIGINT ignored).
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        manage = [sys.executable, "manage.py"]
        web = [sys.executable, "-m", "gunicorn", "-c", "python:orderdesk.gunicorn_conf", "--bind", addr]
        children = [
            subprocess.Popen(web, start_new_session=True),
            subprocess.Popen(manage + ["qcluster"], start_new_session=True),
            subprocess.Popen(manage + ["orderwatcher"], start_new_session=True),
        ]
        self.stdout.write("web server (gunicorn), task cluster and OrderWatcher running; Ctrl-C stops all three")
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            self.stderr.write("a child process exited; stopping the others")
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C (or a supervisor's repeated SIGTERM) must not cut the stop short:
            # raised inside _stop, it left gunicorn running on the port with nobody to stop it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stdout.write(f"stopping ... (at most {STOP_GRACE_S:g} s, then killed)")
            _stop(children)


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


def _stop(children: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace_s`. A watcher slice cut short is
    safe: every change is a compare-and-set, and the next watcher takes over a lease whose
    holder died on this machine at once."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)  # the cluster's workers too, even if the master is gone
