"""The pipeline driven as production drives it (webhook -> blockers -> queue -> paper ->
watcher), and the assertions the guard, kill-switch and position tests share. Fixtures
built on it (desk, other) are in conftest.py."""

from django_q.models import OrmQ
from django_q.signing import SignedPackage

from brokers.models import PaperOrder
from orders.models import EventKind, Order, Position, Status
from orders.queue import SUBMIT_TASK
from orders.watcher import OrderWatcher
from tests.factories import trail

WEBHOOK_CREATED = ("CREATED", "", "CREATED", "", "webhook")


def leg(symbol="RELIANCE-EQ", side="BUY", qty=10, product="MIS", price=None, order_type=None, trigger_price=None):
    fields = {"symbol": symbol, "side": side, "qty": qty, "product": product, "order_type": "MARKET"}
    if price is not None:
        fields.update(order_type="LIMIT", price=str(price))
    if trigger_price is not None:
        fields["trigger_price"] = str(trigger_price)
    if order_type is not None:
        fields["order_type"] = order_type
    return fields


def queued() -> list[str]:
    """Command ids of the submissions waiting in the django-q2 ORM queue."""
    tasks = (SignedPackage.loads(q.payload) for q in OrmQ.objects.order_by("id"))
    return [t["args"][0] for t in tasks if t["func"] == SUBMIT_TASK]


def assert_blocked(order: Order, tag: str, detail: str | None = None) -> None:
    """FAILED at intake with exactly `tag`: CREATED then BLOCKED (actor guard), never queued or sent."""
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, tag)
    assert trail(order) == [WEBHOOK_CREATED, ("BLOCKED", "CREATED", "FAILED", tag, "guard")]
    if detail is not None:
        assert order.events.get(kind=EventKind.BLOCKED).detail == detail
    assert order.command_id not in queued()
    assert not PaperOrder.objects.filter(client_order_id=order.command_id).exists()


def assert_passed(order: Order) -> None:
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.CREATED, "")
    assert trail(order) == [WEBHOOK_CREATED]
    assert order.command_id in queued()


class Desk:
    """Drives the whole pipeline the way production does."""

    def __init__(self, alert_body, post_alert, run_queue):
        self.alert_body, self.post_alert, self.run_queue = alert_body, post_alert, run_queue

    def post(self, execution_type="ENTRY", legs=None, strategy="demo", **body) -> list[Order]:
        response = self.post_alert(self.alert_body(strategy=strategy, execution_type=execution_type,
                                                   legs=legs or [leg()], **body))
        assert response.status_code == 201, response.content
        replies = response.json()["orders"]
        orders = {o.command_id: o for o in Order.objects.filter(command_id__in=[r["command_id"] for r in replies])}
        result = [orders[r["command_id"]] for r in replies]
        assert [(r["status"], r["tag"]) for r in replies] == [(o.status, o.tag) for o in result]
        return result

    def entry(self, side="BUY", symbol="RELIANCE-EQ", qty=10, strategy="demo", **leg_fields) -> Order:
        [order] = self.post("ENTRY", [leg(symbol, side, qty, **leg_fields)], strategy)
        return order

    def exit(self, side="SELL", symbol="RELIANCE-EQ", qty=10, strategy="demo", **leg_fields) -> Order:
        [order] = self.post("EXIT", [leg(symbol, side, qty, **leg_fields)], strategy)
        return order

    def send(self):
        """Run the queued submissions (claim + paper place): the orders become SENT_TO_BROKER."""
        return self.run_queue()

    def watch(self, times=1):
        watcher = OrderWatcher()
        for _ in range(times):
            watcher.poll_once()

    def through(self, order: Order, status=Status.EXECUTED) -> Order:
        """Send and watch `order` until the paper broker settles it."""
        assert order.status == Status.CREATED, order.tag
        self.send()
        self.watch()
        order.refresh_from_db()
        assert order.status == status, order.tag
        return order

    def hold(self, side="BUY", qty=10, symbol="RELIANCE-EQ", strategy="demo", execution_type="ENTRY", **leg_fields):
        """An executed order, so a position."""
        [order] = self.post(execution_type, [leg(symbol, side, qty, **leg_fields)], strategy)
        return self.through(order)


def position(strategy_name="demo", symbol="RELIANCE-EQ", product="MIS"):
    row = Position.objects.filter(strategy__name=strategy_name, symbol=symbol, product=product).first()
    return (row.net_qty, row.avg_price, row.realized_pnl) if row else None
