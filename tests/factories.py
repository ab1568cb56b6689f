import factory
from django.utils import timezone

from orders.models import Alert, Order, Source, Strategy
from orders.models import secret_digest as digest_of

TEST_SECRET = "test-secret-that-is-long-enough-0123"


def trail(order):
    """The order's audit trail as (kind, from, to, tag, actor) rows, oldest first."""
    return [(e.kind, e.from_status, e.to_status, e.tag, e.actor) for e in order.events.order_by("id")]


class StrategyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Strategy
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"strategy-{n}")
    enabled = True
    secret_digest = factory.LazyFunction(lambda: digest_of(TEST_SECRET))


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    strategy = factory.SubFactory(StrategyFactory)
    source = Source.WEBHOOK
    alert_id = factory.Sequence(lambda n: f"alert-{n}")
    actor = "webhook"
    payload = factory.LazyFunction(dict)


class OrderFactory(factory.django.DjangoModelFactory):
    """Registers an order directly (status CREATED unless given), without an audit trail:
    tests that need other states should normally walk there through orders.lifecycle."""

    class Meta:
        model = Order

    alert = factory.SubFactory(AlertFactory)
    strategy = factory.SelfAttribute("alert.strategy")
    leg = factory.Sequence(lambda n: n + 1)
    source = Source.WEBHOOK
    execution_type = "ENTRY"
    exchange = "NSE"
    symbol = "RELIANCE-EQ"
    side = "BUY"
    qty = 10
    order_type = "MARKET"
    product = "MIS"
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.SelfAttribute("created_at")


class RegisteredOrderFactory(OrderFactory):
    """An order registered as the intake registers one: with its creation audit row (and the
    chain's first hash), so orders.audit can verify all that follows."""

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from orders import lifecycle

        return lifecycle.register([model_class(*args, **kwargs)], "webhook")[0]
