"""The blockers every intake runs, the claim-time check and the kill switch's control, from
the settings (ORDERDESK_BLOCKERS, ORDERDESK_CLAIM_GUARD, ORDERDESK_KILL_SWITCH_CONTROL,
ORDERDESK_MODIFY_CHECK, ORDERDESK_MTM_CHECK, ORDERDESK_EARLY_LOCKS: dotted paths), loaded once per process as brokers/registry.py loads brokers. The only way orders
reaches risk."""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string


def _load(setting: str, path: str):
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{setting}: cannot import {path!r}: {exc}") from None


@cache
def _blockers(paths: tuple[str, ...]) -> list:
    return [_load("ORDERDESK_BLOCKERS", path) for path in paths]


def get_blockers() -> list:
    return _blockers(tuple(settings.ORDERDESK_BLOCKERS))


@cache
def _imported(setting: str, path: str):
    return _load(setting, path)


def claim_guard():
    """An object with `blocks(strategy_id)`: a SQL condition (an orderdesk.statements.Condition,
    or a Q or boolean expression) under which the claim's UPDATE must not win, and
    `refusal(strategy_id)`: the (tag, detail) to fail the order with then."""
    return _imported("ORDERDESK_CLAIM_GUARD", settings.ORDERDESK_CLAIM_GUARD)


def modification_check():
    """check(order, *, qty, price, trigger_price, instrument) -> a Verdict refusing the new terms,
    or None (instrument: the order's symbol master row, brokers.instruments.Spec, or None)."""
    return _imported("ORDERDESK_MODIFY_CHECK", settings.ORDERDESK_MODIFY_CHECK)


def early_locks():
    """lock(strategy, exchange, symbols): the blockers' locks, taken before the legs are
    registered (target positions read the position under them)."""
    return _imported("ORDERDESK_EARLY_LOCKS", settings.ORDERDESK_EARLY_LOCKS)


def mtm_check():
    """check(now) -> [(strategy, why)]: the strategies whose day P&L reached an MTM stop or target."""
    return _imported("ORDERDESK_MTM_CHECK", settings.ORDERDESK_MTM_CHECK)


def kill_switch_control():
    """set_mode(mode, *, actor, strategy=None): throw a kill switch, recorded with who."""
    return _imported("ORDERDESK_KILL_SWITCH_CONTROL", settings.ORDERDESK_KILL_SWITCH_CONTROL)


@receiver(setting_changed)
def _reload(*, setting, **kwargs):
    if setting in ("ORDERDESK_BLOCKERS", "ORDERDESK_CLAIM_GUARD", "ORDERDESK_KILL_SWITCH_CONTROL",
                   "ORDERDESK_MODIFY_CHECK", "ORDERDESK_MTM_CHECK", "ORDERDESK_EARLY_LOCKS"):
        _blockers.cache_clear()
        _imported.cache_clear()
