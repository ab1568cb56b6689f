"""The symbol master: parsing Shoonya's files, sync_instruments against zips served from a local
HTTP server, the intake's instrument checks, lots, slicing at the freeze quantity, the search API,
and the paper broker and the fake Noren server taking the slices."""

import io
import threading
import zipfile
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django_q.models import Schedule
from rest_framework.authtoken.models import Token

from brokers import instruments
from brokers.models import FreezeQuantity, Instrument, InstrumentMaster, PaperOrder
from orders.models import EventKind, Order, Status
from risk.services import set_limits
from tests.desk import assert_blocked, assert_passed, leg

pytestmark = pytest.mark.django_db

# Shuffled columns, a trailing comma on every line, a placeholder row with no trading symbol.
NSE_FILE = ("Token,TradingSymbol,Exchange,TickSize,LotSize,Symbol,Instrument,\n"
            "2885,RELIANCE-EQ,NSE,0.05,1,RELIANCE,EQ,\n"
            "3045,SBIN-EQ,NSE,0.05,1,SBIN,EQ,\n"
            "99999,,NSE,0.05,1,,EQ,\n")
NFO_FILE = ("Exchange,Token,LotSize,Symbol,TradingSymbol,Expiry,Instrument,OptionType,StrikePrice,TickSize,\n"
            "NFO,35001,75,NIFTY,NIFTY26DEC24000CE,31-DEC-2026,OPTIDX,CE,24000,0.05,\n"
            "NFO,35002,75,NIFTY,NIFTY26DEC24000PE,31-DEC-2026,OPTIDX,PE,24000.00,0.05,\n"
            "NFO,35003,75,NIFTY,NIFTY26DECF,31-DEC-2026,FUTIDX,XX,-1,0.05,\n"
            "NFO,36001,30,BANKNIFTY,BANKNIFTY26DECF,31-DEC-2026,FUTIDX,XX,0,0.20,\n")


def zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def master_server(settings):
    """A local HTTP server for the masters: {path: bytes} (absent paths answer 404)."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SHOONYA_MASTER_URL = f"http://127.0.0.1:{server.server_port}/masters"
    files["/masters/NSE_symbols.txt.zip"] = zipped("NSE_symbols.txt", NSE_FILE)
    files["/masters/NFO_symbols.txt.zip"] = zipped("NFO_symbols.txt", NFO_FILE)
    yield files
    server.shutdown()
    server.server_close()


@pytest.fixture
def master(master_server):
    """NSE and NFO masters loaded, NIFTY's freeze quantity 1800 from the freeze table."""
    FreezeQuantity.objects.create(exchange="NFO", symbol="NIFTY", freeze_qty=1800)
    assert instruments.sync(["NSE", "NFO"], say=lambda line: None) == {}


def sync(*exchanges) -> str:
    out = io.StringIO()
    call_command("sync_instruments", "--exchange", *exchanges, stdout=out)
    return out.getvalue()


# --- parsing and the sync -------------------------------------------------------------------

def test_an_equity_and_a_derivative_master_are_read_by_header_name(master_server):
    printed = sync("NSE", "NFO")
    assert "NSE: 2 instruments loaded" in printed and "NFO: 4 instruments loaded" in printed
    assert sorted(Instrument.objects.filter(exchange="NSE").values_list("trading_symbol", "token", "lot_size")) == [
        ("RELIANCE-EQ", "2885", 1), ("SBIN-EQ", "3045", 1)]  # the placeholder row is dropped
    call = Instrument.objects.get(trading_symbol="NIFTY26DEC24000CE")
    assert (call.exchange, call.symbol, call.instrument_type, call.expiry, call.strike, call.option_type,
            call.lot_size, call.tick_size, call.freeze_qty) == (
        "NFO", "NIFTY", "OPTIDX", date(2026, 12, 31), Decimal("24000"), "CE", 75, Decimal("0.05"), None)
    future = Instrument.objects.get(trading_symbol="BANKNIFTY26DECF")
    assert (future.strike, future.option_type, future.tick_size) == (None, "", Decimal("0.20"))
    assert InstrumentMaster.objects.get(exchange="NFO").rows == 4


@pytest.mark.parametrize("served, why", [
    (None, "answered HTTP 404"),
    (b"<html>maintenance</html>", "not a zip file"),
    (zipped("NFO_symbols.txt", "Exchange,Token,Symbol\nNFO,1,X\n"), "the header lacks TradingSymbol, LotSize, TickSize"),
    (zipped("NFO_symbols.txt", NFO_FILE.replace(",75,NIFTY,NIFTY26DEC24000PE", ",lot,NIFTY,NIFTY26DEC24000PE")),
     "line 3: LotSize 'lot' is not a whole number above 0"),
])
def test_a_failed_download_or_file_keeps_yesterdays_rows_and_says_why(master_server, served, why):
    sync("NSE", "NFO")
    master_server["/masters/NSE_symbols.txt.zip"] = zipped("NSE_symbols.txt", NSE_FILE.replace("3045,SBIN-EQ", "1,X-EQ"))
    if served is None:
        del master_server["/masters/NFO_symbols.txt.zip"]
    else:
        master_server["/masters/NFO_symbols.txt.zip"] = served
    with pytest.raises(CommandError, match=f"not loaded: NFO .*{why}"):
        sync("NSE", "NFO")
    assert Instrument.objects.filter(exchange="NFO").count() == 4  # yesterday's rows
    assert Instrument.objects.filter(exchange="NSE", trading_symbol="X-EQ").exists()  # the good one replaced
    state = InstrumentMaster.objects.get(exchange="NFO")
    assert state.rows == 4 and why in state.error


def test_a_freeze_file_fills_the_table_and_the_daily_schedule_runs_at_0830_ist(master_server, tmp_path):
    path = tmp_path / "qtyfreeze.csv"
    path.write_text("SR.NO,SYMBOL,VOL_FRZ_QTY\n1,NIFTY,1800\n2,BANKNIFTY,900\n")
    out = io.StringIO()
    call_command("sync_instruments", "--exchange", "NFO", "--freeze-file", str(path), stdout=out)
    assert "freeze quantities: 2 loaded" in out.getvalue()
    assert dict(FreezeQuantity.objects.values_list("symbol", "freeze_qty")) == {"NIFTY": 1800, "BANKNIFTY": 900}
    assert instruments.specs("NFO", ["BANKNIFTY26DECF"])["BANKNIFTY26DECF"].freeze_qty == 900
    schedule = Schedule.objects.get(name="sync_instruments")
    assert (schedule.func, schedule.schedule_type, schedule.cron) == ("brokers.tasks.sync_instruments", "C",
                                                                     "30 8 * * *")
    assert django_settings.Q_CLUSTER["time_zone"] == "Asia/Kolkata"


# --- the intake -----------------------------------------------------------------------------

def nfo(desk, *legs, execution_type="ENTRY"):
    return desk.post(execution_type, list(legs), exchange="NFO")


def test_without_a_master_nothing_of_instruments_is_checked(desk, master_server):
    sync("NFO")  # a master of another exchange
    assert_passed(desk.entry(symbol="NOT-LISTED-EQ", qty=7, price="101.03"))


def test_each_refusal_with_its_tag(desk, master):
    [unknown] = nfo(desk, leg("NIFTY26DEC99999CE", qty=75))
    assert_blocked(unknown, "GUARD_BLOCKED:UNKNOWN_SYMBOL", "NFO:NIFTY26DEC99999CE is not in the symbol master")
    [lots] = nfo(desk, leg("NIFTY26DEC24000CE", qty=30))
    assert_blocked(lots, "GUARD_BLOCKED:LOT_SIZE qty 30 lot 75")
    [tick] = nfo(desk, leg("NIFTY26DEC24000CE", qty=75, price="101.03"))
    assert_blocked(tick, "GUARD_BLOCKED:TICK_SIZE price 101.03 tick 0.05")
    [trigger] = nfo(desk, leg("NIFTY26DEC24000CE", qty=75, price="101.05", order_type="SL", trigger_price="100.02"))
    assert_blocked(trigger, "GUARD_BLOCKED:TICK_SIZE trigger_price 100.02 tick 0.05")
    [frozen] = nfo(desk, leg("NIFTY26DEC24000CE", qty=3600))
    assert_blocked(frozen, "GUARD_BLOCKED:FREEZE_QTY qty 3600 > 1800")
    [fits] = nfo(desk, leg("NIFTY26DEC24000PE", qty=1800, price="101.05"))
    assert_passed(fits)
    [listed] = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=3)])  # NSE's master lists it
    assert_passed(listed)


def test_lots_become_the_quantity_and_the_audit_row_says_so(desk, master, alert_body, post_alert):
    [order] = nfo(desk, {"symbol": "NIFTY26DEC24000CE", "side": "BUY", "lots": 3, "product": "NRML",
                         "order_type": "LIMIT", "price": "120.50"})
    assert (order.qty, order.status) == (225, Status.CREATED)
    assert order.events.get(kind=EventKind.CREATED).detail == "lots 3 x lot size 75 = qty 225"
    for exchange, symbol, words in (
            ("BFO", "SENSEX26DECF", "no symbol master is loaded for BFO: give qty (manage.py sync_instruments loads "
                                     "the masters)"),
            ("NFO", "NIFTY26DEC99999CE", "NFO:NIFTY26DEC99999CE is not in the symbol master: its lot size is unknown")):
        reply = post_alert(alert_body(exchange=exchange, legs=[{"symbol": symbol, "side": "BUY", "lots": 1,
                                                               "product": "NRML"}]))
        assert (reply.status_code, reply.json()["errors"]["legs"][0]["lots"]) == (400, [words])
    both = post_alert(alert_body(legs=[{"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 1, "lots": 1, "product": "MIS"}]))
    assert both.status_code == 400 and both.json()["errors"]["legs"][0]["lots"] == ["give qty or lots, not both"]
    assert Order.objects.count() == 1


def test_a_leg_above_the_freeze_qty_is_split_into_slices_registered_together(desk, master, strategy):
    strategy.split_above_freeze = True
    strategy.save()
    orders = nfo(desk, leg("NIFTY26DEC24000CE", qty=4500, product="NRML", price="120.50"))
    assert [(o.leg, o.slice, o.qty, o.status) for o in orders] == [
        (1, 1, 1800, Status.CREATED), (1, 2, 1800, Status.CREATED), (1, 3, 900, Status.CREATED)]
    assert len({o.command_id for o in orders}) == 3
    assert orders[1].events.get(kind=EventKind.CREATED).detail == (
        "slice 2 of 3 of qty 4500, at most 1800 each (freeze qty 1800)")
    desk.send()
    placed = PaperOrder.objects.order_by("id")  # the paper broker: one order per slice, its own remarks
    assert [(p.client_order_id, p.qty) for p in placed] == [(o.command_id, o.qty) for o in orders]


def test_slices_are_all_or_none(desk, master, strategy):
    strategy.split_above_freeze = True
    strategy.save()
    set_limits(strategy, actor="test", max_orders_per_min=2)  # the third slice is over the rate
    orders = nfo(desk, leg("NIFTY26DEC24000CE", qty=4500, product="NRML", price="120.50"))
    assert {(o.status, o.tag) for o in orders} == {
        (Status.FAILED, "RISK_BLOCKED:ORDER_RATE_LIMIT 3 orders in 60s > 2")}
    assert desk.run_queue() == [] and not PaperOrder.objects.exists()


def test_exit_slices_count_together_against_the_position(desk, master, strategy):
    strategy.split_above_freeze = True
    strategy.save()
    entry = nfo(desk, leg("NIFTY26DEC24000CE", qty=2700, product="NRML", price="120.50"))
    assert [o.qty for o in entry] == [1800, 900]  # one leg, two slices: not duplicates of each other
    for order in entry:
        desk.through(order)
    too_much = nfo(desk, leg("NIFTY26DEC24000CE", side="SELL", qty=3600, product="NRML", price="121"),
                   execution_type="EXIT")
    assert [(o.slice, o.tag) for o in too_much] == [
        (1, "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION"), (2, "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION")]
    flat = nfo(desk, leg("NIFTY26DEC24000CE", side="SELL", qty=2700, product="NRML", price="121"),
               execution_type="EXIT")
    assert [(o.qty, o.status) for o in flat] == [(1800, Status.CREATED), (900, Status.CREATED)]


def test_more_than_twenty_slices_is_refused(desk, master, strategy):
    strategy.split_above_freeze = True
    strategy.save()
    [order] = nfo(desk, leg("NIFTY26DEC24000CE", qty=1800 * 20 + 75, product="NRML"))
    assert_blocked(order, "GUARD_BLOCKED:TOO_MANY_SLICES qty 36075 needs 21 slices of 1800 > 20")


def test_explain_shows_the_slicing(master, strategy, client, alert_body):
    strategy.split_above_freeze = True
    strategy.save()
    body = alert_body(exchange="NFO", legs=[{"symbol": "NIFTY26DEC24000CE", "side": "BUY", "lots": 30,
                                              "product": "NRML", "order_type": "LIMIT", "price": "120.55"}])
    reply = client.post("/api/webhook/explain/", body, content_type="application/json").json()
    assert [(leg["leg"], leg["slice"], leg["qty"], leg["verdict"]) for leg in reply["legs"]] == [
        (1, 1, 1800, ""), (1, 2, 450, "")]
    assert reply["legs"][1]["note"] == ("lots 30 x lot size 75 = qty 2250; slice 2 of 2 of qty 2250, at most 1800 "
                                        "each (freeze qty 1800)")
    checks = {c["code"]: c for c in reply["legs"][0]["checks"]}
    assert checks["FREEZE_QTY"] == {"code": "FREEZE_QTY", "passed": True, "tag": "", "detail": "freeze qty 1800"}
    assert checks["LOT_SIZE"]["passed"] and checks["TICK_SIZE"]["detail"] == "tick 0.05"
    assert not Order.objects.exists()


def test_the_fake_noren_server_takes_one_order_per_slice(desk, master, strategy, shoonya_legacy):
    strategy.split_above_freeze = True
    strategy.save()
    shoonya_legacy.set_last_price("NIFTY26DEC24000CE", "120.50", exchange="NFO")  # the fake lists it
    orders = nfo(desk, leg("NIFTY26DEC24000CE", qty=3600, product="NRML", price="120.50"))
    desk.send()
    placed = shoonya_legacy.calls_to("PlaceOrder")
    assert sorted(call.jdata["remarks"] for call in placed) == sorted(o.command_id for o in orders)
    assert {call.jdata["qty"] for call in placed} == {"1800"}
    assert [(o.status, o.tag, bool(o.broker_order_id)) for o in Order.objects.filter(pk__in=[o.pk for o in orders])] == [(Status.SENT_TO_BROKER, "", True)] * 2


# --- the paper broker, the API and the admin ------------------------------------------------

def test_the_paper_broker_follows_the_master_and_keeps_its_prices(desk, master):
    [limit] = nfo(desk, leg("NIFTY26DEC24000CE", qty=75, product="NRML", price="120.50"))
    [market] = nfo(desk, leg("NIFTY26DEC24000PE", qty=75, product="NRML"))
    [priced] = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=1)])
    for order in (limit, market, priced):
        desk.send()
        desk.watch()
        order.refresh_from_db()
    assert (limit.status, limit.avg_price) == (Status.EXECUTED, Decimal("120.50"))
    assert (market.status, market.tag) == (
        Status.FAILED, "BROKER_REJECTED:paper broker: no price to fill a market order at for NFO:NIFTY26DEC24000PE")
    assert (priced.status, priced.avg_price) == (Status.EXECUTED, Decimal("2950.00"))  # the price list's price


def test_the_search_api_needs_a_token_and_finds_by_the_start_of_a_symbol(master, client):
    assert client.get("/api/instruments/?q=NIFTY").status_code == 401
    token = Token.objects.create(user=User.objects.create_user("reader", password="pw-reader-0123")).key
    found = client.get("/api/instruments/?exchange=NFO&q=nifty26dec", HTTP_AUTHORIZATION=f"Token {token}").json()
    # by underlying, expiry, then the future before the strikes in order
    assert [i["trading_symbol"] for i in found["results"]] == ["NIFTY26DECF", "NIFTY26DEC24000CE",
                                                                "NIFTY26DEC24000PE"]
    first = found["results"][1]
    assert (first["lot_size"], first["tick_size"], first["expiry"], first["option_type"]) == (75, "0.0500",
                                                                                          "2026-12-31", "CE")
    by_underlying = client.get("/api/instruments/?q=bank", HTTP_AUTHORIZATION=f"Token {token}").json()
    assert [i["trading_symbol"] for i in by_underlying["results"]] == ["BANKNIFTY26DECF"]
    assert client.get("/api/instruments/?exchange=XYZ", HTTP_AUTHORIZATION=f"Token {token}").status_code == 400


def test_the_admin_lists_and_searches_the_master(master, admin_client):
    page = admin_client.get("/admin/brokers/instrument/?q=BANKNIFTY").content.decode()
    assert "BANKNIFTY26DECF" in page and "NIFTY26DEC24000CE" not in page
    assert "NFO" in admin_client.get("/admin/brokers/instrumentmaster/").content.decode()
    assert admin_client.get("/admin/brokers/freezequantity/").status_code == 200


def test_a_modification_is_checked_against_the_master_too(desk, master, settings, client):
    settings.PAPER_FILL_DELAY_S = 3600
    token = Token.objects.create(user=User.objects.create_superuser("ops", password="pw-ops-0123456789")).key
    [order] = nfo(desk, leg("NIFTY26DEC24000CE", qty=150, product="NRML", price="120.50"))
    desk.send()

    def modify(**body):
        return client.post(f"/api/orders/{order.command_id}/modify/", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Token {token}")

    for body, tag in (({"qty": 160}, "GUARD_BLOCKED:LOT_SIZE qty 160 lot 75"),
                      ({"price": "120.52"}, "GUARD_BLOCKED:TICK_SIZE price 120.52 tick 0.05"),
                      ({"qty": 1875}, "GUARD_BLOCKED:FREEZE_QTY qty 1875 > 1800")):
        reply = modify(**body)
        assert reply.status_code == 400 and reply.json()["detail"].startswith(tag), reply.content
    assert modify(qty=225, price="120.55").status_code == 202


def test_a_square_off_exit_above_the_freeze_qty_is_always_split(desk, master, strategy, settings):
    from orders import squareoff

    [entry] = nfo(desk, leg("NIFTY26DEC24000CE", qty=1500, product="NRML", price="120.50"))
    desk.through(entry)
    FreezeQuantity.objects.filter(symbol="NIFTY").update(freeze_qty=900)  # lowered by the exchange
    exits = squareoff.close(strategy="demo", actor="api:ops").orders
    assert [(o.slice, o.qty, o.status) for o in Order.objects.filter(execution_type="EXIT").order_by("slice")] == [
        (1, 900, Status.CREATED), (2, 600, Status.CREATED)]
    assert [o.qty for o in exits] == [900, 600]


def test_the_qty_cap_judges_a_split_leg_whole(desk, master, strategy):
    strategy.split_above_freeze = True
    strategy.save()
    set_limits(strategy, actor="test", max_qty=2000)
    orders = nfo(desk, leg("NIFTY26DEC24000CE", qty=3600, product="NRML", price="120.50"))
    assert {(o.slice, o.tag) for o in orders} == {(1, "RISK_BLOCKED:QTY_LIMIT qty 3600 > 2000"),
                                                  (2, "RISK_BLOCKED:QTY_LIMIT qty 3600 > 2000")}
