"""orderdesk.statements: the hot path's INSERTs and reads must store and read exactly what the
ORM does, on every back end."""

from datetime import time, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orderdesk import statements
from orders.models import Alert, EventKind, ImmutableOrderError, Order, OrderEvent, Position, Status, Strategy
from tests.factories import AlertFactory, OrderFactory, StrategyFactory

pytestmark = pytest.mark.django_db


def stored(model, pk) -> dict:
    row = model.objects.filter(pk=pk).values().get()
    row.pop("id")
    return row


def fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def order_values(alert, leg: int, now=None, **overrides) -> dict:
    now = now or timezone.now()
    return dict(alert=alert, leg=leg, strategy=alert.strategy, source="webhook", execution_type="ENTRY", exchange="NSE",
                symbol="SBIN-EQ", side="BUY", qty=15, order_type="LIMIT", price=Decimal("812.35"), product="MIS",
                created_at=now, updated_at=now, **overrides)


def test_an_insert_stores_what_bulk_create_stores():
    alert = AlertFactory()
    now = timezone.now()
    by_orm = Order(**order_values(alert, 1, now, trigger_price=Decimal("810.05")))
    ours = Order(**order_values(alert, 2, now, trigger_price=Decimal("810.05")))
    Order.objects.bulk_create([by_orm])
    statements.insert(ours)
    assert ours.pk is not None and ours.pk != by_orm.pk
    theirs, mine = stored(Order, by_orm.pk), stored(Order, ours.pk)
    assert theirs.pop("command_id") != mine.pop("command_id")  # each its own default
    assert (theirs.pop("leg"), mine.pop("leg")) == (1, 2)
    assert mine == theirs
    assert mine["price"] == Decimal("812.35") and mine["trigger_price"] == Decimal("810.05")


def test_one_statement_inserts_many_and_numbers_them_in_order():
    alert = AlertFactory()
    orders = [Order(**order_values(alert, leg)) for leg in (1, 2, 3)]
    with CaptureQueriesContext(connection) as captured:
        statements.insert(*orders)
    assert len(captured) == 1
    by_pk = dict(Order.objects.filter(alert=alert).values_list("pk", "command_id"))
    assert {o.pk: o.command_id for o in orders} == by_pk
    assert [o.leg for o in sorted(orders, key=lambda o: o.pk)] == [1, 2, 3]
    assert all(o._state.adding is False and o._state.db == "default" for o in orders)
    with pytest.raises(ImmutableOrderError):  # an inserted order is saved: its details never change
        orders[0].save()


def test_a_json_payload_round_trips():
    strategy = StrategyFactory()
    payload = {"legs": [{"qty": 5, "price": Decimal("1.50")}], "note": "ünïcode", "n": None}
    alert = Alert(strategy=strategy, source="webhook", alert_id="json-1", actor="webhook", payload=payload,
                  received_at=timezone.now())
    statements.insert(alert)
    assert Alert.objects.get(pk=alert.pk).payload == {"legs": [{"qty": 5, "price": "1.50"}], "note": "ünïcode",
                                                      "n": None}


def test_a_duplicate_is_djangos_integrity_error():
    strategy = StrategyFactory()
    AlertFactory(strategy=strategy, alert_id="twice")
    with pytest.raises(IntegrityError), transaction.atomic():
        statements.insert(Alert(strategy=strategy, source="webhook", alert_id="twice", actor="webhook", payload={}))
    assert Alert.objects.filter(strategy=strategy, alert_id="twice").count() == 1


def test_first_reads_the_instance_the_orm_reads():
    strategy = StrategyFactory(name="read-me", enabled=False, market_protection_pct=Decimal("0.75"),
                               window_start=time(9, 15), window_end=time(15, 30), allowed_ips="10.0.0.0/8",
                               created_at=timezone.now() - timedelta(days=3))
    found = statements.first(Strategy, name="read-me")
    assert type(found) is Strategy and fields(found) == fields(Strategy.objects.get(pk=strategy.pk))
    assert found.market_protection_pct == Decimal("0.75") and found.window_start == time(9, 15)
    assert found.created_at.tzinfo is not None and found.enabled is False
    assert found._state.adding is False and found._state.db == "default"
    assert statements.first(Strategy, name="nobody") is None


def test_first_converts_json_and_foreign_keys():
    alert = AlertFactory(payload={"a": [1, 2], "b": {"c": "d"}})
    found = statements.first(Alert, strategy_id=alert.strategy_id, alert_id=alert.alert_id)
    assert found.payload == {"a": [1, 2], "b": {"c": "d"}} and found.strategy_id == alert.strategy_id
    assert fields(found) == fields(Alert.objects.get(pk=alert.pk))


def test_first_brings_the_related_row():
    order = OrderFactory(alert__strategy__market_protection_pct=Decimal("1.25"))
    with CaptureQueriesContext(connection) as captured:
        found = statements.first(Order, related="strategy", command_id=order.command_id)
        assert found.strategy.market_protection_pct == Decimal("1.25")  # no second read
    assert len(captured) == 1
    assert fields(found) == fields(Order.objects.get(pk=order.pk))
    assert fields(found.strategy) == fields(Strategy.objects.get(pk=order.strategy_id))
    assert statements.first(Order, related="strategy", command_id="missing") is None


def test_none_means_is_null():
    order = OrderFactory(broker_order_id=None)
    assert statements.first(Order, command_id=order.command_id, broker_order_id=None).pk == order.pk
    assert statements.first(Order, command_id=order.command_id, broker_order_id="B1") is None
    assert statements.update(Order, {"tag": "X"}, pk=order.pk, broker_order_id="B1") == 0
    assert statements.update(Order, {"tag": "X"}, pk=order.pk, broker_order_id=None) == 1


def test_an_update_stores_what_the_orm_update_stores():
    ours, by_orm = OrderFactory(), OrderFactory()
    now = timezone.now()
    values = {"status": Status.SENT_TO_BROKER, "avg_price": Decimal("101.2500"), "filled_qty": 4, "updated_at": now,
              "tag": "BROKER_IN_DOUBT:timeout"}
    assert statements.update(Order, dict(values, broker_order_id="24120200001"), pk=ours.pk,
                             status=Status.CREATED) == 1
    Order.objects.filter(pk=by_orm.pk, status=Status.CREATED).update(**values, broker_order_id="24120200002")
    mine, theirs = stored(Order, ours.pk), stored(Order, by_orm.pk)
    assert (mine.pop("broker_order_id"), theirs.pop("broker_order_id")) == ("24120200001", "24120200002")
    for row in (mine, theirs):
        for unique in ("command_id", "alert_id", "leg", "strategy_id", "created_at"):
            row.pop(unique)
    assert mine == theirs and mine["avg_price"] == Decimal("101.2500") and mine["updated_at"] == now
    # A compare-and-set that no longer holds changes nothing.
    assert statements.update(Order, {"filled_qty": 9}, pk=ours.pk, status=Status.CREATED) == 0
    assert stored(Order, ours.pk)["filled_qty"] == 4


def test_an_update_checks_a_condition_written_in_sql():
    order = OrderFactory()
    disabled = statements.Condition(f"EXISTS (SELECT 1 FROM {Strategy._meta.db_table} s "
                                    "WHERE s.id = %s AND s.enabled = %s)", (order.strategy_id, False))
    assert statements.update(Order, {"tag": "BLOCKED"}, disabled, pk=order.pk) == 0
    assert statements.update(Order, {"tag": "OK"}, ~disabled, pk=order.pk) == 1
    Strategy.objects.filter(pk=order.strategy_id).update(enabled=False)
    assert statements.update(Order, {"tag": "LATE"}, ~disabled, pk=order.pk) == 0
    assert statements.update(Order, {"tag": "BLOCKED"}, disabled, pk=order.pk) == 1
    assert stored(Order, order.pk)["tag"] == "BLOCKED"
    # The same condition in a queryset, for lookups the statements do not build.
    assert list(Order.objects.filter(disabled.expression(), tag__startswith="BLOCK")) == [order]
    assert not Order.objects.filter((~disabled).expression()).exists()


def test_first_can_lock_the_row(data_statements):
    position = Position.objects.create(strategy=StrategyFactory(), exchange="NSE", symbol="SBIN-EQ", product="MIS",
                                       net_qty=5, avg_price=Decimal("10"))
    with transaction.atomic(), data_statements() as captured:
        found = statements.first(Position, lock=True, strategy_id=position.strategy_id, symbol="SBIN-EQ")
    assert found.pk == position.pk and found.avg_price == Decimal("10")
    assert captured.sql[0].endswith("FOR UPDATE OF t") == (connection.vendor == "postgresql")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a data-modifying WITH is PostgreSQL's")
def test_insert_if_updated_inserts_only_when_the_update_changed_a_row():
    order = OrderFactory()
    changed = statements.update_sql(Order, {"tag": "X"}, pk=order.pk, status=Status.CREATED)
    event = OrderEvent(order=order, kind=EventKind.CLAIMED, from_status=Status.CREATED, to_status=Status.CREATED,
                       actor="worker", broker_order_id=None, filled_qty=None, detail="ünïcode")
    with CaptureQueriesContext(connection) as captured:
        assert statements.insert_if_updated(changed, event) is True
    assert len(captured) == 1 and event.pk is not None and event._state.adding is False
    assert stored(OrderEvent, event.pk)["filled_qty"] is None and stored(Order, order.pk)["tag"] == "X"
    assert fields(OrderEvent.objects.get(pk=event.pk)) == fields(event)
    # The compare-and-set no longer holds: neither the row nor the events change.
    lost = statements.update_sql(Order, {"tag": "Y"}, pk=order.pk, status=Status.FAILED)
    assert statements.insert_if_updated(lost, OrderEvent(order=order, kind=EventKind.FAILED, actor="w")) is False
    assert stored(Order, order.pk)["tag"] == "X" and OrderEvent.objects.filter(order=order).count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a data-modifying WITH is PostgreSQL's")
def test_insert_if_updated_takes_the_orms_own_update():
    order = OrderFactory()
    halted = Exists(Strategy.objects.filter(pk=order.strategy_id, enabled=False))
    update = statements.queryset_update_sql(Order.objects.filter(~halted, pk=order.pk), {"tag": "ORM"})
    assert statements.insert_if_updated(update, OrderEvent(order=order, kind=EventKind.CLAIMED, actor="w")) is True
    Strategy.objects.filter(pk=order.strategy_id).update(enabled=False)
    update = statements.queryset_update_sql(Order.objects.filter(~halted, pk=order.pk), {"tag": "NO"})
    assert statements.insert_if_updated(update, OrderEvent(order=order, kind=EventKind.CLAIMED, actor="w")) is False
    assert stored(Order, order.pk)["tag"] == "ORM" and OrderEvent.objects.filter(order=order).count() == 1


def test_more_rows_than_one_statement_takes_go_in_batches(monkeypatch):
    alert = AlertFactory()
    monkeypatch.setattr(connection.ops, "bulk_batch_size", lambda fields, objs: 2)
    orders = [Order(**order_values(alert, leg)) for leg in range(1, 6)]
    with CaptureQueriesContext(connection) as captured:
        statements.insert(*orders)
    assert len(captured) == 3
    assert {o.pk: o.leg for o in orders} == dict(Order.objects.filter(alert=alert).values_list("pk", "leg"))
