"""Which broker this process talks to (ORDERDESK_BROKER), created once per process."""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import Broker

BROKERS = {
    "paper": "brokers.paper.PaperBroker",
    "shoonya": "brokers.shoonya.ShoonyaBroker",
}


@cache
def _broker(name: str) -> Broker:
    if name not in BROKERS:
        raise ImproperlyConfigured(f"ORDERDESK_BROKER={name!r}: choose one of {sorted(BROKERS)}")
    return import_string(BROKERS[name])()


def get_broker() -> Broker:
    return _broker(settings.ORDERDESK_BROKER)


def new_broker() -> Broker:
    """An instance of its own, for a thread that must not share the process's (its HTTP session)."""
    return _broker.__wrapped__(settings.ORDERDESK_BROKER)
