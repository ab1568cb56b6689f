"""The dashboard's reads: today's blotter, an order's timeline, the day's summary. The blotter is
a bounded number of queries whatever the day's order count."""

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count
from django.utils import timezone

from brokers.models import InstrumentMaster
from orders.health import health_report
from orders import external
from orders.models import LIVE_STATUSES, ExternalOrder, Fill, Order, OrderEvent, Status, Strategy
from orders.notify import PLAIN
from orders.selectors import positions_with_prices
from orders.tradingday import trading_day_start
from risk.killswitch import effective_mode
from risk.limits import strategy_day_pnl
from risk.models import KillSwitch, RiskLimits

from . import charts

BLOTTER_ROWS = 200
BLOTTER_MAX = 2000
FILTERS = ("status", "strategy", "symbol", "tag_family", "tag_code")
CHART_BUCKET_MIN = 5


def blotter(filters: dict, limit: int = BLOTTER_ROWS) -> list[Order]:
    """Today's orders (the IST trading day), newest first, filtered by the API's filter names:
    one query."""
    orders = Order.objects.filter(created_at__gte=trading_day_start()).select_related("strategy")
    if filters.get("status"):
        orders = orders.filter(status=filters["status"])
    if filters.get("strategy"):
        orders = orders.filter(strategy__name=filters["strategy"])
    if filters.get("symbol"):
        orders = orders.filter(symbol__iexact=filters["symbol"])
    if filters.get("tag_family"):
        orders = orders.filter(tag_family=filters["tag_family"])
    if filters.get("tag_code"):
        orders = orders.filter(tag_code=filters["tag_code"])
    return list(orders.order_by("-id")[:max(1, min(limit, BLOTTER_MAX))])


def in_words(order: Order) -> str:
    """A failure's reason for a person (the tag itself is shown beside it)."""
    if order.status != Status.FAILED or not order.tag:
        return ""
    return PLAIN.get(order.tag.split(":", 1)[0], "failed")


@dataclass(frozen=True)
class Step:
    event: OrderEvent
    after_ms: int | None  # since the previous event


def timeline(order: Order) -> list[Step]:
    steps, previous = [], None
    for event in order.events.order_by("id"):
        after = round((event.at - previous).total_seconds() * 1000) if previous else None
        steps.append(Step(event, after))
        previous = event.at
    return steps


@dataclass(frozen=True)
class StrategyDay:
    strategy: Strategy
    pnl: Decimal | None  # None: unknown (a stale price)
    how: str
    daily_loss: Decimal | None
    mode: str

    @property
    def loss_used_pct(self) -> int | None:
        """How much of the daily loss limit today's loss uses (0 while in profit)."""
        if not self.daily_loss or self.pnl is None:
            return None
        return max(0, min(100, round(-self.pnl / self.daily_loss * 100)))


def summary() -> dict:
    now = timezone.now()
    today = Order.objects.filter(created_at__gte=trading_day_start(now))
    counts = dict(today.order_by().values_list("status").annotate(n=Count("id")))
    failures = (today.filter(status=Status.FAILED).exclude(tag_code="").order_by().values_list("tag_code")
                .annotate(n=Count("id")).order_by("-n"))
    limits = dict(RiskLimits.objects.filter(strategy__isnull=False).values_list("strategy_id", "daily_loss"))
    strategies = [StrategyDay(s, *strategy_day_pnl(s, now), limits.get(s.pk), effective_mode(s.pk))
                  for s in Strategy.objects.order_by("name")]
    health = health_report()
    positions = list(positions_with_prices().exclude(net_qty=0).select_related("strategy")
                     .order_by("strategy__name", "exchange", "symbol"))
    return {
        "counts": [(status, counts.get(status, 0)) for status in Status.values],
        "failures": list(failures),
        "positions": positions,
        "totals": totals(positions, bucket := external.pnl(now)),
        "external": bucket,
        "strategies": strategies,
        "global_mode": KillSwitch.objects.filter(is_global=True).values_list("mode", flat=True).first() or "ACTIVE",
        "health": health.status,
        "details": health.details,
        "live": today.filter(status__in=LIVE_STATUSES).count(),
        "chart_svg": charts.day_charts(day_buckets(today), realized_over_day(now)),
    }


def totals(positions, outside: dict) -> dict:
    """The account P&L: our strategies' positions, plus the external bucket (orders placed
    elsewhere, orders.external)."""
    realized = sum((p.realized_pnl for p in positions), Decimal(0))
    unrealized = sum((p.unrealized_pnl or Decimal(0) for p in positions), Decimal(0))
    return {"realized": realized, "unrealized": unrealized,
            "account_realized": realized + outside["realized"], "account_unrealized": unrealized + outside["unrealized"]}


def external_orders(limit: int = 200) -> list[ExternalOrder]:
    """The day's orders placed elsewhere, newest first."""
    return list(ExternalOrder.objects.filter(first_seen_at__gte=trading_day_start()).order_by("-first_seen_at", "-id")
                [:limit])


def _bucket(moment) -> str:
    local = timezone.localtime(moment)
    return f"{local.hour:02d}:{local.minute - local.minute % CHART_BUCKET_MIN:02d}"


def day_buckets(today) -> list[tuple[str, Counter]]:
    """Orders per status per 5 minutes of the day (IST)."""
    buckets: dict[str, Counter] = {}
    for created, status in today.order_by("created_at").values_list("created_at", "status"):
        buckets.setdefault(_bucket(created), Counter())[status] += 1
    return list(buckets.items())


def realized_over_day(now) -> list[tuple[str, Decimal]]:
    """The fills ledger's realised P&L, accumulated, at the end of each 5 minutes (IST)."""
    running, points = Decimal(0), {}
    for at, pnl in Fill.objects.filter(at__gte=trading_day_start(now)).order_by("at").values_list("at", "realized_pnl"):
        running += pnl
        points[_bucket(at)] = running
    return list(points.items())


def symbol_master_loaded() -> bool:
    return InstrumentMaster.objects.filter(rows__gt=0).exists()


def orders_of(command_ids: list[str]) -> list[Order]:
    return list(Order.objects.filter(command_id__in=command_ids[:400]).order_by("leg", "slice"))
