"""INSUFFICIENT_FUNDS: for a strategy with `check_funds`, a delivery (CNC) BUY whose value
(qty × its limit price, else the latest known price) exceeds the account's available cash, as
the watcher last read it from the broker, less what the CNC buys registered since that read
(any strategy's, not failed) and this alert's earlier legs will spend. Margin products are the
broker's to judge (leverage, collateral, exposure rules)."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings

from orders.models import BrokerFunds, Order, Product, Side, Status
from orders.prices import latest_prices

from .limits import _money, _price
from .pipeline import IntakeContext, Verdict


def check_funds(ctx: IntakeContext) -> dict[int, Verdict]:
    if not ctx.strategy.check_funds:
        return {}
    buys = [o for o in ctx.pending() if o.product == Product.CNC and o.side == Side.BUY]
    if not buys:
        return {}
    funds = BrokerFunds.objects.filter(broker=settings.ORDERDESK_BROKER).first()
    stale = funds is None or ctx.now - funds.taken_at > timedelta(seconds=settings.FUNDS_MAX_AGE_S)
    since = [] if stale else list(
        Order.objects.filter(product=Product.CNC, side=Side.BUY, created_at__gte=funds.taken_at)
        .exclude(status=Status.FAILED).exclude(alert=ctx.alert)
        .values_list("exchange", "symbol", "qty", "avg_price", "working_price", "price"))
    unpriced = {(e, s) for e, s, _, *prices in since if all(p is None for p in prices)}
    quotes = latest_prices({(o.exchange, o.symbol) for o in buys if o.price is None} | unpriced)
    blocked, spent = {}, Decimal(0)
    for exchange, symbol, qty, *prices in since:  # registered after the read: not in it yet
        price = next((p for p in prices if p is not None), None)
        quote = quotes.get((exchange, symbol))
        spent += qty * (price if price is not None else (quote.price if quote else Decimal(0)))
    for order in buys:
        if stale:
            age = "never read" if funds is None else f"read {(ctx.now - funds.taken_at).total_seconds():.0f}s ago"
            verdict = Verdict("RISK_BLOCKED:FUNDS_UNKNOWN", f"the broker's funds were {age} (FUNDS_MAX_AGE_S "
                                                            f"{settings.FUNDS_MAX_AGE_S:.0f})")
        else:
            quote = quotes.get((order.exchange, order.symbol))
            price = order.price if order.price is not None else (quote.price if quote else None)
            if price is None:
                verdict = Verdict(f"RISK_BLOCKED:PRICE_UNKNOWN {order.exchange}:{order.symbol}",
                                  "available cash check: no limit price and no known price")
            else:
                value, left = price * order.qty, funds.available_cash - spent
                verdict = Verdict(f"RISK_BLOCKED:INSUFFICIENT_FUNDS {_money(value)} > {_money(left)}",
                                  f"{order.qty} x {_price(price)} = {_money(value)}; available cash "
                                  f"{_money(funds.available_cash)} at {funds.taken_at:%H:%M:%S} UTC"
                                  + (f", less {_money(spent)} of the CNC buys since" if spent else "")) if value > left else None
                if verdict is None:
                    spent += value
        if ctx.note(order, "INSUFFICIENT_FUNDS", verdict, "within the available cash") and order.leg not in blocked:
            blocked[order.leg] = verdict
    return blocked
