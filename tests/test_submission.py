"""orders.submission: claim, place once on the broker, record the answer."""

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from brokers.base import Broker, BrokerInDoubt, PlaceOutcome, PlaceResult
from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orders import lifecycle, submission
from orders.models import Order, OrderEvent, Status, WatcherLease
from orders.submission import submit_order
from orders.watcher import LEASE_NAME, OrderWatcher
from tests.factories import OrderFactory, trail

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
WATCH_TASK = "orders.tasks.watch_orders"


def reload(order):
    return Order.objects.get(pk=order.pk)


def queued_funcs():
    return [q.func() for q in OrmQ.objects.all()]


def test_happy_path_claims_places_once_and_stores_the_broker_id():
    order = OrderFactory(symbol="SBIN-EQ", side="SELL", qty=7)
    assert submit_order(order.command_id) == "accepted"
    order = reload(order)
    paper = PaperOrder.objects.get()
    assert (paper.client_order_id, paper.symbol, paper.side, paper.qty) == (order.command_id, "SBIN-EQ", "SELL", 7)
    assert (order.status, order.broker_order_id, order.tag) == (Status.SENT_TO_BROKER, paper.broker_order_id, "")
    assert order.sent_at is not None
    assert trail(order) == [
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "", "worker"),
    ]


def test_duplicated_task_sends_nothing_more():
    order = OrderFactory()
    submit_order(order.command_id)
    events = list(OrderEvent.objects.values_list("id", flat=True))
    assert submit_order(order.command_id) == "not claimable (SENT_TO_BROKER)"
    assert PaperOrder.objects.count() == 1
    assert list(OrderEvent.objects.values_list("id", flat=True)) == events


@pytest.mark.parametrize("status", [Status.EXECUTED, Status.FAILED])
def test_finished_order_is_not_claimable(status):
    order = OrderFactory(status=status)
    assert submit_order(order.command_id) == f"not claimable ({status})"
    assert not PaperOrder.objects.exists() and not OrderEvent.objects.exists()


def test_claim_lost_to_a_concurrent_worker_sends_nothing(monkeypatch):
    """Another worker claims between our read and our compare-and-set."""
    real_move = lifecycle.move

    def racing_move(order, to, **kwargs):
        if to == Status.SENT_TO_BROKER:
            assert real_move(reload(order), to, actor="worker:other")
        return real_move(order, to, **kwargs)

    monkeypatch.setattr(lifecycle, "move", racing_move)
    order = OrderFactory()
    assert submit_order(order.command_id) == "claim lost"
    assert not PaperOrder.objects.exists()
    assert [e[4] for e in trail(order)] == ["worker:other"]


def test_stale_order_fails_without_reaching_the_broker(settings):
    settings.ORDER_MAX_AGE_S = 60
    order = OrderFactory(created_at=timezone.now() - timedelta(seconds=61))
    assert submit_order(order.command_id) == "stale"
    order = reload(order)
    assert (order.status, order.tag, order.sent_at) == (Status.FAILED, "GUARD_BLOCKED:STALE_ORDER", None)
    assert not PaperOrder.objects.exists()
    [event] = order.events.all()
    assert (event.kind, event.to_status, event.actor) == ("FAILED", "FAILED", "worker")
    assert re.match(r"6[12]\.\ds old at claim time, limit 60s", event.detail)


def test_order_within_max_age_is_sent(settings):
    settings.ORDER_MAX_AGE_S = 60
    order = OrderFactory(created_at=timezone.now() - timedelta(seconds=55))
    assert submit_order(order.command_id) == "accepted"


def test_broker_rejects_at_placement():
    order = OrderFactory(symbol="NOSUCH-EQ")
    assert submit_order(order.command_id) == "rejected"
    order = reload(order)
    assert (order.status, order.tag, order.broker_order_id) == (
        Status.FAILED, "BROKER_REJECTED:Invalid Trading Symbol", None)
    assert not PaperOrder.objects.exists()
    assert trail(order)[-1] == ("BROKER_REJECTED", "SENT_TO_BROKER", "FAILED",
                                "BROKER_REJECTED:Invalid Trading Symbol", "worker")


def test_in_doubt_via_paper_timeout_is_never_resent_and_the_watcher_adopts_it(settings):
    settings.PAPER_FILL_DELAY_S = 60
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(behaviour=Behaviour.TIMEOUT_ON_PLACE)
    order = OrderFactory(symbol="RELIANCE-EQ")
    assert submit_order(order.command_id) == "in doubt"
    order = reload(order)
    assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, None)
    kind, _, to, tag, actor = trail(order)[-1]
    assert (kind, to, actor) == ("BROKER_IN_DOUBT", "SENT_TO_BROKER", "worker") and tag.startswith("BROKER_IN_DOUBT:")
    assert order.tag == tag
    assert submit_order(order.command_id) == "not claimable (SENT_TO_BROKER)"
    paper = PaperOrder.objects.get()

    settings.BROKER_READ_TIMEOUT_S = -5  # the in-doubt threshold has passed
    watcher = OrderWatcher()
    watcher.poll_once()
    order = reload(order)
    assert (order.status, order.broker_order_id, order.tag) == (Status.SENT_TO_BROKER, paper.broker_order_id, "")
    assert trail(order)[-1] == ("BROKER_ID_ADOPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "", "watcher")

    PaperOrder.objects.update(due_at=timezone.now())
    watcher.poll_once()
    order = reload(order)
    assert (order.status, order.filled_qty) == (Status.EXECUTED, order.qty)
    assert [e[0] for e in trail(order)] == ["CLAIMED", "BROKER_IN_DOUBT", "BROKER_ID_ADOPTED", "EXECUTED"]
    assert PaperOrder.objects.count() == 1


class FakeBroker(Broker):
    def __init__(self, behaviour):
        self.behaviour, self.calls = behaviour, []

    def place(self, request):
        self.calls.append(request)
        return self.behaviour()


def _raise(exc):
    def behave():
        raise exc
    return behave


@pytest.mark.parametrize("behaviour,why", [
    (_raise(RuntimeError("boom")), "RuntimeError: boom"),
    (_raise(KeyError("x")), "KeyError"),
    (_raise(BrokerInDoubt("read timed out")), "read timed out"),
    (lambda: PlaceResult(PlaceOutcome.IN_DOUBT, message="HTTP 502"), "HTTP 502"),
    (lambda: PlaceResult(PlaceOutcome.ACCEPTED, broker_order_id=None), "without a broker order id"),
    (lambda: PlaceResult(PlaceOutcome.ACCEPTED, broker_order_id=""), "without a broker order id"),
    (lambda: None, "unclear outcome"),
])
def test_anything_but_a_definite_answer_is_in_doubt_and_not_retried(monkeypatch, behaviour, why):
    broker = FakeBroker(behaviour)
    monkeypatch.setattr(submission, "get_broker", lambda: broker)
    order = OrderFactory()
    assert submit_order(order.command_id) == "in doubt"
    order = reload(order)
    assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, None)
    assert order.tag.startswith("BROKER_IN_DOUBT:") and why in order.tag
    assert [e[0] for e in trail(order)] == ["CLAIMED", "BROKER_IN_DOUBT"]
    assert submit_order(order.command_id) == "not claimable (SENT_TO_BROKER)"
    assert len(broker.calls) == 1
    assert broker.calls[0].client_order_id == order.command_id


def test_a_broker_that_cannot_be_set_up_leaves_the_order_unclaimed(monkeypatch):
    def no_broker():
        raise RuntimeError("login failed")

    monkeypatch.setattr(submission, "get_broker", no_broker)
    order = OrderFactory()
    with pytest.raises(RuntimeError):
        submit_order(order.command_id)
    assert reload(order).status == Status.CREATED and not OrderEvent.objects.exists()


PACKAGES = ("orders", "brokers", "risk", "orderdesk")


class PlaceCalls(ast.NodeVisitor):
    """The enclosing function of every `<anything>.place(...)` call."""

    def __init__(self):
        self.stack, self.found = ["<module>"], []

    def visit_FunctionDef(self, node):
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "place":
            self.found.append(self.stack[-1])
        self.generic_visit(node)


def test_exactly_one_function_calls_the_brokers_place():
    calls, mentions = [], []
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        name, text = str(path.relative_to(ROOT)), path.read_text()
        visitor = PlaceCalls()
        visitor.visit(ast.parse(text))
        calls += [(name, function) for function in visitor.found]
        if re.search(r"\.place\b|[\"']place[\"']", text):  # also a bound method or getattr(b, "place")
            mentions.append(name)
    assert calls == [("orders/submission.py", "place_on_broker")]
    assert mentions == ["orders/submission.py"]


def test_unknown_command_id_is_missing_and_does_nothing():
    assert submit_order("no-such-command") == "missing"
    assert not OrderEvent.objects.exists() and not PaperOrder.objects.exists() and not OrmQ.objects.exists()


@pytest.mark.parametrize("lease_live,expected", [(False, [WATCH_TASK]), (True, [])])
def test_submission_starts_the_watcher_only_when_none_is_running(lease_live, expected):
    if lease_live:
        WatcherLease.objects.update_or_create(name=LEASE_NAME, defaults={
            "owner": "task:elsewhere", "expires_at": timezone.now() + timedelta(seconds=30)})
    order = OrderFactory()
    assert submit_order(order.command_id) == "accepted"
    assert queued_funcs() == expected


def test_rejected_submission_needs_no_watcher():
    assert submit_order(OrderFactory(symbol="NOSUCH-EQ").command_id) == "rejected"
    assert queued_funcs() == []


def test_an_invalid_broker_session_fails_the_order_with_its_message(monkeypatch):
    class ExpiredSession(Broker):
        def place(self, request):
            return PlaceResult(PlaceOutcome.SESSION_INVALID, message="Session Expired :  Invalid Session Key")

    monkeypatch.setattr("orders.submission.get_broker", ExpiredSession)
    order = OrderFactory()
    assert submit_order(order.command_id) == "session invalid"
    order.refresh_from_db()
    assert (order.status, order.tag) == ("FAILED", "BROKER_SESSION:Session Expired :  Invalid Session Key")


def test_a_watcher_seen_running_is_not_asked_for_again_for_a_few_seconds(monkeypatch):
    from orders import submission

    WatcherLease.objects.update_or_create(name=LEASE_NAME, defaults={
        "owner": "task:elsewhere", "expires_at": timezone.now() + timedelta(seconds=30)})
    assert submit_order(OrderFactory().command_id) == "accepted"
    WatcherLease.objects.all().delete()  # it died just now
    assert submit_order(OrderFactory().command_id) == "accepted"
    assert queued_funcs() == []  # taken as running: its lease outlives the memory
    monkeypatch.setattr(submission, "WATCHER_SEEN_FOR_S", 0.0)
    assert submit_order(OrderFactory().command_id) == "accepted"
    assert queued_funcs() == [WATCH_TASK]


def test_a_submission_is_eight_statements_with_the_watcher_running(data_statements):
    """Load the order with its strategy; claim (UPDATE, event); the paper broker's two reads and
    its INSERT; the broker id (UPDATE, event). The watcher's lease was read by the one before.
    PostgreSQL makes each move and its event one statement (WITH … UPDATE … INSERT): six."""
    WatcherLease.objects.update_or_create(name=LEASE_NAME, defaults={
        "owner": "task:elsewhere", "expires_at": timezone.now() + timedelta(seconds=30)})
    assert submit_order(OrderFactory(symbol="SBIN-EQ").command_id) == "accepted"
    order = OrderFactory(symbol="RELIANCE-EQ")
    with data_statements() as counted:
        assert submit_order(order.command_id) == "accepted"
    expected = ({"SELECT": 3, "WITH": 2, "INSERT": 1} if connection.vendor == "postgresql"
                else {"SELECT": 3, "UPDATE": 2, "INSERT": 3})
    assert counted.by_kind == expected, counted.sql
