"""The fake Noren server itself, over plain HTTP: wire parsing, sessions, behaviours, the
demo control routes and `manage.py fake_noren`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from brokers.fake_noren import NO_DATA, SESSION_EXPIRED, TEST_ACCOUNT, Behaviour, FakeNoren, parse_body


BASE_DIR = Path(__file__).resolve().parent.parent


def post(fake, route, values, jkey=None, headers=None):
    body = "jData=" + json.dumps(values) + (f"&jKey={jkey}" if jkey else "")
    return requests.post(f"{fake.base_url}/{route}", data=body, headers=headers or {}, timeout=5)


def oauth_token(fake) -> str:
    import hashlib

    code = fake.issue_auth_code()
    checksum = hashlib.sha256((TEST_ACCOUNT.client_id + TEST_ACCOUNT.secret + code).encode()).hexdigest()
    reply = post(fake, "GenAcsTok", {"code": code, "checksum": checksum, "uid": TEST_ACCOUNT.user_id}).json()
    assert reply["stat"] == "Ok" and reply["USERID"] == TEST_ACCOUNT.user_id
    assert post(fake, "GenAcsTok", {"code": code, "checksum": checksum, "uid": TEST_ACCOUNT.user_id}).json()[
        "stat"] == "Not_Ok"  # a code works once
    return reply["access_token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}


def order(remarks="r1", tsym="RELIANCE-EQ", **fields):
    values = {"ordersource": "API", "uid": TEST_ACCOUNT.user_id, "actid": TEST_ACCOUNT.user_id, "trantype": "B",
              "prd": "I", "exch": "NSE", "tsym": tsym, "qty": "10", "dscqty": "0", "prctyp": "MKT", "prc": "0",
              "ret": "DAY", "remarks": remarks}
    values.update(fields)
    return values


def test_parse_body_takes_raw_and_form_encoded_jdata():
    assert parse_body('jData={"a": "x&y+z"}&jKey=tok') == ({"a": "x&y+z"}, "tok")
    assert parse_body("jData=%7B%22a%22%3A+%221%22%7D") == ({"a": "1"}, None)
    assert parse_body("garbage") == (None, None)


def test_calls_without_a_valid_session_get_session_expired(fake_noren):
    assert post(fake_noren, "OrderBook", {"uid": "FT4242"}).json() == {"stat": "Not_Ok", "emsg": SESSION_EXPIRED}
    assert post(fake_noren, "OrderBook", {"uid": "FT4242"}, jkey="made-up").json()["emsg"] == SESSION_EXPIRED
    token = oauth_token(fake_noren)
    assert post(fake_noren, "OrderBook", {"uid": "FT4242"}, headers=bearer(token)).json()["emsg"] == NO_DATA
    assert post(fake_noren, "OrderBook", {"uid": "FT4242"}, jkey=token).json()["emsg"] == SESSION_EXPIRED
    fake_noren.expire_sessions()
    assert post(fake_noren, "OrderBook", {"uid": "FT4242"}, headers=bearer(token)).json()["emsg"] == SESSION_EXPIRED


def test_orders_fill_after_the_delay_and_history_is_newest_first(fake_noren):
    token = oauth_token(fake_noren)
    fake_noren.fill_delay_s = 0.3
    reply = post(fake_noren, "PlaceOrder", order(), headers=bearer(token)).json()
    assert reply["stat"] == "Ok"
    [row] = post(fake_noren, "OrderBook", {"uid": "FT4242"}, headers=bearer(token)).json()
    assert (row["status"], row["remarks"], row.get("fillshares")) == ("OPEN", "r1", None)
    time.sleep(0.35)
    [row] = post(fake_noren, "OrderBook", {"uid": "FT4242"}, headers=bearer(token)).json()
    assert (row["status"], row["fillshares"], row["avgprc"]) == ("COMPLETE", "10", "2950.00")
    history = post(fake_noren, "SingleOrdHist", {"uid": "FT4242", "norenordno": reply["norenordno"]},
                   headers=bearer(token)).json()
    assert [h["status"] for h in history] == ["COMPLETE", "OPEN", "PENDING"]


def test_per_order_behaviour_beats_per_symbol(fake_noren):
    token = oauth_token(fake_noren)
    fake_noren.set_behaviour(Behaviour.REJECT, symbol="SBIN-EQ", emsg="by symbol")
    fake_noren.set_behaviour(Behaviour.ACCEPT, remarks="special")
    plain = post(fake_noren, "PlaceOrder", order("plain", "SBIN-EQ"), headers=bearer(token)).json()
    assert plain["emsg"] == "by symbol"
    assert post(fake_noren, "PlaceOrder", order("special", "SBIN-EQ"), headers=bearer(token)).json()["stat"] == "Ok"


def test_500_and_garbage_still_book_the_order_unless_told_not_to(fake_noren):
    token = oauth_token(fake_noren)
    fake_noren.set_behaviour(Behaviour.HTTP_500, remarks="a")
    fake_noren.set_behaviour(Behaviour.GARBAGE, remarks="b", record=False)
    assert post(fake_noren, "PlaceOrder", order("a"), headers=bearer(token)).status_code == 500
    garbage = post(fake_noren, "PlaceOrder", order("b"), headers=bearer(token))
    assert garbage.status_code == 200 and garbage.text.startswith("<html>")
    assert fake_noren.order_for("a") is not None and fake_noren.order_for("b") is None


def test_positions_follow_fills_and_the_last_price(fake_noren):
    token = oauth_token(fake_noren)
    post(fake_noren, "PlaceOrder", order("buy", qty="10"), headers=bearer(token))
    post(fake_noren, "PlaceOrder", order("sell", trantype="S", qty="10", prctyp="LMT", prc="2960.00"),
         headers=bearer(token))
    fake_noren.set_last_price("RELIANCE-EQ", "3000")
    [row] = post(fake_noren, "PositionBook", {"uid": "FT4242", "actid": "FT4242"}, headers=bearer(token)).json()
    assert (row["netqty"], row["rpnl"], row["urmtom"], row["lp"]) == ("0", "100.00", "0.00", "3000.00")


def test_http_control_routes(fake_noren):
    base = fake_noren.address + "/_fake"
    assert requests.post(f"{base}/behaviour", json={"behaviour": "REJECT", "symbol": "TCS-EQ", "emsg": "no"},
                         timeout=5).json() == {"ok": True}
    assert fake_noren.rules_by_symbol["TCS-EQ"].emsg == "no"
    requests.post(f"{base}/price", json={"symbol": "TCS-EQ", "price": "4000.5"}, timeout=5)
    assert str(fake_noren.last_prices[("NSE", "TCS-EQ")]) == "4000.5"
    assert requests.post(f"{base}/behaviour", json={"behaviour": "NOPE"}, timeout=5).status_code == 400
    page = requests.get(f"{base}/login?client_id=FT4242_U", timeout=5).text
    assert page.split("auth code: ")[1].split()[0] in fake_noren.auth_codes
    assert requests.get(f"{base}/orders", timeout=5).json() == []


def test_fake_noren_command_serves_until_interrupted():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "manage.py", "fake_noren", "--port", "0"], cwd=BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("fake Noren OMS at http://127.0.0.1:"), first
        base_url = first.split()[4]
        reply = requests.post(f"{base_url}/OrderBook", data='jData={"uid": "x"}', timeout=5).json()
        assert reply["emsg"] == SESSION_EXPIRED
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_timeout_records_the_order_and_answers_late():
    with FakeNoren() as fake:
        fake.set_behaviour(Behaviour.TIMEOUT, sleep_s=0.5)
        fake.tokens["t"] = "LEGACY"
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            requests.post(f"{fake.base_url}/PlaceOrder", data="jData=" + json.dumps(order()) + "&jKey=t",
                          timeout=(1, 0.2))
        assert fake.order_for("r1") is not None and time.monotonic() - started < 0.45
