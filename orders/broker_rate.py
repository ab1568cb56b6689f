"""The broker's request rate, shared by every worker of every cluster: at most
BROKER_MAX_ORDERS_PER_S placements and cancels in any sliding second (Shoonya is reported to
refuse beyond 10-20 a second). A token bucket would let about twice that into one second
after a quiet spell; this keeps the times of the last second's requests instead.

The times live in Redis (a sorted set, one Lua script: Redis' own clock, so every machine
agrees) when REDIS_URL is set, in the database otherwise (BrokerRequest rows, taken one
process at a time; the clocks of the machines that share it must agree).
A slot is taken before the claim, never between the claim and the broker call: a worker that
waits holds no order (so a slot counts for a little more than a second: WINDOW_MS). A burst waits; it never fails. Cancels and exits go first: while one
waits, entries do not take a slot.
"""

import logging
import time
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import BrokerRequest
from .throttles import redis_client

log = logging.getLogger("orderdesk.broker_rate")

# A slot counts for the second after it plus a margin: the claim (and a login, the first
# time) come between the slot and the request, and it is the broker's second that counts.
WINDOW_MS = 1000 + 250
URGENT_MARK_MS = 2000  # a waiting cancel or exit keeps entries back this long unless renewed
KEY = "orderdesk:broker-requests"
URGENT_KEY = "orderdesk:broker-requests:urgent"
SHOONYA_DEFAULT = 8

# KEYS: the requests' sorted set, the urgent marker. ARGV: limit, urgent (1/0), member.
# Returns 0 when a slot was taken, else the milliseconds to wait.
_TAKE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', %(urgent_ms)d)
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return 20
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - %(window)d)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], %(window)d * 2)
  if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + %(window)d - now_ms)
""" % {"urgent_ms": URGENT_MARK_MS, "window": WINDOW_MS}


def limit() -> int:
    """BROKER_MAX_ORDERS_PER_S, or the broker's default: 8 for Shoonya, none for paper."""
    if settings.BROKER_MAX_ORDERS_PER_S is not None:
        return settings.BROKER_MAX_ORDERS_PER_S
    return SHOONYA_DEFAULT if settings.ORDERDESK_BROKER == "shoonya" else 0


def take_slot(urgent: bool, what: str) -> float:
    """Wait for a slot in the broker's sliding second; returns the seconds waited."""
    n = limit()
    if n <= 0:
        return 0.0
    started = time.monotonic()
    member = f"{what}:{time.time_ns()}"
    while (wait_ms := _take(n, urgent, member)) > 0:
        time.sleep(wait_ms / 1000)
    waited = time.monotonic() - started
    if waited > 0.5:
        log.info("%s waited %.1fs for a broker request slot (%d a second)", what, waited, n)
    return waited


def _take(n: int, urgent: bool, member: str) -> int:
    client = redis_client()
    if client is not None:
        try:
            return int(client.eval(_TAKE, 2, KEY, URGENT_KEY, n, "1" if urgent else "0", member))
        except (redis.RedisError, OSError) as exc:  # Redis away: the database still counts for everyone
            log.warning("broker request slots: Redis unavailable (%s); counting in the database", exc)
    return _take_in_database(n, urgent)


PG_LOCK_KEY = 0x6F72646572  # pg_advisory_xact_lock's key for this one critical section


def _take_in_database(n: int, urgent: bool) -> int:
    now = timezone.now()
    window_start = now - timedelta(milliseconds=WINDOW_MS)
    with transaction.atomic():
        # One taker at a time: an advisory lock on PostgreSQL (SQLite's IMMEDIATE transaction
        # already admits one writer).
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_LOCK_KEY])
        BrokerRequest.objects.filter(at__lte=window_start).delete()
        if urgent:  # entries stay back while a cancel or an exit waits
            BrokerRequest.objects.filter(urgent_waiting=True).delete()
            BrokerRequest.objects.create(at=now + timedelta(milliseconds=URGENT_MARK_MS), urgent_waiting=True)
        elif BrokerRequest.objects.filter(urgent_waiting=True, at__gt=now).exists():
            return 20
        recent = list(BrokerRequest.objects.filter(urgent_waiting=False).order_by("at")
                      .values_list("at", flat=True)[:n])
        if len(recent) < n:
            BrokerRequest.objects.create(at=now)
            if urgent:
                BrokerRequest.objects.filter(urgent_waiting=True).delete()
            return 0
        return max(1, int((recent[0] - window_start).total_seconds() * 1000))
