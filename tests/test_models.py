"""The models' contract: immutable orders, secrets stored as digests, unique ids."""

import hashlib
import re

import pytest
from django.db import IntegrityError, transaction

from orders.models import ImmutableOrderError, Order, Strategy, new_command_id
from tests.factories import TEST_SECRET, OrderFactory, StrategyFactory

pytestmark = pytest.mark.django_db

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.mark.parametrize("field,value", [("qty", 999), ("symbol", "SBIN-EQ"), ("side", "SELL"),
                                         ("status", "EXECUTED"), ("tag", "X"), ("broker_order_id", "B1"),
                                         (None, None)])
def test_saving_an_existing_order_raises_and_changes_nothing(field, value):
    order = OrderFactory()
    before = Order.objects.values().get(pk=order.pk)
    if field:
        setattr(order, field, value)
    with pytest.raises(ImmutableOrderError):
        order.save()
    assert Order.objects.values().get(pk=order.pk) == before


def test_set_secret_rejects_short_secrets():
    strategy = Strategy(name="s")
    with pytest.raises(ValueError):
        strategy.set_secret("x" * 23)
    assert strategy.secret_digest == ""
    assert strategy.set_secret("x" * 24) == "x" * 24


def test_generated_secrets_are_long_random_and_only_their_digest_is_stored():
    strategy = Strategy(name="s")
    secret = strategy.set_secret()
    strategy.save()
    assert len(secret) >= 43 and URL_SAFE.match(secret)  # token_urlsafe(32): 32 random bytes
    assert Strategy(name="t").set_secret() != secret
    row = Strategy.objects.values().get(pk=strategy.pk)
    assert row["secret_digest"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in str(value) for value in row.values())


@pytest.mark.parametrize("name,secret,found", [
    ("demo", TEST_SECRET, True),
    ("demo", TEST_SECRET + "x", False),
    ("demo", TEST_SECRET[:-1], False),
    ("demo", "", False),
    ("nosuch", TEST_SECRET, False),
    ("demo", None, False),
    ("demo", 12345, False),
    ("demo", [TEST_SECRET], False),
    (None, TEST_SECRET, False),
    (["demo"], TEST_SECRET, False),
    ({"name": "demo"}, TEST_SECRET, False),
])
def test_authenticate(strategy, name, secret, found):
    assert Strategy.authenticate(name, secret) == (strategy if found else None)


def test_broker_order_id_unique_when_set_many_nulls_allowed():
    first, second, third = OrderFactory.create_batch(3)
    assert Order.objects.filter(broker_order_id__isnull=True).count() == 3
    Order.objects.filter(pk=first.pk).update(broker_order_id="B1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=second.pk).update(broker_order_id="B1")


def test_command_ids_are_generated_unique_and_url_safe():
    ids = {new_command_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(URL_SAFE.match(i) and len(i) <= 32 for i in ids)
    order = OrderFactory()
    assert URL_SAFE.match(order.command_id)
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(command_id=order.command_id)


def test_strategy_names_are_unique():
    StrategyFactory(name="dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        Strategy.objects.create(name="dup", secret_digest="x")
