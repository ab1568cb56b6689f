"""Risk limits (RISK_BLOCKED:), per strategy and for the whole account: deny with a reason,
never queue (NautilusTrader's RiskEngine), with max-loss locks stored as rows until an admin
resets them (Freqtrade's protections).

P&L comes from the fills ledger (orders.Fill: realised P&L per fill) and the open positions
valued at the latest known price (risk.prices); the account's day P&L is the broker's own
snapshot. Exits reduce risk: loss limits, locks, cooldowns and the position cap never block
an EXIT; the per-order caps (qty, notional, price band) and the order rate apply to exits
too, but for the system's own square-off exits the rate does not.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q, Sum

from orders.models import (LIVE_STATUSES, BrokerPosition, ExecutionType, Fill, Order, Position, Product, Source,
                           Strategy)
from orders.tradingday import trading_day_start

from .models import RiskLimits, RiskLock
from .pipeline import IntakeContext, Verdict
from .prices import Quote, latest_prices

BLOCKED_AT_INTAKE = ("RISK_BLOCKED:", "GUARD_BLOCKED:")
MONEY = Decimal("0.01")


def _money(value) -> str:
    return f"{Decimal(value).quantize(MONEY)}"


def _price(value) -> str:
    """Two decimals, or four where the tick needs them (2950.00, 82.2525)."""
    value = Decimal(value)
    return _money(value) if value == value.quantize(MONEY) else f"{value.quantize(Decimal('0.0001'))}"


@dataclass
class Scope:
    """One set of limits and the figures they are checked against, computed once per intake."""

    limits: RiskLimits
    strategy: Strategy | None  # None: the whole account
    ctx: IntakeContext
    label: str = ""  # "" for a strategy's own limits, " account" for the account's
    _cache: dict = field(default_factory=dict)

    def fills(self):
        return Fill.objects.filter(strategy=self.strategy) if self.strategy else Fill.objects.all()

    def positions(self):
        rows = Position.objects.exclude(net_qty=0).exclude(product=Product.MIS,
                                                            updated_at__lt=trading_day_start(self.ctx.now))
        return rows.filter(strategy=self.strategy) if self.strategy else rows

    def once(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # --- P&L -------------------------------------------------------------------------------
    def unrealized(self) -> tuple[Decimal, str, str | None]:
        """(unrealised P&L, how it was computed, why it is unknown or None)."""
        def compute():
            open_positions = list(self.positions())
            quotes = latest_prices({(p.exchange, p.symbol) for p in open_positions})
            max_age = timedelta(seconds=settings.RISK_SNAPSHOT_MAX_AGE_S)
            total, parts = Decimal(0), []
            for p in open_positions:
                quote: Quote | None = quotes.get((p.exchange, p.symbol))
                if quote is None or self.ctx.now - quote.at > max_age:
                    age = "no price" if quote is None else \
                        f"price {_price(quote.price)} is {(self.ctx.now - quote.at).total_seconds():.0f}s old"
                    return Decimal(0), "", f"{p.exchange}:{p.symbol} {p.net_qty:+d}: {age}"
                upnl = (quote.price - Decimal(p.avg_price)) * p.net_qty
                total += upnl
                parts.append(f"{p.symbol} {p.net_qty:+d} @ {_price(p.avg_price)} -> {_price(quote.price)}: "
                             f"{_money(upnl)}")
            return total, "; ".join(parts), None
        return self.once("unrealized", compute)

    def strategy_pnl(self, since) -> tuple[Decimal | None, str]:
        """(realised since `since` + unrealised, the computation) or (None, why unknown)."""
        realized = self.fills().filter(at__gte=since).aggregate(total=Sum("realized_pnl"))["total"] or Decimal(0)
        unrealized, parts, unknown = self.unrealized()
        if unknown:
            return None, unknown
        return realized + unrealized, f"realised {_money(realized)} + unrealised {_money(unrealized)}" + (
            f" ({parts})" if parts else "")

    def account_day_pnl(self) -> tuple[Decimal | None, str]:
        rows = list(BrokerPosition.objects.values_list("realized_pnl", "unrealized_pnl", "net_qty", "taken_at"))
        if not rows:
            return Decimal(0), "no broker positions today"
        taken = max(r[3] for r in rows)
        if any(r[2] for r in rows) and self.ctx.now - taken > timedelta(seconds=settings.RISK_SNAPSHOT_MAX_AGE_S):
            return None, f"the broker snapshot is {(self.ctx.now - taken).total_seconds():.0f}s old"
        rpnl = sum((r[0] for r in rows), Decimal(0))
        urmtom = sum((r[1] for r in rows), Decimal(0))
        return rpnl + urmtom, f"broker rpnl {_money(rpnl)} + urmtom {_money(urmtom)}"

    def day_pnl(self) -> tuple[Decimal | None, str]:
        if self.strategy is None:
            return self.once("day", self.account_day_pnl)
        return self.once("day", lambda: self.strategy_pnl(trading_day_start(self.ctx.now)))

    # --- the checks ------------------------------------------------------------------------
    def daily_loss(self) -> tuple[str, Verdict | None]:
        limit = self.limits.daily_loss
        pnl, how = self.day_pnl()
        if pnl is None:
            return "PNL_UNKNOWN", Verdict(f"RISK_BLOCKED:PNL_UNKNOWN{self.label}",
                                          f"daily loss limit {_money(limit)} configured but the P&L is unknown: {how}")
        if pnl <= -limit:
            return "DAILY_LOSS_LIMIT", Verdict(
                f"RISK_BLOCKED:DAILY_LOSS_LIMIT{self.label} day P&L {_money(pnl)} <= {_money(-limit)}",
                f"{how} = {_money(pnl)}; limit -{_money(limit)}")
        return "DAILY_LOSS_LIMIT", None

    def max_loss(self) -> tuple[str, Verdict | None]:
        lock = self.once("lock", self.active_lock) if self.limits.locked else None
        if lock is not None:
            return "MAX_LOSS_LOCK", Verdict(lock.tag, f"locked since {lock.created_at:%Y-%m-%d %H:%M:%S} UTC until "
                                                      f"reset: {lock.detail}")
        limit = self.limits.max_loss
        if limit is None:
            return "MAX_LOSS_LOCK", None
        since = self.limits.max_loss_since or self.limits.updated_at
        pnl, how = self.once("since", lambda: self.strategy_pnl(since))
        if pnl is None:
            return "PNL_UNKNOWN", Verdict(f"RISK_BLOCKED:PNL_UNKNOWN{self.label}",
                                          f"max loss {_money(limit)} configured but the P&L is unknown: {how}")
        if pnl > -limit:
            return "MAX_LOSS_LOCK", None
        tag = f"RISK_BLOCKED:MAX_LOSS_LOCK{self.label} P&L {_money(pnl)} <= {_money(-limit)}"
        detail = f"since {since:%Y-%m-%d %H:%M:%S} UTC: {how} = {_money(pnl)}; limit -{_money(limit)}"
        if not self.ctx.explain:
            lock = RiskLock.objects.create(limits=self.limits, tag=tag, detail=detail)
            self.limits.locked, self._cache["lock"] = True, lock
        return "MAX_LOSS_LOCK", Verdict(tag, detail)

    def active_lock(self) -> RiskLock | None:
        return RiskLock.objects.filter(limits=self.limits, reset_at__isnull=True).order_by("id").first()

    def cooldown(self) -> tuple[str, Verdict | None]:
        minutes, needed = self.limits.cooldown_min, max(1, self.limits.cooldown_after_losses)
        exits = list(self.fills().filter(order__execution_type=ExecutionType.EXIT).values("order_id")
                     .annotate(pnl=Sum("realized_pnl"), last=Max("at")).order_by("-last")[:needed])
        if len(exits) < needed or any(e["pnl"] >= 0 for e in exits):
            return "COOLDOWN", None
        until = exits[0]["last"] + timedelta(minutes=minutes)
        if self.ctx.now >= until:
            return "COOLDOWN", None
        local = until.astimezone(ZoneInfo(settings.TRADING_TZ))
        losses = ", ".join(_money(e["pnl"]) for e in exits)
        return "COOLDOWN", Verdict(f"RISK_BLOCKED:COOLDOWN{self.label} until {local:%H:%M:%S} IST",
                                   f"{needed} losing exit(s) in a row ({losses}), the last at "
                                   f"{exits[0]['last'].astimezone(local.tzinfo):%H:%M:%S} IST; {minutes} min")

    def recent_orders(self) -> int:
        since = self.ctx.now - timedelta(seconds=60)
        rows = Order.objects.filter(created_at__gte=since).exclude(alert=self.ctx.alert)
        rows = rows.filter(strategy=self.strategy) if self.strategy else rows
        blocked = Q()
        for prefix in BLOCKED_AT_INTAKE:
            blocked |= Q(tag__startswith=prefix)
        return rows.exclude(blocked).count()

    def open_instruments(self) -> set[tuple[str, str, str]]:
        held = {(p.exchange, p.symbol, p.product) for p in self.positions()}
        live = Order.objects.filter(status__in=LIVE_STATUSES, execution_type=ExecutionType.ENTRY).exclude(
            alert=self.ctx.alert)
        live = live.filter(strategy=self.strategy) if self.strategy else live
        return held | set(live.values_list("exchange", "symbol", "product"))

    def lock(self) -> None:
        """Counted limits are counted under a lock (PostgreSQL; SQLite's writer is alone), taken
        before the guard's instrument locks, always in that order: two alerts at once cannot
        both pass ORDER_RATE_LIMIT or MAX_POSITIONS."""
        if self.strategy is not None:
            list(Strategy.objects.select_for_update().filter(pk=self.strategy.pk).values_list("pk"))
        else:
            list(RiskLimits.objects.select_for_update().filter(pk=self.limits.pk).values_list("pk"))


def _price_of(order: Order, quotes: dict) -> Decimal | None:
    if order.price is not None:
        return order.price
    quote = quotes.get((order.exchange, order.symbol))
    return quote.price if quote else None


def check_limits(ctx: IntakeContext) -> dict[int, Verdict]:
    pending = ctx.pending()
    if not pending:
        return {}
    # One query: the strategy's and the account's limits, and whether a lock stands on them (a
    # lock outlives a cleared limit: it stands until an admin resets it).
    configured = list(RiskLimits.objects.filter(Q(is_account=True) | Q(strategy=ctx.strategy))
                      .annotate(locked=Exists(RiskLock.objects.filter(limits=OuterRef("pk"), reset_at__isnull=True)))
                      .order_by("is_account"))
    scopes = [Scope(row, None if row.is_account else ctx.strategy, ctx, " account" if row.is_account else "")
              for row in configured if row.locked or row.configured()]
    if not scopes:
        return {}
    for scope in scopes:
        if scope.limits.max_orders_per_min or scope.limits.max_positions:
            scope.lock()
    needs_price = any(s.limits.max_notional or s.limits.price_band_pct for s in scopes)
    quotes = latest_prices({(o.exchange, o.symbol) for o in pending}) if needs_price else {}
    blocked: dict[int, Verdict] = {}
    passed: list = []  # legs of this alert that passed so far: they count for the legs after them
    for order in pending:
        verdicts = []
        for scope in scopes:
            verdicts += _check_order(scope, order, quotes, passed)
        first = None
        for code, verdict in verdicts:
            ctx.note(order, code, verdict)
            first = first or verdict
        if first:
            blocked[order.leg] = first
        else:
            passed.append(order)
    return blocked


def _price_unknown(order: Order, label: str, detail: str) -> Verdict:
    return Verdict(f"RISK_BLOCKED:PRICE_UNKNOWN{label} {order.exchange}:{order.symbol}", detail)


def _check_order(scope: Scope, order: Order, quotes: dict, passed: list) -> list[tuple[str, Verdict | None]]:
    limits, label, results = scope.limits, scope.label, []
    entry = order.execution_type == ExecutionType.ENTRY
    if entry:
        if limits.daily_loss is not None:
            results.append(scope.daily_loss())
        results.append(scope.max_loss())
        if limits.cooldown_min:
            results.append(scope.cooldown())
    if limits.max_qty is not None:
        over = order.qty > limits.max_qty
        results.append(("QTY_LIMIT", Verdict(f"RISK_BLOCKED:QTY_LIMIT{label} qty {order.qty} > {limits.max_qty}",
                                             f"{order.side} {order.qty} {order.symbol}; limit {limits.max_qty} "
                                             "per order") if over else None))
    if limits.max_notional is not None:
        price = _price_of(order, quotes)
        if price is None:
            cap = _money(limits.max_notional)
            results.append(("PRICE_UNKNOWN", _price_unknown(order, label,
                                                            f"notional cap {cap}: no limit price and no known price")))
        else:
            notional = price * order.qty
            over = notional > limits.max_notional
            results.append(("NOTIONAL_LIMIT", Verdict(
                f"RISK_BLOCKED:NOTIONAL_LIMIT{label} {_money(notional)} > {_money(limits.max_notional)}",
                f"{order.qty} x {_price(price)} = {_money(notional)}") if over else None))
    if limits.price_band_pct is not None and order.price is not None:
        quote = quotes.get((order.exchange, order.symbol))
        if quote is None:
            results.append(("PRICE_UNKNOWN", _price_unknown(order, label,
                                                            f"price band {limits.price_band_pct}%: no known price")))
        else:
            off = abs(order.price - quote.price) / quote.price * 100
            over = off > limits.price_band_pct
            results.append(("PRICE_BAND", Verdict(
                f"RISK_BLOCKED:PRICE_BAND{label} {_price(order.price)} is {off:.2f}% from {_price(quote.price)} > "
                f"{limits.price_band_pct}%", f"latest price {_price(quote.price)} at {quote.at:%H:%M:%S} UTC")
                if over else None))
    if limits.max_orders_per_min is not None and not (order.source == Source.SYSTEM and not entry):
        count = scope.once("recent", scope.recent_orders) + len(passed) + 1
        over = count > limits.max_orders_per_min
        results.append(("ORDER_RATE_LIMIT", Verdict(
            f"RISK_BLOCKED:ORDER_RATE_LIMIT{label} {count} orders in 60s > {limits.max_orders_per_min}",
            f"orders not blocked at intake in the last 60 s, this one included: {count}") if over else None))
    if entry and limits.max_positions is not None:
        open_now = scope.once("open", scope.open_instruments) | {(o.exchange, o.symbol, o.product) for o in passed}
        key = (order.exchange, order.symbol, order.product)
        over = key not in open_now and len(open_now) >= limits.max_positions
        results.append(("MAX_POSITIONS", Verdict(
            f"RISK_BLOCKED:MAX_POSITIONS{label} {len(open_now)} open >= {limits.max_positions}",
            f"open or opening: {', '.join(sorted(f'{e}:{s}' for e, s, _ in open_now))}") if over else None))
    return results


def live_state(limits: RiskLimits) -> str:
    """What the limits are checked against right now, for the admin: today's P&L, losing
    exits in a row, cooldown, lock."""
    strategy = None if limits.is_account else limits.strategy
    limits.locked = RiskLock.objects.filter(limits=limits, reset_at__isnull=True).exists()
    scope = Scope(limits, strategy, IntakeContext(strategy, None, []), " account" if strategy is None else "")
    pnl, how = scope.day_pnl()
    parts = [f"day P&L {_money(pnl)} ({how})" if pnl is not None else f"day P&L unknown: {how}"]
    exits = list(scope.fills().filter(order__execution_type=ExecutionType.EXIT).values("order_id")
                 .annotate(pnl=Sum("realized_pnl"), last=Max("at")).order_by("-last")[:20])
    losing = next((i for i, e in enumerate(exits) if e["pnl"] >= 0), len(exits))
    parts.append(f"losing exits in a row: {losing}")
    if limits.cooldown_min:
        _, verdict = scope.cooldown()
        parts.append(verdict.tag.split(" ", 1)[1] if verdict else "no cooldown")
    lock = scope.active_lock() if limits.locked else None
    parts.append(f"LOCKED since {lock.created_at:%Y-%m-%d %H:%M} UTC: {lock.tag}" if lock else "not locked")
    return "; ".join(parts)
