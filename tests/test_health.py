"""GET /api/health/: status for anyone, details for authenticated users, 503 only when the
database is unreachable; the watcher's last pass recorded with its lease."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from brokers import shoonya_session
from orders import lifecycle
from orders.health import watcher_stale_after_s
from orders.models import Status, WatcherLease
from orders.watcher import (
    LEASE_NAME,
    OrderWatcher,
    acquire_lease,
    new_owner,
    release_lease,
    renew_lease,
    run_watcher,
)
from tests.factories import TEST_SECRET, OrderFactory, RegisteredOrderFactory

pytestmark = pytest.mark.django_db

URL = "/api/health/"
DETAIL_KEYS = {"status", "reasons", "database", "queue", "watcher", "broker", "checked_at"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.WATCHER_INTERVAL_S = 1
    settings.WATCHER_LEASE_TTL_S = 30
    settings.REQUEUE_CREATED_AFTER_S = 10


@pytest.fixture
def user():
    return User.objects.create_user("monitor", password="pw-not-used-here")


@pytest.fixture
def token(user):
    return Token.objects.create(user=user).key


@pytest.fixture
def api(client, token):
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token}"
    return client


@pytest.fixture
def watcher_alive():
    """The lease as a running watcher leaves it: held, renewed with its last pass."""
    owner = new_owner("task")
    assert acquire_lease(owner)
    assert renew_lease(owner, last_pass_at=timezone.now())
    return owner


def health(client, status=200) -> dict:
    response = client.get(URL)
    assert response.status_code == status, response.content
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def lease() -> WatcherLease:
    return WatcherLease.objects.get(name=LEASE_NAME)


# --- who sees what --------------------------------------------------------------------------

def test_anonymous_gets_the_status_only(client, watcher_alive):
    assert health(client) == {"status": "ok"}
    WatcherLease.objects.all().delete()
    assert health(client) == {"status": "degraded"}  # still 200: the web tier stays in service


def test_an_html_accept_header_still_gets_json(client, watcher_alive):
    response = client.get(URL, headers={"accept": "text/html"})
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("auth", ["token", "session"])
def test_an_authenticated_user_gets_every_key(client, user, token, watcher_alive, auth):
    if auth == "token":
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token}"
    else:
        client.force_login(user)
    body = health(client)
    assert DETAIL_KEYS <= set(body)
    assert body["status"] == "ok" and body["reasons"] == []
    database = body["database"]
    assert database["reachable"] is True and database["vendor"] == connection.vendor
    assert 0 <= database["round_trip_ms"] < 1000
    assert body["queue"] == {"created": 0, "oldest_created_age_s": None, "stale_after_s": 10}
    assert body["watcher"]["holder"] == watcher_alive
    assert 0 <= body["watcher"]["last_pass_age_s"] < 5
    assert body["watcher"]["stale_after_s"] == 30
    assert body["broker"] == {"name": "paper", "session": "n/a", "ready": True}


def test_a_wrong_token_is_refused_as_everywhere_in_the_api(client, watcher_alive):
    response = client.get(URL, headers={"authorization": "Token not-a-token"})
    assert response.status_code == 401


def test_a_handful_of_queries(api, watcher_alive, django_assert_num_queries):
    OrderFactory.create_batch(3)
    # round trip, CREATED aggregate, lease, the feed's state and lease, the funds, the last audit
    # check, the last reconciliation and its open differences
    with django_assert_num_queries(9):
        health(Client())
    with django_assert_num_queries(10):  # + the token
        health(api)


# --- the queue ------------------------------------------------------------------------------

def test_fresh_created_orders_are_not_a_problem(api, watcher_alive):
    RegisteredOrderFactory()
    body = health(api)
    assert body["status"] == "ok"
    assert body["queue"]["created"] == 1 and body["queue"]["oldest_created_age_s"] < 5


def test_a_created_order_waiting_past_the_threshold_degrades(api, watcher_alive):
    now = timezone.now()
    RegisteredOrderFactory(created_at=now - timedelta(seconds=25))
    RegisteredOrderFactory()
    old_but_done = RegisteredOrderFactory(created_at=now - timedelta(hours=1))
    lifecycle.move(old_but_done, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:STRATEGY_DISABLED")
    body = health(api)
    assert body["status"] == "degraded"
    assert body["queue"]["created"] == 2
    assert 25 <= body["queue"]["oldest_created_age_s"] < 30
    assert body["reasons"] == ["2 CREATED order(s) waiting, the oldest for 25s"]


# --- the watcher ----------------------------------------------------------------------------

class Probe(OrderWatcher):
    """The real watcher (paper broker), asking for the health report during its third pass."""

    def __init__(self, client):
        super().__init__()
        self.client, self.passes, self.seen = client, 0, None

    def poll_once(self):
        self.passes += 1
        if self.passes == 3:
            self.seen = health(self.client)
        return super().poll_once()


def test_a_running_watcher_shows_its_holder_and_a_recent_pass(api):
    owner = new_owner("task")
    probe = Probe(api)
    assert run_watcher(owner, seconds=0.5, interval=0.05, watcher=probe) >= 3
    assert probe.seen["status"] == "ok", probe.seen
    assert probe.seen["watcher"]["holder"] == owner
    assert 0 <= probe.seen["watcher"]["last_pass_age_s"] < 1

    # Released at the end of its run: no holder, but the pass is recent (a hand-over between
    # two watcher slices), so not a problem yet.
    body = health(api)
    assert body["watcher"]["holder"] is None and body["watcher"]["last_pass_age_s"] < 1
    assert body["status"] == "ok"

    WatcherLease.objects.update(last_pass_at=timezone.now() - timedelta(seconds=watcher_stale_after_s() + 5))
    body = health(api)
    assert body["status"] == "degraded" and body["reasons"] == ["watcher not running: last pass 35s ago"]


def test_no_watcher_ever_degrades(api):
    body = health(api)  # the lease row as the migration made it
    assert body["watcher"] == {"holder": None, "last_pass_age_s": None, "stale_after_s": 30}
    assert body["status"] == "degraded" and body["reasons"] == ["watcher not running"]


def test_a_holder_without_a_recent_pass_degrades(api):
    owner = new_owner("task")
    assert acquire_lease(owner)
    body = health(api)
    assert body["watcher"]["holder"] == owner
    assert body["reasons"] == ["watcher holds the lease but has not completed a pass"]
    assert renew_lease(owner, last_pass_at=timezone.now() - timedelta(seconds=40))
    assert health(api)["reasons"] == ["watcher holds the lease but has not completed a pass for 40s"]


def test_an_expired_lease_has_no_holder(api, watcher_alive):
    WatcherLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert health(api)["watcher"]["holder"] is None


def test_the_last_pass_rides_on_the_lease_writes_without_changing_their_compare_and_set():
    assert acquire_lease("a")
    assert lease().last_pass_at is None
    t1 = timezone.now()
    assert renew_lease("a", last_pass_at=t1) and lease().last_pass_at == t1
    assert renew_lease("a") and lease().last_pass_at == t1  # no pass given: kept
    assert not renew_lease("b", last_pass_at=timezone.now()) and lease().last_pass_at == t1
    release_lease("b", last_pass_at=timezone.now())
    assert lease().last_pass_at == t1 and lease().owner == "a"
    t2 = timezone.now()
    release_lease("a", last_pass_at=t2)
    assert lease().last_pass_at == t2 and lease().expires_at <= timezone.now()


def test_a_pass_that_raises_is_not_recorded():
    class Failing:
        def poll_once(self):
            raise RuntimeError("boom")

    assert run_watcher("me", seconds=0.2, interval=0.02, watcher=Failing()) >= 2
    assert lease().last_pass_at is None


def test_a_run_records_its_last_pass_on_release():
    class Counting:
        passes = 0

        def poll_once(self):
            self.passes += 1
            return True

    before = timezone.now()
    assert run_watcher("me", seconds=0.01, interval=1, watcher=Counting()) == 1  # one pass, no renewal
    assert lease().last_pass_at >= before


# --- the broker -----------------------------------------------------------------------------

SECRETS = {
    "SHOONYA_PASSWORD": "pw-health-secret-1111",
    "SHOONYA_TOTP_SECRET": "TOTPHEALTHSECRET2222",
    "SHOONYA_API_KEY": "apikey-health-secret-3333",
    "SHOONYA_SECRET": "oauth-health-secret-4444",
    "SHOONYA_CLIENT_ID": "client-health-5555",
    "SHOONYA_VENDOR_CODE": "vendor-health-6666",
    "SHOONYA_IMEI": "imei-health-7777",
}
SESSION_TOKEN = "session-token-health-8888"


@pytest.fixture
def shoonya(settings, watcher_alive):
    settings.ORDERDESK_BROKER = "shoonya"
    settings.SHOONYA_USER_ID = "FT0001"
    settings.SHOONYA_BASE_URL = "http://127.0.0.1:1/never-called"  # any broker I/O would fail
    for name, value in SECRETS.items():
        setattr(settings, name, value)


def assert_no_secret(response_text: str):
    for value in [*SECRETS.values(), SESSION_TOKEN, TEST_SECRET, django_settings.SECRET_KEY,
                  *shoonya_session.secret_values()]:
        assert value not in response_text


def test_shoonya_without_a_session_degrades(api, shoonya):
    response = api.get(URL)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["broker"] == {"name": "shoonya", "session": "missing", "ready": False}
    assert body["reasons"] == ["broker shoonya: session missing"]
    assert_no_secret(response.content.decode())


def test_a_refused_login_without_a_session_is_missing(api, shoonya):
    shoonya_session.note_login_failure("QuickAuth refused: Invalid Input")
    assert health(api)["broker"]["session"] == "missing"


def test_shoonya_session_valid_then_expired_and_never_a_secret(api, shoonya):
    session = shoonya_session.store("OAUTH", SESSION_TOKEN)
    response = api.get(URL)
    body = response.json()
    assert body["status"] == "ok", body
    broker = body["broker"]
    assert (broker["name"], broker["session"], broker["ready"], broker["kind"]) == ("shoonya", "valid", True, "OAUTH")
    assert broker["obtained_at"] and broker["invalidated_at"] is None
    assert_no_secret(response.content.decode())

    assert shoonya_session.invalidate(session, "Session Expired :  Invalid Session Key")
    response = api.get(URL)
    body = response.json()
    assert body["status"] == "degraded" and body["reasons"] == ["broker shoonya: session expired"]
    assert body["broker"]["session"] == "expired" and body["broker"]["invalidated_at"]
    assert "Invalid Session Key" not in response.content.decode()  # the note stays out
    assert_no_secret(response.content.decode())


def test_a_session_of_another_user_is_missing(api, shoonya, settings):
    shoonya_session.store("OAUTH", SESSION_TOKEN)
    settings.SHOONYA_USER_ID = "FT0002"
    assert health(api)["broker"]["session"] == "missing"


def test_a_shoonya_report_is_still_a_handful_of_queries(client, shoonya, django_assert_num_queries):
    shoonya_session.store("OAUTH", SESSION_TOKEN)
    with django_assert_num_queries(10):  # + the session row (without its token)
        assert health(client) == {"status": "ok"}


# --- the database unreachable ---------------------------------------------------------------

PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client(raise_request_exception=False, HTTP_HOST="localhost")
requests = [{}, {"authorization": "Token " + "0" * 40}, {"cookie": "sessionid=" + "x" * 32}]
for headers in requests[: int(__import__("sys").argv[1])]:
    r = client.get("/api/health/", headers=headers)
    print(json.dumps([r.status_code, r.headers.get("Content-Type"), r.content.decode()]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("role, requests", [("worker", 3), ("web", 2)], ids=["plain connection", "web pool"])
def test_an_unreachable_database_answers_503_json(role, requests):
    """A real process with production settings and nothing listening at the database's port;
    the web role goes through the bounded pool (its timeout shortened)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="orderdesk.settings", DATABASE_URL="postgres://postgres@127.0.0.1:1/x",
               SECRET_KEY="health-probe-key-0123456789-0123456789-0123456789", ORDERDESK_PROCESS_ROLE=role,
               ORDERDESK_DB_POOL_TIMEOUT_S="0.5")
    done = subprocess.run([sys.executable, "-c", PROBE, str(requests)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == requests, done.stderr
    for status, content_type, body in answers:
        assert (status, content_type) == (503, "application/json"), done.stderr
        assert json.loads(body) == {"status": "down"}
