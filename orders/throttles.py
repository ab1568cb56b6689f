"""The webhook's rate limits: per client address and per strategy, in DRF rate strings.

Counted in fixed windows (one counter per key and window) rather than with DRF's
SimpleRateThrottle, whose history keeps every request's timestamp of the window and writes
the whole list back on each request: at 5000 requests into a 6000/min window it cost 113 us a
request in process memory and 399 us on Redis, and its read-modify-write loses counts between
processes. A counter here is one pipelined INCR + EXPIRE: 79 us on Redis (Django's cache API
needs EXISTS + INCR, 205 us). A fixed window may let up to twice the rate through around a
window's edge; for a stop against a runaway sender that is fine.

Shared by every process through Redis when the cache is there (settings.CACHES: its own Redis
database, never the queue's); else counted in each process's memory. A limit that cannot be
counted (Redis down) lets the alert through: losing alerts is worse than a missed limit.
"""

import logging
import time
from functools import lru_cache

import redis
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger("orderdesk.throttle")

REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
KEY_PREFIX = "orderdesk:rate"


class WindowLimit:
    def __init__(self, scope: str, setting: str):
        self.scope, self.setting = scope, setting
        self.rate = getattr(settings, setting)
        try:
            # DRF's own parser, so the strings mean what they mean in DRF ("6000/min", "100/s").
            self.limit, self.period_s = SimpleRateThrottle.parse_rate(None, self.rate)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            self.limit = None
        if not self.limit or self.limit < 1:
            raise ImproperlyConfigured(f"{setting}: {self.rate!r} is not a rate such as 6000/min")

    def hit(self, ident: str) -> float | None:
        """Count one request of `ident`: None within the rate, else seconds until it resets."""
        now = time.time()
        window = int(now // self.period_s)
        count = _count(f"{KEY_PREFIX}:{self.scope}:{ident}:{window}", 2 * self.period_s)
        if count is None or count <= self.limit:
            return None
        return (window + 1) * self.period_s - now


@lru_cache(maxsize=1)
def _redis() -> redis.Redis | None:
    config = settings.CACHES["default"]
    if config["BACKEND"] != REDIS_CACHE:
        return None
    return redis.Redis.from_url(config["LOCATION"], **config.get("OPTIONS", {}))


def redis_client() -> redis.Redis | None:
    """The cache's Redis (shared by every process), or None without Redis."""
    return _redis()


def _count(key: str, ttl_s: int) -> int | None:
    try:
        client = _redis()
        if client is None:  # this process's memory: LocMemCache's add and incr hold its lock
            return 1 if cache.add(key, 1, ttl_s) else cache.incr(key)
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl_s, nx=True)
        return pipe.execute()[0]
    except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: expired between add and incr
        log.warning("rate limit not counted for %s: %s", key, exc)
        return None


@lru_cache(maxsize=1)
def webhook_limits() -> tuple[WindowLimit, WindowLimit]:
    """(per client address, per strategy), read from the settings once per process."""
    return (WindowLimit("ip", "WEBHOOK_RATE_PER_IP"), WindowLimit("strategy", "WEBHOOK_RATE_PER_STRATEGY"))


@receiver(setting_changed)
def _reread_settings(*, setting, **kwargs):
    if setting in ("WEBHOOK_RATE_PER_IP", "WEBHOOK_RATE_PER_STRATEGY", "CACHES"):
        webhook_limits.cache_clear()
        _redis.cache_clear()
