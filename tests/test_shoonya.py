"""The Shoonya adapter against the fake Noren server: wire format, outcomes of a place call,
sessions (legacy QuickAuth and OAuth), book, order history and positions, and logs free of
credentials."""

import json
import logging
import socket
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from brokers import shoonya_session as sessions
from brokers.base import BookStatus, BrokerInDoubt, BrokerUnavailable, PlaceOutcome, PlaceRequest
from brokers.fake_noren import SESSION_EXPIRED, TEST_ACCOUNT, Behaviour
from brokers.models import BrokerSession
from brokers.noren import redact
from brokers.registry import get_broker
from brokers.shoonya import price_text

pytestmark = pytest.mark.django_db


def market(command_id="cmd-1", symbol="RELIANCE-EQ", **overrides) -> PlaceRequest:
    fields = dict(client_order_id=command_id, exchange="NSE", symbol=symbol, side="BUY", qty=10,
                  order_type="MARKET", product="MIS")
    fields.update(overrides)
    return PlaceRequest(**fields)


# --- the wire ---------------------------------------------------------------------------------

def test_legacy_first_call_logs_in_then_places_with_jkey(shoonya_legacy):
    result = get_broker().place(market())
    assert result.outcome == PlaceOutcome.ACCEPTED and result.broker_order_id
    [login] = shoonya_legacy.calls_to("QuickAuth")
    assert set(login.jdata) == {"source", "apkversion", "uid", "pwd", "factor2", "vc", "appkey", "imei"}
    assert login.jdata["source"] == "API" and login.jdata["uid"] == TEST_ACCOUNT.user_id
    assert login.jdata["pwd"] == sessions.sha256_hex(TEST_ACCOUNT.password)
    assert login.jdata["appkey"] == sessions.sha256_hex(f"{TEST_ACCOUNT.user_id}|{TEST_ACCOUNT.api_key}")
    assert login.jkey is None and "authorization" not in login.headers

    [place] = shoonya_legacy.calls_to("PlaceOrder")
    session = BrokerSession.objects.get()
    assert session.valid and session.kind == "LEGACY"
    assert place.jkey == session.token
    assert place.body == "jData=" + json.dumps(place.jdata) + "&jKey=" + session.token
    assert "authorization" not in place.headers and "content-type" not in place.headers
    assert place.jdata == {
        "ordersource": "API", "uid": "FT4242", "actid": "FT4242", "trantype": "B", "prd": "I", "exch": "NSE",
        "tsym": "RELIANCE-EQ", "qty": "10", "dscqty": "0", "prctyp": "MKT", "prc": "0", "ret": "DAY",
        "remarks": "cmd-1",
    }


def test_oauth_sends_the_bearer_token_and_no_jkey(shoonya_oauth):
    assert get_broker().place(market()).outcome == PlaceOutcome.ACCEPTED
    [place] = shoonya_oauth.calls_to("PlaceOrder")
    session = BrokerSession.objects.get()
    assert session.kind == "OAUTH"
    assert place.headers["authorization"] == f"Bearer {session.token}"
    assert place.headers["content-type"] == "application/json; charset=utf-8"
    assert place.jkey is None
    assert not shoonya_oauth.calls_to("QuickAuth")


@pytest.mark.parametrize("order_type, price, trigger, prctyp, prc, trgprc", [
    ("LIMIT", Decimal("2950.5000"), None, "LMT", "2950.50", None),
    ("SL", Decimal("2940.0000"), Decimal("2945.2500"), "SL-LMT", "2940.00", "2945.25"),
    ("SL-M", None, Decimal("2945.0000"), "SL-MKT", "0", "2945.00"),
])
def test_price_types_map_to_noren(shoonya_legacy, order_type, price, trigger, prctyp, prc, trgprc):
    request = market(order_type=order_type, price=price, trigger_price=trigger, side="SELL", product="CNC")
    assert get_broker().place(request).outcome == PlaceOutcome.ACCEPTED
    [place] = shoonya_legacy.calls_to("PlaceOrder")
    assert (place.jdata["prctyp"], place.jdata["prc"], place.jdata.get("trgprc")) == (prctyp, prc, trgprc)
    assert (place.jdata["trantype"], place.jdata["prd"]) == ("S", "C")


def test_symbol_is_url_encoded_and_algo_id_sent_when_configured(shoonya_legacy, settings):
    settings.SHOONYA_ALGO_ID = "ALGO-77"
    result = get_broker().place(market(symbol="M&M-EQ", product="NRML"))
    assert result.outcome == PlaceOutcome.ACCEPTED
    [place] = shoonya_legacy.calls_to("PlaceOrder")
    assert '"tsym": "M%26M-EQ"' in place.body
    assert place.jdata["algo_id"] == "ALGO-77" and place.jdata["prd"] == "M"
    assert shoonya_legacy.order_for("cmd-1").fields["tsym"] == "M&M-EQ"


def test_price_text_is_plain_decimal():
    assert price_text(Decimal("2950.5000")) == "2950.50"
    assert price_text(Decimal("100")) == "100.00"
    assert price_text(Decimal("0.0525")) == "0.0525"
    assert price_text(None) == "0"


# --- outcomes of a place call ----------------------------------------------------------------------

def test_not_ok_is_rejected_with_the_emsg_verbatim(shoonya_legacy):
    shoonya_legacy.set_behaviour(Behaviour.REJECT, symbol="SBIN-EQ", emsg="RED:Order price is out of range")
    result = get_broker().place(market(symbol="SBIN-EQ"))
    assert (result.outcome, result.message) == (PlaceOutcome.REJECTED, "RED:Order price is out of range")


@pytest.mark.parametrize("behaviour", [Behaviour.HTTP_500, Behaviour.GARBAGE, Behaviour.TIMEOUT])
def test_no_usable_answer_is_in_doubt_and_sent_once(shoonya_legacy, settings, behaviour):
    settings.BROKER_READ_TIMEOUT_S = 0.3
    shoonya_legacy.set_behaviour(behaviour, symbol="INFY-EQ", sleep_s=1.5)
    with pytest.raises(BrokerInDoubt):
        get_broker().place(market(symbol="INFY-EQ"))
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1
    assert shoonya_legacy.order_for("cmd-1") is not None  # it did reach the broker


def test_connection_refused_is_a_definite_not_sent(shoonya_legacy, settings):
    sessions.store("LEGACY", "a-token")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.SHOONYA_BASE_URL = f"http://127.0.0.1:{port}/NorenWClientAPI"
    result = get_broker().place(market())
    assert result.outcome == PlaceOutcome.REJECTED
    assert result.message.startswith("not sent: PlaceOrder not sent, cannot connect to the broker")


def test_a_4xx_without_a_noren_reply_is_a_definite_refusal(shoonya_legacy):
    broker = get_broker()
    broker.order_book()  # logs in
    shoonya_legacy.handle = lambda route, headers, body: (404, "text/plain", "no such route")
    result = broker.place(market())
    assert result.outcome == PlaceOutcome.REJECTED and "PlaceOrder: HTTP 404" in result.message


def test_http_401_is_an_expired_session(shoonya_oauth):
    shoonya_oauth.handle = lambda route, headers, body: (401, "text/plain", "Unauthorized")
    result = get_broker().place(market())
    assert result.outcome == PlaceOutcome.SESSION_INVALID
    assert not BrokerSession.objects.get().valid


def test_shoonya_needs_a_user_id(settings, db):
    from django.core.exceptions import ImproperlyConfigured

    from brokers import registry

    settings.ORDERDESK_BROKER, settings.SHOONYA_USER_ID = "shoonya", ""
    registry._broker.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="SHOONYA_USER_ID"):
        get_broker()
    registry._broker.cache_clear()


# --- sessions -----------------------------------------------------------------------------------------

def test_legacy_session_expiry_logs_in_once_and_sends_the_order_once_more(shoonya_legacy):
    broker = get_broker()
    assert broker.place(market("first")).outcome == PlaceOutcome.ACCEPTED
    old_token = BrokerSession.objects.get().token
    shoonya_legacy.expire_sessions()

    result = broker.place(market("second"))
    assert result.outcome == PlaceOutcome.ACCEPTED
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 2
    places = [c for c in shoonya_legacy.calls_to("PlaceOrder") if c.jdata["remarks"] == "second"]
    assert [c.jkey == old_token for c in places] == [True, False]  # refused, then once with the new one
    assert len([o for o in shoonya_legacy.orders if o.fields["remarks"] == "second"]) == 1
    assert BrokerSession.objects.get().token != old_token


def test_legacy_expiry_that_persists_gives_up_after_one_retry(shoonya_legacy):
    shoonya_legacy.set_behaviour(Behaviour.EXPIRE_SESSION, symbol="TCS-EQ")
    result = get_broker().place(market(symbol="TCS-EQ"))
    assert result.outcome == PlaceOutcome.SESSION_INVALID
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 2
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 2  # the first login, and one more
    assert not BrokerSession.objects.get().valid


def test_oauth_session_expiry_marks_the_session_invalid_and_fails_without_a_loop(shoonya_oauth, caplog):
    shoonya_oauth.expire_sessions()
    with caplog.at_level(logging.ERROR, logger="orderdesk"):
        result = get_broker().place(market())
    assert result.outcome == PlaceOutcome.SESSION_INVALID
    assert "shoonya_login" in result.message
    assert len(shoonya_oauth.calls_to("PlaceOrder")) == 1
    assert not shoonya_oauth.calls_to("QuickAuth")
    row = BrokerSession.objects.get()
    assert not row.valid and row.note.startswith("session expired")
    assert "SHOONYA SESSION EXPIRED" in caplog.text

    # Next order: nothing is sent at all until someone logs in again.
    assert get_broker().place(market("again")).outcome == PlaceOutcome.SESSION_INVALID
    assert len(shoonya_oauth.calls_to("PlaceOrder")) == 1


def test_a_session_stored_meanwhile_by_another_process_is_used_for_the_one_retry(shoonya_oauth):
    stale = sessions.load()
    shoonya_oauth.expire_sessions()
    sessions.gen_acs_tok(sessions.new_client(), shoonya_oauth.issue_auth_code())  # `shoonya_login` elsewhere
    broker = get_broker()
    reply = broker._send("PlaceOrder", {"uid": "x"}, stale)  # what a worker holding the old token sees
    assert reply["emsg"] == SESSION_EXPIRED
    assert broker._after_expiry(stale, "PlaceOrder").token == sessions.load().token
    assert sessions.load() is not None  # the new session was not invalidated


def test_failed_legacy_login_is_not_retried_at_once(shoonya_legacy, settings):
    settings.SHOONYA_PASSWORD = "wrong"
    broker = get_broker()
    first = broker.place(market("a"))
    assert first.outcome == PlaceOutcome.SESSION_INVALID and "Wrong Password" in first.message
    second = broker.place(market("b"))
    assert second.outcome == PlaceOutcome.SESSION_INVALID and "next attempt in" in second.message
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 1
    assert not shoonya_legacy.calls_to("PlaceOrder")
    with pytest.raises(BrokerUnavailable):
        broker.order_book()
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 1


def test_oauth_without_a_stored_session_sends_nothing(fake_noren, shoonya_oauth_without_session):
    result = get_broker().place(market())
    assert result.outcome == PlaceOutcome.SESSION_INVALID and "shoonya_login" in result.message
    assert fake_noren.calls == []


def test_shoonya_login_command_stores_the_session_and_never_prints_the_token(fake_noren, shoonya_oauth_without_session,
                                                                          capsys):
    code = fake_noren.issue_auth_code()
    call_command("shoonya_login", f"https://example.invalid/redirect?code={code}&state=x")
    [exchange] = fake_noren.calls_to("GenAcsTok")
    assert exchange.jdata == {"code": code, "uid": TEST_ACCOUNT.user_id, "checksum": sessions.sha256_hex(
        TEST_ACCOUNT.client_id + TEST_ACCOUNT.secret + code)}
    row = BrokerSession.objects.get()
    assert row.valid and row.kind == "OAUTH"
    out = capsys.readouterr().out
    assert "session stored for FT4242" in out and row.token not in out
    with pytest.raises(CommandError, match="Invalid code"):
        call_command("shoonya_login", "not-a-code")


def test_shoonya_login_prints_the_url_and_reads_the_code(fake_noren, shoonya_oauth_without_session, capsys,
                                                         monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: fake_noren.issue_auth_code())
    call_command("shoonya_login")
    out = capsys.readouterr().out
    assert f"{fake_noren.login_url}?client_id={TEST_ACCOUNT.client_id}" in out
    assert BrokerSession.objects.get().valid


def test_the_admin_shows_the_session_without_its_token_and_its_str_hides_it(shoonya_oauth, rf):
    from django.contrib import admin

    row = BrokerSession.objects.get()
    session_admin = admin.site._registry[BrokerSession]  # read-only, its token neither listed nor shown
    assert "token" not in session_admin.list_display and "token" not in session_admin.get_fields(rf.get("/"))
    assert not session_admin.has_change_permission(rf.get("/"))
    assert row.token not in str(row) and row.token not in repr(row)
    assert row.token not in repr(sessions.load())


# --- reads ------------------------------------------------------------------------------------------

def test_order_book_maps_noren_rows(shoonya_legacy):
    broker = get_broker()
    shoonya_legacy.set_behaviour(Behaviour.REJECT_LATER, symbol="SBIN-EQ", reason="RED:Margin Shortfall")
    shoonya_legacy.set_behaviour(Behaviour.CANCEL, symbol="INFY-EQ", fill_qty=4, reason="Canceled by user")
    shoonya_legacy.set_behaviour(Behaviour.PARTIAL, symbol="TCS-EQ", fill_qty=3)
    ids = {}
    for command_id, symbol in [("c-ok", "RELIANCE-EQ"), ("c-rej", "SBIN-EQ"), ("c-can", "INFY-EQ"),
                               ("c-part", "TCS-EQ")]:
        ids[command_id] = broker.place(market(command_id, symbol=symbol)).broker_order_id
    book = {e.client_order_id: e for e in broker.order_book()}
    [call] = shoonya_legacy.calls_to("OrderBook")
    assert call.jdata == {"ordersource": "API", "uid": "FT4242"}

    ok = book["c-ok"]
    assert (ok.broker_order_id, ok.status, ok.raw_status, ok.filled_qty, ok.avg_price) == (
        ids["c-ok"], BookStatus.COMPLETE, "COMPLETE", 10, Decimal("2950.00"))
    assert (book["c-rej"].status, book["c-rej"].reason) == (BookStatus.REJECTED, "RED:Margin Shortfall")
    assert (book["c-can"].status, book["c-can"].raw_status, book["c-can"].filled_qty, book["c-can"].reason) == (
        BookStatus.CANCELLED, "CANCELED", 4, "Canceled by user")
    assert (book["c-part"].status, book["c-part"].filled_qty) == (BookStatus.OPEN, 3)


def test_no_data_book_is_an_empty_successful_read(shoonya_legacy):
    assert get_broker().order_book() == []
    assert get_broker().positions() == []
    assert get_broker().order_status("25010100000001") is None


def test_session_expired_book_reply_raises_broker_unavailable(shoonya_oauth):
    shoonya_oauth.expire_sessions()
    with pytest.raises(BrokerUnavailable, match="expired"):
        get_broker().order_book()
    assert len(shoonya_oauth.calls_to("OrderBook")) == 1


def test_failed_book_replies_raise_broker_unavailable(shoonya_legacy, settings):
    broker = get_broker()
    broker.order_book()  # logs in
    shoonya_legacy.handle = lambda route, headers, body: (500, "text/html", "<html>oops</html>")
    with pytest.raises(BrokerUnavailable, match="HTTP 500"):
        broker.order_book()
    not_ok = '{"stat": "Not_Ok", "emsg": "Server Timeout :  "}'
    shoonya_legacy.handle = lambda route, headers, body: (200, "application/json", not_ok)
    with pytest.raises(BrokerUnavailable, match="Server Timeout"):
        broker.order_book()


def test_order_status_reads_the_latest_history_row(shoonya_legacy):
    broker = get_broker()
    shoonya_legacy.set_behaviour(Behaviour.REJECT_LATER, symbol="SBIN-EQ", reason="RED:no margin")
    order_id = broker.place(market("c-1", symbol="SBIN-EQ")).broker_order_id
    entry = broker.order_status(order_id)
    [call] = shoonya_legacy.calls_to("SingleOrdHist")
    assert call.jdata == {"ordersource": "API", "uid": "FT4242", "norenordno": order_id}
    assert (entry.broker_order_id, entry.client_order_id, entry.status, entry.reason) == (
        order_id, "c-1", BookStatus.REJECTED, "RED:no margin")


def test_positions_carry_pnl_from_fills_and_the_last_price(shoonya_legacy):
    broker = get_broker()
    broker.place(market("buy", qty=10))
    broker.place(market("sell", side="SELL", qty=4, order_type="LIMIT", price=Decimal("2960.00")))
    shoonya_legacy.set_last_price("RELIANCE-EQ", "2955.00")
    [pos] = broker.positions()
    [call] = shoonya_legacy.calls_to("PositionBook")
    assert call.jdata == {"uid": "FT4242", "actid": "FT4242"}
    assert (pos.exchange, pos.symbol, pos.product, pos.net_qty) == ("NSE", "RELIANCE-EQ", "MIS", 6)
    assert pos.net_avg_price == Decimal("2950.00")
    assert pos.realized_pnl == Decimal("40.00")  # 4 x (2960 - 2950)
    assert pos.unrealized_pnl == Decimal("30.00")  # 6 x (2955 - 2950)
    assert pos.last_price == Decimal("2955.00")


def test_logout_ends_the_session(shoonya_oauth):
    broker = get_broker()
    assert broker.logout() is True
    assert shoonya_oauth.calls_to("Logout")[0].jdata == {"ordersource": "API", "uid": "FT4242"}
    assert sessions.load() is None


# --- secrets ------------------------------------------------------------------------------------------

def test_redact_masks_secret_fields_and_known_values():
    text = ('jData={"uid": "FT1", "pwd": "abc123", "factor2": "123456", "appkey": "k"}&jKey=tok123 '
            'Authorization: Bearer eyJtoken {"access_token": "at", "susertoken": "st"} my-password')
    clean = redact(text, ("my-password",))
    for secret in ("abc123", "123456", "tok123", "eyJtoken", '"at"', '"st"', "my-password"):
        assert secret not in clean
    assert '"uid": "FT1"' in clean


# --- review: defects found and pinned -----------------------------------------------------------



def test_a_new_session_refused_at_once_does_not_start_a_login_loop(shoonya_legacy):
    """One re-login per expiry, not one per call: when the fresh session is refused straight
    away, further automatic logins wait SHOONYA_LOGIN_RETRY_S like after a failed login."""
    shoonya_legacy.set_behaviour(Behaviour.EXPIRE_SESSION)  # every PlaceOrder: "Session Expired"
    broker = get_broker()
    assert broker.place(market("a")).outcome == PlaceOutcome.SESSION_INVALID
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 2
    for command_id in ("b", "c", "d"):
        result = broker.place(market(command_id))
        assert result.outcome == PlaceOutcome.SESSION_INVALID and "next attempt in" in result.message
    with pytest.raises(BrokerUnavailable):
        broker.order_book()
    assert len(shoonya_legacy.calls_to("QuickAuth")) == 2  # not 2 more per call
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 2  # only the first order's two, both refused


def test_a_login_that_got_no_answer_does_not_block_the_next_login(shoonya_legacy, settings):
    """A QuickAuth lost to a network blip is not a wrong password: it must not fail every
    order for the next SHOONYA_LOGIN_RETRY_S without even trying."""
    real = shoonya_legacy.handle
    broken = {"QuickAuth": 1}

    def handle(route, headers, body):
        if broken.get(route):
            broken[route] -= 1
            return 502, "text/html", "<html>502 Bad Gateway</html>"
        return real(route, headers, body)

    shoonya_legacy.handle = handle
    broker = get_broker()
    first = broker.place(market("a"))
    assert first.outcome == PlaceOutcome.SESSION_INVALID and "HTTP 502" in first.message
    assert broker.place(market("b")).outcome == PlaceOutcome.ACCEPTED  # logs in at once
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1


@pytest.mark.parametrize("emsg", ["Server Timeout :  ", "Error Occurred : Request timed out"])
def test_a_not_ok_that_says_timeout_is_in_doubt_not_rejected(shoonya_legacy, emsg):
    """A Not_Ok timeout from Noren's web tier says nothing about whether the OMS took the
    order: failing it could leave a live order we no longer watch."""
    shoonya_legacy.set_behaviour(Behaviour.REJECT, symbol="SBIN-EQ", emsg=emsg)
    with pytest.raises(BrokerInDoubt, match="Timeout|timed out"):
        get_broker().place(market(symbol="SBIN-EQ"))
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1


def test_oauth_login_for_another_account_is_refused(fake_noren, shoonya_oauth_without_session):
    """The login page can be completed with any account: a token for another user id must
    not be stored as SHOONYA_USER_ID's session (orders would go to the wrong account)."""
    fake_noren.account.user_id = "OTHER99"  # the account that actually logged in
    with pytest.raises(sessions.LoginFailed, match="OTHER99"):
        sessions.gen_acs_tok(sessions.new_client(), fake_noren.issue_auth_code())
    assert sessions.load() is None


def test_a_token_cut_by_the_error_snippet_is_still_masked(shoonya_legacy):
    from brokers.noren import SNIPPET_CHARS, NoAnswer

    token = "T" * 64
    padding = "x" * (SNIPPET_CHARS - 40)
    body = json.dumps({"pad": padding, "susertoken": token})
    assert len(body) > SNIPPET_CHARS and body.index(token) < SNIPPET_CHARS
    shoonya_legacy.handle = lambda route, headers, raw: (500, "application/json", body)
    client = sessions.new_client()
    with pytest.raises(NoAnswer) as raised:
        client.post("OrderBook", {"uid": "x"})
    assert "TTTT" not in str(raised.value)


@pytest.mark.parametrize("raw, status", [
    ("PENDING", BookStatus.OPEN), ("OPEN", BookStatus.OPEN), ("TRIGGER_PENDING", BookStatus.OPEN),
    ("COMPLETE", BookStatus.COMPLETE), ("REJECTED", BookStatus.REJECTED), ("REJECT", BookStatus.REJECTED),
    ("CANCELED", BookStatus.CANCELLED), ("CANCELLED", BookStatus.CANCELLED), ("EXPIRED", BookStatus.EXPIRED),
    ("INVALID_STATUS_TYPE", BookStatus.UNKNOWN), ("", BookStatus.UNKNOWN),
])
def test_every_noren_status_is_mapped(raw, status):
    from brokers.shoonya import book_entry

    entry = book_entry({"norenordno": "1", "status": raw, "remarks": "c"})
    assert (entry.status, entry.raw_status) == (status, raw)


def test_book_and_position_rows_with_strings_and_missing_fields():
    from brokers.shoonya import book_entry, position

    entry = book_entry({"norenordno": 25010100000001, "status": "COMPLETE", "fillshares": "10",
                        "avgprc": "2950.05", "remarks": "c"})
    assert (entry.broker_order_id, entry.filled_qty, entry.avg_price) == ("25010100000001", 10, Decimal("2950.05"))
    bare = book_entry({"norenordno": "2", "status": "OPEN"})
    assert (bare.client_order_id, bare.filled_qty, bare.avg_price, bare.reason) == ("", 0, None, "")
    assert book_entry({"status": "OPEN"}) is None
    odd = book_entry({"norenordno": "3", "status": "OPEN", "fillshares": "abc", "avgprc": "NaN"})
    assert (odd.filled_qty, odd.avg_price) == (0, None)

    pos = position({"exch": "NSE", "tsym": "M&M-EQ", "prd": "I", "netqty": "-5", "netavgprc": "2890.10",
                    "rpnl": "-12.50", "urmtom": "4.00", "lp": "2889.30"})
    assert (pos.symbol, pos.product, pos.net_qty, pos.net_avg_price) == ("M&M-EQ", "MIS", -5, Decimal("2890.10"))
    assert (pos.realized_pnl, pos.unrealized_pnl, pos.last_price) == (Decimal("-12.50"), Decimal("4.00"),
                                                                      Decimal("2889.30"))
    empty = position({"tsym": "SBIN-EQ"})
    assert (empty.net_qty, empty.net_avg_price, empty.realized_pnl, empty.last_price) == (0, 0, 0, None)


def test_order_feed_messages_are_read_as_book_rows():
    from brokers.shoonya import order_update_entry

    fill = order_update_entry({"t": "om", "norenordno": "25010100000007", "status": "OPEN", "reporttype": "Fill",
                               "fillshares": "4", "avgprc": "815.50", "flqty": "4", "flprc": "815.50",
                               "flid": "1002", "remarks": "cmd-1", "exch_tm": "01-12-2026 10:15:01"})
    assert (fill.broker_order_id, fill.client_order_id, fill.status, fill.filled_qty, fill.avg_price,
            fill.fill_id) == ("25010100000007", "cmd-1", BookStatus.OPEN, 4, Decimal("815.50"), "25010100000007:1002")
    other_spelling = order_update_entry({"t": "om", "norenoordno": "8", "status": "REJECTED",
                                         "reporttype": "Rejected", "rejreason": "RED:Margin Shortfall"})
    assert (other_spelling.broker_order_id, other_spelling.status, other_spelling.reason, other_spelling.fill_id) == (
        "8", BookStatus.REJECTED, "RED:Margin Shortfall", "")
    assert order_update_entry({"t": "om", "status": "OPEN"}) is None
