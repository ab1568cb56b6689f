"""Which broker this process talks to (ORDERDESK_BROKER: a name below, or the dotted path of a
Broker class, such as the test suite's fault-injecting broker), created once per process."""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import Broker

BROKERS = {
    "paper": "brokers.paper.PaperBroker",
    "shoonya": "brokers.shoonya.ShoonyaBroker",
}


def known(name: str) -> bool:
    """A broker name, or a dotted path that imports a Broker class."""
    if name in BROKERS:
        return True
    try:
        return "." in name and issubclass(import_string(name), Broker)
    except (ImportError, TypeError):
        return False


@cache
def _broker(name: str) -> Broker:
    if not known(name):
        raise ImproperlyConfigured(f"ORDERDESK_BROKER={name!r}: choose one of {sorted(BROKERS)}, or give the "
                                   "dotted path of a Broker class")
    return import_string(BROKERS.get(name, name))()


def get_broker() -> Broker:
    return _broker(settings.ORDERDESK_BROKER)


def new_broker() -> Broker:
    """An instance of its own, for a thread that must not share the process's (its HTTP session)."""
    return _broker.__wrapped__(settings.ORDERDESK_BROKER)
