"""Broker configuration: the system check that stops a desk that could never place an order,
and the rule that a failure before any request left the machine is "not sent", never in doubt."""

import logging
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from brokers import shoonya_session
from brokers.fake_noren import TEST_ACCOUNT
from orders.models import EventKind, Order, Status
from tests.factories import trail
from tests.processes import BASE_DIR

pytestmark = pytest.mark.django_db

SHORT_TOTP = "JBSWY3DP"  # 40 bits: pyotp wants 112


def check_errors() -> str:
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    return str(raised.value)


def test_the_paper_broker_needs_no_settings(settings):
    settings.ORDERDESK_BROKER = "paper"
    call_command("check")


def test_working_shoonya_settings_pass(shoonya_legacy):
    call_command("check")


def test_oauth_settings_pass(shoonya_oauth_without_session):
    call_command("check")


@pytest.mark.parametrize("changes, code, words", [
    ({"SHOONYA_TOTP_SECRET": SHORT_TOTP}, "orderdesk.E105",
     "SHOONYA_TOTP_SECRET is not a usable TOTP secret (ValueError: Secrets must be at least 112 bits"),
    ({"SHOONYA_TOTP_SECRET": "not base32!!"}, "orderdesk.E105", "SHOONYA_TOTP_SECRET is not a usable TOTP secret"),
    ({"SHOONYA_API_KEY": "", "SHOONYA_VENDOR_CODE": ""}, "orderdesk.E102",
     "QuickAuth login needs SHOONYA_VENDOR_CODE, SHOONYA_API_KEY as well"),
    ({"SHOONYA_USER_ID": ""}, "orderdesk.E101", "ORDERDESK_BROKER=shoonya needs SHOONYA_USER_ID"),
    ({"SHOONYA_PASSWORD": "", "SHOONYA_TOTP_SECRET": "", "SHOONYA_VENDOR_CODE": "", "SHOONYA_API_KEY": ""},
     "orderdesk.E104", "no Shoonya login method"),
    ({"SHOONYA_WS_URL": "https://api.shoonya.com/NorenWSAPI/"}, "orderdesk.E106",
     "SHOONYA_WS_URL is not a wss or ws URL"),
    ({"SHOONYA_BASE_URL": "api.shoonya.com"}, "orderdesk.E106", "SHOONYA_BASE_URL is not a https or http URL"),
], ids=["short totp", "bad totp", "partial legacy", "no user", "no login", "ws url", "base url"])
def test_a_setting_that_cannot_work_is_named(shoonya_legacy, settings, changes, code, words):
    for name, value in changes.items():
        setattr(settings, name, value)
    errors = check_errors()
    assert code in errors and words in errors
    for secret in (TEST_ACCOUNT.password, TEST_ACCOUNT.api_key, SHORT_TOTP, TEST_ACCOUNT.totp_secret):
        assert secret not in errors


def test_an_oauth_half_set_is_named(shoonya_oauth_without_session, settings):
    settings.SHOONYA_SECRET = ""
    assert "OAuth login needs SHOONYA_SECRET as well" in check_errors()


@pytest.mark.slow
def test_up_refuses_to_start_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERDESK_", "SHOONYA_"))}
    env.update(ORDERDESK_BROKER="shoonya", SHOONYA_USER_ID="FT4242", SHOONYA_PASSWORD="pw-not-real-0001",
               SHOONYA_TOTP_SECRET=SHORT_TOTP, SHOONYA_VENDOR_CODE="FT4242_U", SHOONYA_API_KEY="key-not-real",
               DATABASE_URL=f"sqlite:///{tmp_path}/never.sqlite3", SECRET_KEY="check-test-key-0123456789abcdef")
    done = subprocess.run([sys.executable, "manage.py", "up", "--addr", "127.0.0.1:1"], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "orderdesk.E105" in done.stderr and "SHOONYA_TOTP_SECRET" in done.stderr
    assert SHORT_TOTP not in done.stderr + done.stdout and "pw-not-real-0001" not in done.stderr + done.stdout
    assert not (tmp_path / "never.sqlite3").exists()  # stopped before anything ran


# --- not sent, never in doubt -------------------------------------------------------------------

def send(post_alert, alert_body, run_queue) -> Order:
    response = post_alert(alert_body())
    assert response.status_code == 201, response.content
    run_queue()
    return Order.objects.get(command_id=response.json()["orders"][0]["command_id"])


def test_a_totp_secret_pyotp_refuses_fails_the_order_as_not_sent(shoonya_legacy, settings, strategy, alert_body,
                                                                 post_alert, run_queue, caplog):
    settings.SHOONYA_TOTP_SECRET = SHORT_TOTP
    caplog.set_level(logging.DEBUG)
    order = send(post_alert, alert_body, run_queue)
    assert order.status == Status.FAILED
    assert order.tag.startswith("BROKER_SESSION:Shoonya login failed: SHOONYA_TOTP_SECRET is not a usable TOTP "
                                "secret (ValueError: Secrets must be at least 112 bits")
    assert [e[0] for e in trail(order)] == ["CREATED", "CLAIMED", EventKind.BROKER_REJECTED]
    assert shoonya_legacy.calls == []  # not a byte left for the broker
    assert SHORT_TOTP not in caplog.text and TEST_ACCOUNT.password not in caplog.text


def test_any_failure_before_the_request_is_not_sent(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                    monkeypatch):
    def broken_session_store():
        raise RuntimeError("the session table is unreadable")

    monkeypatch.setattr(shoonya_session, "load", broken_session_store)
    order = send(post_alert, alert_body, run_queue)
    assert (order.status, order.tag) == (
        Status.FAILED, "BROKER_SESSION:not sent: RuntimeError: the session table is unreadable")
    assert not shoonya_legacy.calls_to("PlaceOrder")


def test_oauth_without_a_session_is_not_sent(shoonya_oauth_without_session, strategy, alert_body, post_alert,
                                             run_queue):
    order = send(post_alert, alert_body, run_queue)
    assert order.status == Status.FAILED and order.tag.startswith("BROKER_SESSION:no valid Shoonya session")
    assert not shoonya_oauth_without_session.calls_to("PlaceOrder")


# --- manage.py shoonya_check --------------------------------------------------------------------

def shoonya_check() -> tuple[str, bool]:
    from io import StringIO

    from django.core.management.base import CommandError

    out = StringIO()
    try:
        call_command("shoonya_check", stdout=out)
    except CommandError as exc:
        return out.getvalue() + str(exc), False
    return out.getvalue(), True


def assert_no_credential(text: str) -> None:
    from brokers.models import BrokerSession

    tokens = list(BrokerSession.objects.exclude(token="").values_list("token", flat=True))
    for secret in (TEST_ACCOUNT.password, TEST_ACCOUNT.api_key, TEST_ACCOUNT.totp_secret, TEST_ACCOUNT.secret,
                   *tokens):
        assert secret not in text


def test_shoonya_check_walks_every_step_against_the_fake(shoonya_legacy):
    output, ok = shoonya_check()
    assert ok, output
    lines = output.splitlines()
    assert lines[0] == "✓ settings"
    assert lines[1] == "✓ session: LEGACY session of FT4242"
    assert lines[2] == "✓ limits: cash 100000.00, payin 0.00, marginused 0.00"
    assert lines[3:6] == ["✓ order book: 0 orders today", "✓ positions: 0 positions",
                          "✓ order feed: logged in and subscribed to order updates"]
    assert lines[-1] == "Shoonya is ready."
    assert len(shoonya_legacy.feed.logins) == 1
    assert_no_credential(output)


def test_shoonya_check_says_which_step_failed_and_exits_non_zero(shoonya_legacy, settings):
    settings.SHOONYA_PASSWORD = "pw-wrong-never-shown-01"
    output, ok = shoonya_check()
    assert not ok
    assert "✗ session: SessionUnavailable: Shoonya login failed: QuickAuth refused: Invalid Input : Wrong Password" \
        in output
    assert "limits" not in output and "1 check(s) failed" in output
    assert "pw-wrong-never-shown-01" not in output
    assert_no_credential(output)


def test_shoonya_check_reports_a_silent_feed(shoonya_legacy, settings):
    from brokers.fake_noren import FeedMode

    settings.SHOONYA_WS_LOGIN_TIMEOUT_S = 0.3
    shoonya_legacy.feed.mode = FeedMode.REFUSE_SILENTLY
    output, ok = shoonya_check()
    assert not ok
    assert "✗ order feed: FeedRefused: no login acknowledgement (ck) within 0.3s" in output
    assert "✓ positions" in output


def test_shoonya_check_stops_at_the_settings(shoonya_legacy, settings):
    settings.SHOONYA_TOTP_SECRET = SHORT_TOTP
    output, ok = shoonya_check()
    assert not ok and "✗ settings: SHOONYA_TOTP_SECRET is not a usable TOTP secret" in output
    assert shoonya_legacy.calls == [] and SHORT_TOTP not in output


def test_the_admin_shows_the_session_state_never_its_token(shoonya_oauth, admin_client):
    from brokers.models import BrokerSession

    session = BrokerSession.objects.get()
    listing = admin_client.get("/admin/brokers/brokersession/").content.decode()
    page = admin_client.get(f"/admin/brokers/brokersession/{session.pk}/change/").content.decode()
    assert "FT4242" in listing and "OAuth access token" in listing
    assert session.token not in listing + page
    assert admin_client.post(f"/admin/brokers/brokersession/{session.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_broker_class_may_be_given_by_its_dotted_path(settings):
    from django.core.exceptions import ImproperlyConfigured

    from brokers.registry import get_broker
    from tests.fault_broker import FaultBroker

    settings.ORDERDESK_BROKER = "tests.fault_broker.FaultBroker"
    assert isinstance(get_broker(), FaultBroker)
    settings.ORDERDESK_BROKER = "tests.fault_broker.FOREVER"  # not a Broker class
    with pytest.raises(ImproperlyConfigured, match="dotted path of a Broker class"):
        get_broker()
