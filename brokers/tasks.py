"""django-q2 tasks of the brokers app."""

import logging

from django.conf import settings

from . import instruments

log = logging.getLogger("orderdesk.instruments")


def sync_instruments() -> str:
    """The daily schedule (08:30 IST): INSTRUMENT_EXCHANGES' masters; failures keep the old rows."""
    if not settings.INSTRUMENT_EXCHANGES:
        return "no exchanges to sync (INSTRUMENT_EXCHANGES is empty)"
    failed = instruments.sync(settings.INSTRUMENT_EXCHANGES)
    for exchange, why in failed.items():
        log.error("symbol master of %s not loaded, yesterday's rows kept: %s", exchange, why)
    loaded = [e for e in settings.INSTRUMENT_EXCHANGES if e not in failed]
    return f"loaded {', '.join(loaded) or 'none'}" + (f"; failed {', '.join(failed)}" if failed else "")
