"""The kill switch: global and per strategy, ACTIVE / REDUCING (exits only) / HALTED.

The stricter of the global and the strategy's switch applies. HALTED is checked again by
the claim's own UPDATE, so orders already queued never reach the broker.
"""

import logging

from django.db import connection, transaction
from django.utils import timezone

from orderdesk.statements import Condition
from orders import events
from orders.models import ExecutionType, Strategy

from .models import KillSwitch, KillSwitchChange, Mode

log = logging.getLogger("orderdesk.killswitch")

_STRICTNESS = {Mode.ACTIVE: 0, Mode.REDUCING: 1, Mode.HALTED: 2}
HALTED_TAG = "RISK_BLOCKED:KILL_SWITCH_HALTED"
REDUCING_TAG = "RISK_BLOCKED:KILL_SWITCH_REDUCING"


SWITCHES = connection.ops.quote_name(KillSwitch._meta.db_table)


def effective_mode(strategy_id: int) -> str:
    """One query: the stricter of the global switch and the strategy's own. Hand-written, as
    the intake's other reads: the ORM's compile of this OR was 0.11 ms of every intake, the
    query itself 0.01 ms (benchmarks/intake.py)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT mode FROM {SWITCHES} WHERE is_global = %s OR strategy_id = %s", [True, strategy_id])
        modes = [mode for (mode,) in cursor.fetchall()]
    return max(modes, key=_STRICTNESS.__getitem__, default=Mode.ACTIVE)


_HALTED = f"EXISTS (SELECT 1 FROM {SWITCHES} WHERE (is_global = %s OR strategy_id = %s) AND mode = %s)"


def halted(strategy_id: int) -> Condition:
    """True in SQL while the global or the strategy's switch is HALTED: for conditions that
    must hold at the moment of an update, not at a read before it. Written in SQL once (see
    orderdesk.statements.Condition): every claim checks it."""
    return Condition(_HALTED, (True, strategy_id, Mode.HALTED))


def block_tag(mode: str, execution_type: str) -> str | None:
    if mode == Mode.HALTED:
        return HALTED_TAG
    if mode == Mode.REDUCING and execution_type == ExecutionType.ENTRY:
        return REDUCING_TAG
    return None


def set_mode(mode: str, *, actor: str, strategy: Strategy | None = None) -> KillSwitch:
    """Switch the global (strategy None) or a strategy's kill switch, recording who and when."""
    if mode not in Mode.values:
        raise ValueError(f"mode must be one of {', '.join(Mode.values)}")
    with transaction.atomic():
        switch, _ = KillSwitch.objects.select_for_update().get_or_create(
            strategy=strategy, is_global=strategy is None)
        before = switch.mode
        switch.mode, switch.updated_by, switch.updated_at = mode, actor[:64], timezone.now()
        switch.save()
        KillSwitchChange.objects.create(strategy=strategy, from_mode=before, to_mode=mode, actor=actor[:64])
        events.on_commit(events.desk_event, __name__, kind="KILL_SWITCH", params={
            "scope": strategy.name if strategy else "global", "from": before, "to": mode, "actor": actor})
    log.warning("kill switch %s: %s -> %s by %s", strategy or "global", before, mode, actor)
    return switch


class HaltedAtClaim:
    """The claim-time hook (settings.ORDERDESK_CLAIM_GUARD): the claim's own UPDATE checks
    HALTED, so an order queued before the switch was thrown can never be claimed after it."""

    def blocks(self, strategy_id: int) -> Condition:
        return halted(strategy_id)

    def refusal(self, strategy_id: int) -> tuple[str, str] | None:
        if effective_mode(strategy_id) == Mode.HALTED:
            return HALTED_TAG, "kill switch HALTED at claim time"
        return None


claim_guard = HaltedAtClaim()
