"""What the webhook answers when something other than the alert fails: the database (503 with
Retry-After, nothing registered), our own code (JSON 500, logged, recorded), or the client's
connection and headers (4xx, recorded). Never Django's HTML error page."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_q.models import OrmQ

from orders import services
from orders.models import Alert, Order, OrderEvent, RejectedAlert
from orders.webhook import DATABASE_UNAVAILABLE, INTERNAL_ERROR
from tests.factories import TEST_SECRET

URL = "/api/webhook/"
ROOT = Path(__file__).resolve().parent.parent


def counts():
    return Alert.objects.count(), Order.objects.count(), OrderEvent.objects.count(), OrmQ.objects.count()


def assert_retry_later(status: int, headers, reply: dict):
    assert status == 503
    assert 1 <= int(headers["Retry-After"]) <= 30
    assert reply == {"detail": DATABASE_UNAVAILABLE}


# --- 503: the database is unavailable ----------------------------------------------------


@pytest.fixture
def pool_of_one(transactional_db):
    """The default database behind a psycopg pool of one connection that callers wait for at
    most 0.5 s: a web process's pool (its size is the thread count) with every thread busy."""
    params = connection.settings_dict
    saved = {key: params[key] for key in ("OPTIONS", "CONN_MAX_AGE")}
    connection.close()
    params["OPTIONS"] = {**params["OPTIONS"], "pool": {"min_size": 1, "max_size": 1, "timeout": 0.5}}
    params["CONN_MAX_AGE"] = 0  # Django's requirement for a pool
    connection.pool.open(wait=True)
    yield connection.pool
    connection.close()
    connection.close_pool()  # reads the pool settings: before they are restored
    params.update(saved)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_exhausted_pool_is_a_503_and_the_retry_is_registered(strategy, alert_body, post_alert, pool_of_one):
    connection.close()  # the strategy's connection back into the pool
    with pool_of_one.connection():  # ... and out again, held by "another request"
        refused = post_alert(alert_body(alert_id="tv-1"))
    assert_retry_later(refused.status_code, refused, refused.json())

    accepted = post_alert(alert_body(alert_id="tv-1"))

    assert accepted.status_code == 201, accepted.content
    assert counts() == (1, 1, 1, 1)  # the retry's alert, order, CREATED event and task, nothing more
    assert RejectedAlert.objects.count() == 0


# A web process on a database that does not answer, started the way gunicorn starts it
# (orderdesk.wsgi), called through the WSGI interface with one alert.
UNREACHABLE_SCRIPT = """
import io, json, sys
from wsgiref.util import setup_testing_defaults

from orderdesk.wsgi import application

body = json.dumps({"strategy": "demo", "secret": sys.argv[1], "execution_type": "ENTRY", "exchange": "NSE",
                   "legs": [{"symbol": "SBIN-EQ", "side": "BUY", "qty": 1, "product": "MIS"}]}).encode()
environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/webhook/", "CONTENT_TYPE": "text/plain",
           "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "52.89.214.238"}
setup_testing_defaults(environ)
answer = {}
def start_response(status, headers, exc_info=None):
    answer.update(status=int(status.split()[0]), headers=dict(headers))
answer["body"] = b"".join(application(environ, start_response)).decode()
print(json.dumps(answer))
"""


@pytest.mark.parametrize("database_url, role", [
    ("postgres://postgres@127.0.0.1:1/orderdesk", "web"),  # nothing listens on port 1: the pool times out
    ("postgres://postgres@127.0.0.1:1/orderdesk", "worker"),  # no pool (runserver): the connect fails at once
    ("sqlite:////nonexistent-directory/orderdesk.sqlite3", "web"),  # a file SQLite cannot open
])
def test_unreachable_database_is_a_503_in_json(database_url, role):
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(DATABASE_URL=database_url, ORDERDESK_PROCESS_ROLE=role, ORDERDESK_DB_POOL_TIMEOUT_S="1",
               DJANGO_SETTINGS_MODULE="orderdesk.settings", SECRET_KEY=settings.SECRET_KEY)
    done = subprocess.run([sys.executable, "-c", UNREACHABLE_SCRIPT, TEST_SECRET], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)

    assert_retry_later(answer["status"], answer["headers"], json.loads(answer["body"]))
    assert answer["headers"]["Content-Type"] == "application/json"
    assert "answered 503, database unavailable or busy" in done.stderr  # logged for the operator


@pytest.fixture
def short_busy_timeout(transactional_db):
    """SQLite waits 0.2 s for the write lock instead of the configured 30 s."""
    options = connection.settings_dict["OPTIONS"]
    saved = options["timeout"]
    connection.close()
    options["timeout"] = 0.2
    yield
    connection.close()
    options["timeout"] = saved


@pytest.mark.sqlite  # SQLite's database-wide write lock
@pytest.mark.django_db(transaction=True)
def test_sqlite_locked_past_the_busy_timeout_is_a_503(strategy, alert_body, post_alert, short_busy_timeout):
    other_writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")
    try:
        refused = post_alert(alert_body())
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()

    assert_retry_later(refused.status_code, refused, refused.json())
    assert counts() == (0, 0, 0, 0)
    assert post_alert(alert_body()).status_code == 201


# --- 500: a bug of ours ------------------------------------------------------------------


@pytest.mark.django_db
def test_unexpected_error_is_a_json_500_logged_and_recorded(strategy, alert_body, post_alert, monkeypatch, caplog):
    def broken_blockers(ctx, blockers):
        raise RuntimeError("blockers broke")

    monkeypatch.setattr(services, "evaluate", broken_blockers)  # inside the intake transaction
    response = post_alert(alert_body())

    assert response.status_code == 500
    assert response.json() == {"detail": INTERNAL_ERROR}
    assert counts() == (0, 0, 0, 0)  # the alert and its order were rolled back
    [logged] = [r for r in caplog.records if r.name == "orderdesk.webhook" and r.levelno == logging.ERROR]
    assert logged.exc_info and logged.exc_info[0] is RuntimeError
    rejected = RejectedAlert.objects.get()
    assert (rejected.status_code, rejected.strategy_name) == (500, "demo")
    assert "RuntimeError: blockers broke" in rejected.reason
    assert "RELIANCE-EQ" in rejected.body and TEST_SECRET not in rejected.body


# --- the client's connection and headers -------------------------------------------------


class ResetStream:
    """A client that goes away after sending its headers."""

    def read(self, size=-1):
        raise ConnectionResetError("Connection reset by peer")

    readline = read


@pytest.mark.django_db
@pytest.mark.parametrize("extra", [{"CONTENT_LENGTH": "100"}, {"wsgi.input_terminated": True}],
                         ids=["content-length", "chunked"])
def test_body_cut_off_by_the_client_is_a_400_and_recorded(strategy, client, extra):
    response = client.generic("POST", URL, CONTENT_TYPE="text/plain", **{"wsgi.input": ResetStream(), **extra})
    assert response.status_code == 400
    assert "could not be read" in response.json()["detail"]
    assert RejectedAlert.objects.get().status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("length, status", [
    ("²", 400),  # a Latin-1 header byte str.isdigit() takes: Django reads no body
    ("9" * 5000, 413),  # more digits than int() parses
    ("0" * 5000 + "12", 400),  # 12 behind the zeros, but Django's int() fails too and reads no body
])
def test_content_length_that_int_cannot_read(strategy, client, alert_body, length, status):
    response = client.generic("POST", URL, json.dumps(alert_body()), CONTENT_TYPE="text/plain", CONTENT_LENGTH=length)
    assert response.status_code == status
    assert response.json()
    assert RejectedAlert.objects.get().status_code == status
