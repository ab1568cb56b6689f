"""The paper broker's own tables: an instrument list and an order book."""

from decimal import Decimal

from django.db import models
from django.utils import timezone


class Behaviour(models.TextChoices):
    """Per-instrument switches, so tests and demos can make the paper broker misbehave."""

    NORMAL = "NORMAL", "fill after the delay"
    TIMEOUT_ON_PLACE = "TIMEOUT_ON_PLACE", "record the order, then time out the place call"
    REJECT_LATER = "REJECT_LATER", "accept, then REJECTED after the delay"
    CANCEL_AFTER_PARTIAL = "CANCEL_AFTER_PARTIAL", "fill half, then CANCELED"


class PaperInstrument(models.Model):
    exchange = models.CharField(max_length=8, default="NSE")
    symbol = models.CharField(max_length=64)
    ref_price = models.DecimalField(max_digits=14, decimal_places=4)
    enabled = models.BooleanField(default=True)
    behaviour = models.CharField(max_length=24, choices=Behaviour.choices, default=Behaviour.NORMAL)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="paper_instrument_unique")]

    def __str__(self):
        return f"{self.exchange}:{self.symbol}"


class PaperOrder(models.Model):
    """Statuses and reasons are spelled as Noren spells them (OPEN, COMPLETE, CANCELED …)."""

    broker_order_id = models.CharField(max_length=32, unique=True)
    client_order_id = models.CharField(max_length=64, blank=True, db_index=True)
    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    side = models.CharField(max_length=4)
    qty = models.PositiveIntegerField()
    order_type = models.CharField(max_length=8)
    product = models.CharField(max_length=4)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    trigger_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    fill_price = models.DecimalField(max_digits=14, decimal_places=4)
    behaviour = models.CharField(max_length=24, choices=Behaviour.choices)
    status = models.CharField(max_length=16, default="OPEN")
    filled_qty = models.PositiveIntegerField(default=0)
    avg_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    placed_at = models.DateTimeField(default=timezone.now, db_index=True)
    due_at = models.DateTimeField(help_text="when the order next moves")
    changed_at = models.DateTimeField(auto_now=True, db_index=True,
                                      help_text="its last change: the book is read from the last changes on")

    class Meta:
        # The paper feed's tick, many times a second: the due OPEN orders from the index alone.
        indexes = [models.Index(fields=["status", "due_at"], name="paperorder_status_due")]

    def __str__(self):
        return f"{self.broker_order_id} {self.side} {self.qty} {self.symbol} {self.status}"


DEFAULT_INSTRUMENTS = [
    ("NSE", "RELIANCE-EQ", Decimal("2950.00")),
    ("NSE", "SBIN-EQ", Decimal("815.50")),
    ("NSE", "INFY-EQ", Decimal("1875.25")),
    ("NSE", "TCS-EQ", Decimal("4120.00")),
    ("NSE", "HDFCBANK-EQ", Decimal("1720.40")),
    ("NSE", "ICICIBANK-EQ", Decimal("1255.10")),
    ("NSE", "NIFTYBEES-EQ", Decimal("268.35")),
    ("BSE", "RELIANCE", Decimal("2950.00")),
]


class SessionKind(models.TextChoices):
    OAUTH = "OAUTH", "OAuth access token (Authorization: Bearer)"
    LEGACY = "LEGACY", "QuickAuth susertoken (jKey)"


class BrokerSession(models.Model):
    """A live broker's login, one row per broker, shared by every worker and the watcher.

    The token is a bearer credential: the admin shows the row read-only without it, and
    neither str() nor repr() shows it. `note` says why the session was invalidated or the last login failed
    (the broker's message, never a secret)."""

    broker = models.CharField(max_length=32, unique=True)
    user_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=8, choices=SessionKind.choices)
    token = models.TextField(blank=True)
    valid = models.BooleanField(default=False)
    obtained_at = models.DateTimeField(null=True, blank=True)
    invalidated_at = models.DateTimeField(null=True, blank=True)
    login_failed_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True)

    def __str__(self):
        return f"{self.broker} {self.kind} session of {self.user_id} ({'valid' if self.valid else 'invalid'})"
