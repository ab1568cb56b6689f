"""The seed's test cases with ORDERDESK_BROKER=shoonya, end to end against the fake Noren
server: HTTP webhook -> queued submission -> HTTP to the fake -> OrderWatcher."""

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from brokers import shoonya_session as sessions
from brokers.fake_noren import TEST_ACCOUNT, Behaviour
from brokers.models import BrokerSession
from orders.models import Order
from orders.watcher import OrderWatcher
from tests.factories import trail

pytestmark = pytest.mark.django_db


def send(post_alert, alert_body, run_queue, symbol="RELIANCE-EQ", qty=10, side="BUY", **leg) -> Order:
    legs = [dict({"symbol": symbol, "side": side, "qty": qty, "order_type": "MARKET", "product": "MIS"}, **leg)]
    response = post_alert(alert_body(legs=legs))
    assert response.status_code == 201, response.content
    run_queue()
    return Order.objects.get(command_id=response.json()["orders"][0]["command_id"])


def claimed_long_ago(order: Order) -> None:
    """As if the worker's claim was made before the in-doubt wait (read timeout + 5 s) ran out."""
    Order.objects.filter(pk=order.pk).update(sent_at=timezone.now() - timedelta(seconds=60))


def test_case_1_accepted_then_complete_is_executed(shoonya_legacy, strategy, alert_body, post_alert, run_queue):
    order = send(post_alert, alert_body, run_queue)
    assert order.status == "SENT_TO_BROKER"
    fake_order = shoonya_legacy.order_for(order.command_id)  # remarks = our command id
    assert order.broker_order_id == fake_order.norenordno

    assert OrderWatcher().poll_once() is True
    order.refresh_from_db()
    assert order.status == "EXECUTED"
    assert (order.filled_qty, order.avg_price) == (10, Decimal("2950.00"))
    assert trail(order) == [
        ("CREATED", "", "CREATED", "", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "", "worker"),
        ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "", "watcher"),
    ]
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 1  # the worker logged in by itself, once


def test_case_4_not_ok_at_placement_fails_with_the_emsg(shoonya_legacy, strategy, alert_body, post_alert, run_queue):
    shoonya_legacy.set_behaviour(Behaviour.REJECT, symbol="SBIN-EQ", emsg="RED:Security is not allowed to trade")
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    assert order.status == "FAILED"
    assert order.tag == "BROKER_REJECTED:RED:Security is not allowed to trade"
    assert order.broker_order_id is None
    OrderWatcher().poll_once()
    assert [e[0] for e in trail(order)] == ["CREATED", "CLAIMED", "BROKER_REJECTED"]


def test_case_4_unknown_symbol_is_rejected_at_placement(shoonya_legacy, strategy, alert_body, post_alert, run_queue):
    order = send(post_alert, alert_body, run_queue, symbol="NOSUCH-EQ", qty=1)
    assert (order.status, order.tag) == ("FAILED", "BROKER_REJECTED:Invalid Trading Symbol")


def test_case_4_rejected_later_fails_with_the_rejreason(shoonya_legacy, strategy, alert_body, post_alert, run_queue):
    shoonya_legacy.set_behaviour(Behaviour.REJECT_LATER, symbol="SBIN-EQ",
                                 reason="RED:Margin Shortfall:INSUFFICIENT BALANCE [Available:0.00]")
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ", side="SELL", qty=5)
    assert order.status == "SENT_TO_BROKER" and order.broker_order_id
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "FAILED"
    assert order.tag == "BROKER_REJECTED:RED:Margin Shortfall:INSUFFICIENT BALANCE [Available:0.00]"
    assert [e[0] for e in trail(order)] == ["CREATED", "CLAIMED", "BROKER_ACCEPTED", "BROKER_REJECTED"]


def test_canceled_fails_as_broker_cancelled_keeping_the_fills(shoonya_legacy, strategy, alert_body, post_alert,
                                                              run_queue):
    shoonya_legacy.set_behaviour(Behaviour.CANCEL, symbol="INFY-EQ", fill_qty=4, reason="Canceled by exchange")
    order = send(post_alert, alert_body, run_queue, symbol="INFY-EQ")
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "FAILED"
    assert order.tag == "BROKER_CANCELLED:Canceled by exchange filled 4/10"
    assert (order.filled_qty, order.avg_price) == (4, Decimal("1875.25"))


def test_partial_fill_is_visible_while_sent_to_broker(shoonya_legacy, strategy, alert_body, post_alert, run_queue):
    shoonya_legacy.set_behaviour(Behaviour.PARTIAL, symbol="TCS-EQ", fill_qty=3)
    order = send(post_alert, alert_body, run_queue, symbol="TCS-EQ")
    watcher = OrderWatcher()
    watcher.poll_once()
    order.refresh_from_db()
    assert (order.status, order.filled_qty, order.avg_price) == ("SENT_TO_BROKER", 3, Decimal("4120.00"))
    assert trail(order)[-1][0] == "FILL"

    shoonya_legacy.complete(order.command_id)
    watcher.poll_once()
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == ("EXECUTED", 10)


def test_timeout_is_one_place_call_then_found_in_the_book_by_remarks(shoonya_legacy, settings, strategy, alert_body,
                                                                    post_alert, run_queue):
    settings.BROKER_READ_TIMEOUT_S = 0.3
    shoonya_legacy.set_behaviour(Behaviour.TIMEOUT, symbol="HDFCBANK-EQ", sleep_s=1.5)
    order = send(post_alert, alert_body, run_queue, symbol="HDFCBANK-EQ")
    assert order.status == "SENT_TO_BROKER" and order.broker_order_id is None
    assert trail(order)[-1][0] == "BROKER_IN_DOUBT" and trail(order)[-1][3].startswith("BROKER_IN_DOUBT:")
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1

    claimed_long_ago(order)
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.broker_order_id == shoonya_legacy.order_for(order.command_id).norenordno
    assert order.status == "EXECUTED"
    assert [e[0] for e in trail(order)] == ["CREATED", "CLAIMED", "BROKER_IN_DOUBT", "BROKER_ID_ADOPTED", "EXECUTED"]
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1  # never sent again


@pytest.mark.parametrize("behaviour", [Behaviour.HTTP_500, Behaviour.GARBAGE, Behaviour.OK_WITHOUT_NUMBER,
                                       Behaviour.HANG_UP])
def test_5xx_garbage_no_number_or_no_reply_is_in_doubt_and_resolved_from_the_book(
        shoonya_legacy, strategy, alert_body, post_alert, run_queue, behaviour):
    shoonya_legacy.set_behaviour(behaviour, symbol="SBIN-EQ")
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    assert (order.status, order.broker_order_id) == ("SENT_TO_BROKER", None)
    assert trail(order)[-1][0] == "BROKER_IN_DOUBT"
    claimed_long_ago(order)
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "EXECUTED" and order.broker_order_id
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1


def test_in_doubt_order_the_broker_never_got_fails_as_unknown_after_successful_reads(
        shoonya_legacy, settings, strategy, alert_body, post_alert, run_queue):
    settings.IN_DOUBT_GRACE_S = 0
    shoonya_legacy.set_behaviour(Behaviour.HTTP_500, symbol="SBIN-EQ", record=False)
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    claimed_long_ago(order)
    watcher = OrderWatcher()
    for _ in range(settings.IN_DOUBT_MIN_READS):
        assert watcher.poll_once() is True  # the empty book ("no data") is a successful read
    order.refresh_from_db()
    assert order.status == "FAILED" and order.tag.startswith("BROKER_UNKNOWN:")


def test_empty_book_counts_as_a_read_and_an_expired_session_does_not(shoonya_oauth):
    watcher = OrderWatcher()
    assert watcher.poll_once() is True and watcher.reads == 1
    [book] = shoonya_oauth.calls_to("OrderBook")
    assert shoonya_oauth.calls and book.headers["authorization"].startswith("Bearer ")

    shoonya_oauth.expire_sessions()
    assert watcher.poll_once() is False and watcher.reads == 1
    assert not BrokerSession.objects.get().valid


def test_legacy_session_expiry_relogs_once_and_places_once(shoonya_legacy, strategy, alert_body, post_alert,
                                                           run_queue):
    first = send(post_alert, alert_body, run_queue)
    assert first.broker_order_id
    shoonya_legacy.expire_sessions()  # the broker's daily session end
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    assert order.status == "SENT_TO_BROKER" and order.broker_order_id
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 2
    assert len([c for c in shoonya_legacy.calls_to("PlaceOrder") if c.jdata["remarks"] == order.command_id]) == 2
    assert len([o for o in shoonya_legacy.orders if o.fields["remarks"] == order.command_id]) == 1
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "EXECUTED"


def test_oauth_session_expiry_fails_the_order_as_broker_session(shoonya_oauth, strategy, alert_body, post_alert,
                                                                 run_queue):
    shoonya_oauth.expire_sessions()
    order = send(post_alert, alert_body, run_queue)
    assert order.status == "FAILED"
    assert order.tag.startswith("BROKER_SESSION:Shoonya session expired")
    assert len(shoonya_oauth.calls_to("PlaceOrder")) == 1
    assert not BrokerSession.objects.get().valid
    # The next alert does not reach the broker at all until `shoonya_login` runs again.
    second = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    assert second.tag.startswith("BROKER_SESSION:no valid Shoonya session")
    assert len(shoonya_oauth.calls_to("PlaceOrder")) == 1

    call_command("shoonya_login", shoonya_oauth.issue_auth_code())
    third = send(post_alert, alert_body, run_queue, symbol="INFY-EQ")
    assert third.status == "SENT_TO_BROKER" and third.broker_order_id


def test_credentials_never_reach_the_logs(shoonya_legacy, settings, strategy, alert_body, post_alert, run_queue,
                                          caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="orderdesk")
    settings.BROKER_READ_TIMEOUT_S = 0.3
    shoonya_legacy.set_behaviour(Behaviour.REJECT, symbol="SBIN-EQ")
    shoonya_legacy.set_behaviour(Behaviour.TIMEOUT, symbol="INFY-EQ", sleep_s=1.0)
    shoonya_legacy.set_behaviour(Behaviour.GARBAGE, symbol="TCS-EQ")
    shoonya_legacy.set_behaviour(Behaviour.EXPIRE_SESSION, symbol="HDFCBANK-EQ")

    send(post_alert, alert_body, run_queue)  # logs in, places
    for symbol in ("SBIN-EQ", "INFY-EQ", "TCS-EQ", "HDFCBANK-EQ"):
        send(post_alert, alert_body, run_queue, symbol=symbol)
    assert BrokerSession.objects.get().login_failed_at  # HDFCBANK's new session was refused at once ...
    settings.SHOONYA_LOGIN_RETRY_S = 0  # ... which holds back automatic logins: lift that
    shoonya_legacy.expire_sessions()
    relogged = send(post_alert, alert_body, run_queue, symbol="M&M-EQ", qty=2)
    assert relogged.broker_order_id, relogged.tag  # a re-login, then the order
    OrderWatcher().poll_once()
    settings.SHOONYA_PASSWORD = "a-wrong-password-for-the-log-test"
    shoonya_legacy.expire_sessions()
    OrderWatcher().poll_once()  # a failed login
    # ... and the OAuth exchange
    for name, value in shoonya_legacy.settings(oauth=True).items():
        setattr(settings, name, value)
    call_command("shoonya_login", shoonya_legacy.issue_auth_code())
    OrderWatcher().poll_once()

    tokens = {c.jkey for c in shoonya_legacy.calls if c.jkey}
    tokens |= {c.headers["authorization"].split()[-1] for c in shoonya_legacy.calls if "authorization" in c.headers}
    tokens |= {c.jdata["code"] for c in shoonya_legacy.calls_to("GenAcsTok")}
    tokens |= {c.jdata["factor2"] for c in shoonya_legacy.calls_to("QuickAuth")}
    assert len(tokens) >= 5
    secrets = {TEST_ACCOUNT.password, TEST_ACCOUNT.totp_secret, TEST_ACCOUNT.api_key, TEST_ACCOUNT.secret,
               "a-wrong-password-for-the-log-test", sessions.sha256_hex(TEST_ACCOUNT.password),
               sessions.sha256_hex(f"{TEST_ACCOUNT.user_id}|{TEST_ACCOUNT.api_key}"), *tokens}
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "noren PlaceOrder" in logged and "LOGIN FAILED" in logged  # the flow was logged ...
    leaked = [s for s in secrets if s in logged]
    assert not leaked, f"secrets in the logs: {len(leaked)}"  # ... and no secret with it


def test_an_order_missing_from_the_book_is_read_from_its_history(shoonya_legacy, strategy, alert_body, post_alert,
                                                                 run_queue):
    shoonya_legacy.set_behaviour(Behaviour.REJECT_LATER, symbol="SBIN-EQ", reason="RED:Scrip is banned")
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    shoonya_legacy.hide_from_book(order.command_id)
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert (order.status, order.tag) == ("FAILED", "BROKER_REJECTED:RED:Scrip is banned")
    [lookup] = shoonya_legacy.calls_to("SingleOrdHist")
    assert lookup.jdata["norenordno"] == order.broker_order_id


def test_a_not_ok_timeout_at_placement_is_in_doubt_and_found_in_the_book(shoonya_legacy, strategy, alert_body,
                                                                          post_alert, run_queue):
    """Noren's web tier gave up waiting for its OMS, which took the order anyway: failing it
    as BROKER_REJECTED would leave a live order nobody watches."""
    real = shoonya_legacy.handle

    def handle(route, headers, body):
        status, content_type, reply = real(route, headers, body)
        if route == "PlaceOrder":
            return 200, "application/json", '{"stat": "Not_Ok", "emsg": "Server Timeout :  "}'
        return status, content_type, reply

    shoonya_legacy.handle = handle
    order = send(post_alert, alert_body, run_queue, symbol="TCS-EQ")
    assert (order.status, order.broker_order_id) == ("SENT_TO_BROKER", None)
    assert trail(order)[-1][3] == "BROKER_IN_DOUBT:PlaceOrder: Server Timeout :  "
    claimed_long_ago(order)
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "EXECUTED" and order.broker_order_id == shoonya_legacy.order_for(order.command_id).norenordno
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1
