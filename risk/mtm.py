"""MTM exits: a strategy whose day P&L (the risk manager's figure: realised today plus its open
positions at the latest known price) reaches −mtm_stop_loss or +mtm_target is squared off, once a
trading day, and its entries stay locked for the rest of the day (RISK_BLOCKED:MTM_EXIT_DONE).
The watcher asks after every pass (each price snapshot and the fills it applied)."""

from django.utils import timezone

from orders.models import SquareOffDay, SquareOffTrigger
from orders.tradingday import local_now

from .limits import Scope, _money
from .models import RiskLimits
from .pipeline import IntakeContext


def strategies_to_square_off(now=None) -> list[tuple]:
    """(strategy, why) of each strategy whose day P&L reached its MTM stop or target and that
    has not been squared off for it today. An unknown P&L (a stale price) decides nothing."""
    now = now or timezone.now()
    done = SquareOffDay.objects.filter(day=local_now(now).date(), trigger=SquareOffTrigger.MTM).values("strategy")
    due = []
    rows = (RiskLimits.objects.filter(strategy__isnull=False).exclude(strategy__in=done)
            .exclude(mtm_stop_loss__isnull=True, mtm_target__isnull=True).select_related("strategy"))
    for limits in rows:
        scope = Scope(limits, limits.strategy, IntakeContext(limits.strategy, None, [], now=now))
        pnl, how = scope.day_pnl()
        if pnl is None:
            continue
        if limits.mtm_stop_loss is not None and pnl <= -limits.mtm_stop_loss:
            due.append((limits.strategy, f"day P&L {_money(pnl)} <= {_money(-limits.mtm_stop_loss)} "
                                         f"(MTM stop loss; {how})"))
        elif limits.mtm_target is not None and pnl >= limits.mtm_target:
            due.append((limits.strategy, f"day P&L {_money(pnl)} >= {_money(limits.mtm_target)} (MTM target; {how})"))
    return due
