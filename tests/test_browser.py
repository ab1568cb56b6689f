"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium;
`.ci/run` installs it) against `manage.py up` on the test database (gunicorn, qcluster,
orderwatcher, the paper broker). Every request the page makes outside loopback is refused and
recorded: there must be none. Screenshots go to ORDERDESK_SCREENSHOTS (default: a folder of
this run's temp dir)."""

import os
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from brokers.models import Behaviour, Instrument, InstrumentMaster, PaperInstrument
from orders.models import Order, Status
from tests.factories import StrategyFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "pw-browser-0123456789"


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None if CHROMIUM.exists() else f"{CHROMIUM} is missing (apt install chromium)"


@pytest.fixture
def browser(monkeypatch):
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM reads are
    # plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ORDERDESK_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def signed_in(browser, url: str, username: str):
    """A page signed in as `username`, with every request beyond loopback refused and kept."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.outside = []

    def guard(route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            return route.continue_()
        page.outside.append(route.request.url)
        return route.abort()

    context.route("**/*", guard)
    page.on("dialog", lambda dialog: dialog.accept())  # the controls' confirmations
    # Printed, so a failing test shows what the page said.
    page.on("pageerror", lambda error: print("page error:", error))
    page.on("response", lambda r: print("answer:", r.status, r.url) if r.status >= 400 else None)
    page.goto(f"{url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{url}/", timeout=15_000)
    return page


def user(username: str, *codenames: str) -> User:
    account = User.objects.create_user(username, password=PASSWORD)
    account.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return account


def fill_leg(page, symbol: str, qty: str, side: str = "BUY", order_type: str = "MARKET", price: str = ""):
    page.fill("input[name=leg-0-symbol]", symbol)
    page.select_option("select[name=leg-0-side]", side)
    page.fill("input[name=leg-0-qty]", qty)
    page.select_option("select[name=leg-0-order_type]", order_type)
    page.fill("input[name=leg-0-price]", price)


def test_a_traders_day_in_the_browser(browser, stack, screenshots):
    StrategyFactory(name="demo")
    PaperInstrument.objects.filter(symbol="INFY-EQ").update(behaviour=Behaviour.STAY_OPEN)
    for token, symbol in (("2885", "RELIANCE-EQ"), ("3045", "SBIN-EQ"), ("1594", "INFY-EQ")):
        Instrument.objects.create(exchange="NSE", token=token, trading_symbol=symbol, symbol=symbol[:-3],
                                  instrument_type="EQ", lot_size=1, tick_size=Decimal("0.05"))
    InstrumentMaster.objects.create(exchange="NSE", rows=3, synced_at=timezone.now())
    user("trader", "view_order", "place_manual_order", "cancel_order", "modify_order", "change_killswitch")
    desk = stack()
    page = signed_in(browser, desk.url, "trader")

    # The symbol field suggests from the symbol master; with one loaded, legs may give lots.
    page.type("input[name=leg-0-symbol]", "RELI")
    page.wait_for_selector("#symbols option[value='RELIANCE-EQ']", state="attached", timeout=10_000)
    assert page.locator("input[name=leg-0-lots]").count() == 1

    # A manual order, followed on the page until the broker executed it.
    fill_leg(page, "RELIANCE-EQ", "10")
    page.click("button:has-text('Place order')")
    page.wait_for_selector("#placed tr.status-EXECUTED", timeout=30_000)
    order = Order.objects.get(symbol="RELIANCE-EQ")
    assert (order.source, order.status) == ("dashboard", Status.EXECUTED)
    page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

    # A blocked one shows its reason; the blotter filters by tag code.
    page.select_option("select[name=execution_type]", "EXIT")
    fill_leg(page, "SBIN-EQ", "5", side="SELL")
    page.click("button:has-text('Place order')")
    page.wait_for_selector("#placed tr.status-FAILED", timeout=15_000)
    assert "GUARD_BLOCKED:NO_POSITION" in page.inner_text("#placed")
    page.fill("#blotter-filters input[name=tag_code]", "NO_POSITION")
    page.click("#blotter-filters button")
    # The filter reloads the blotter (or, without the script, the page): wait for the new one.
    page.wait_for_function("() => { const b = document.querySelector('#blotter');"
                           " return b !== null && !b.innerText.includes('RELIANCE-EQ'); }")
    assert "SBIN-EQ" in page.inner_text("#blotter") and "blocked by a guard rule" in page.inner_text("#blotter")
    page.screenshot(path=str(screenshots / "blotter.png"), full_page=True)

    # A resting order, cancelled from the blotter.
    page.goto(f"{desk.url}/")
    page.select_option("select[name=execution_type]", "ENTRY")
    fill_leg(page, "INFY-EQ", "3", order_type="LIMIT", price="1800")
    page.click("button:has-text('Place order')")
    page.wait_for_selector("#blotter tr.status-SENT_TO_BROKER", timeout=30_000)
    page.click("#blotter tr.status-SENT_TO_BROKER button:has-text('Cancel')")
    page.wait_for_selector("#blotter tr.status-FAILED >> text=BROKER_CANCELLED", timeout=30_000)
    resting = Order.objects.get(symbol="INFY-EQ")
    assert resting.tag.startswith("BROKER_CANCELLED:")
    page.goto(f"{desk.url}/dashboard/orders/{resting.command_id}/")
    assert "CANCEL_REQUESTED" in page.inner_text("body")
    page.screenshot(path=str(screenshots / "order-timeline.png"), full_page=True)

    # The position closed from the summary.
    page.goto(f"{desk.url}/")
    page.click("#summary form:has(input[value='RELIANCE-EQ']) button:has-text('Close')")
    page.wait_for_selector("text=Square-off: SELL 10 RELIANCE-EQ", timeout=15_000)
    exit_order = Order.objects.get(symbol="RELIANCE-EQ", execution_type="EXIT")
    assert exit_order.source == "system"

    # The reconciliation page, from the header: the broker's positions against ours.
    page.click("header a:has-text('reconciliation')")
    page.wait_for_selector("#reconciliation h1:has-text('Reconciliation')")
    assert "Orders placed elsewhere today" in page.inner_text("#external-orders")
    page.screenshot(path=str(screenshots / "reconciliation.png"), full_page=True)
    assert page.outside == []  # nothing but loopback, all along


def test_without_the_permission_there_is_no_order_form_and_the_endpoint_refuses(browser, stack):
    StrategyFactory(name="demo")
    user("viewer", "view_order")
    desk = stack()
    page = signed_in(browser, desk.url, "viewer")
    assert page.locator("#order-form").count() == 0 and "Blotter" in page.inner_text("body")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    reply = page.request.post(f"{desk.url}/dashboard/place/", headers={"X-CSRFToken": token, "Referer": desk.url},
                              form={"strategy": "demo", "execution_type": "ENTRY", "exchange": "NSE",
                                    "leg-0-symbol": "RELIANCE-EQ", "leg-0-side": "BUY", "leg-0-qty": "1",
                                    "leg-0-product": "MIS"})
    assert reply.status == 403 and not Order.objects.exists()
    assert not re.search("Place order", page.content())
