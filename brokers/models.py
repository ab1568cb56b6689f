"""The paper broker's own tables (an instrument price list and an order book), the broker's
symbol master and the exchanges' freeze quantities."""

from decimal import Decimal

from django.db import models
from django.utils import timezone


class Behaviour(models.TextChoices):
    """Per-instrument switches, so tests and demos can make the paper broker misbehave."""

    NORMAL = "NORMAL", "fill after the delay"
    TIMEOUT_ON_PLACE = "TIMEOUT_ON_PLACE", "record the order, then time out the place call"
    REJECT_LATER = "REJECT_LATER", "accept, then REJECTED after the delay"
    CANCEL_AFTER_PARTIAL = "CANCEL_AFTER_PARTIAL", "fill half, then CANCELED"
    STAY_OPEN = "STAY_OPEN", "stay OPEN until cancelled (a resting order, to cancel or modify)"


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


class Instrument(models.Model):
    """One tradable instrument of the broker's symbol master (manage.py sync_instruments
    replaces an exchange's rows each day)."""

    exchange = models.CharField(max_length=8)
    token = models.CharField(max_length=16)
    trading_symbol = models.CharField(max_length=64, help_text="what orders name: RELIANCE-EQ, NIFTY24DEC24000CE")
    symbol = models.CharField(max_length=64, blank=True, help_text="the underlying: RELIANCE, NIFTY")
    instrument_type = models.CharField(max_length=16, blank=True, help_text="EQ, FUTIDX, OPTIDX, FUTSTK …")
    expiry = models.DateField(null=True, blank=True)
    strike = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    option_type = models.CharField(max_length=4, blank=True, help_text="CE or PE")
    lot_size = models.PositiveIntegerField(default=1)
    tick_size = models.DecimalField(max_digits=14, decimal_places=4)
    freeze_qty = models.PositiveIntegerField(null=True, blank=True,
                                             help_text="from the master where it has one; else the freeze table's")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "trading_symbol"], name="instrument_unique")]
        indexes = [models.Index(fields=["exchange", "symbol"], name="instrument_underlying"),
                   models.Index(fields=["exchange", "token"], name="instrument_token")]

    def __str__(self):
        return f"{self.exchange}:{self.trading_symbol}"


class FreezeQuantity(models.Model):
    """The exchange's freeze quantity of an underlying (NSE's qtyfreeze list), for instruments
    whose master row has none; edited in the admin or loaded with sync_instruments --freeze-file."""

    exchange = models.CharField(max_length=8, default="NFO")
    symbol = models.CharField(max_length=64, help_text="the underlying, as the master's Symbol column: NIFTY")
    freeze_qty = models.PositiveIntegerField(help_text="the largest quantity one order may carry")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "freeze quantities"
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="freeze_qty_unique")]

    def __str__(self):
        return f"{self.exchange}:{self.symbol} freeze {self.freeze_qty}"


class InstrumentMaster(models.Model):
    """One exchange's symbol master: what the last sync loaded, or why it failed (the rows of
    the last good sync stay)."""

    exchange = models.CharField(max_length=8, primary_key=True)
    rows = models.PositiveIntegerField(default=0)
    synced_at = models.DateTimeField(null=True, blank=True, help_text="the last sync that loaded the rows")
    attempted_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True, help_text="why the last attempt failed; empty: it worked")

    def __str__(self):
        return f"{self.exchange} master ({self.rows} instruments)"
