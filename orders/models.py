"""The order contract: strategies, alerts, immutable orders and their audit trail.

Only `orders.lifecycle` writes an order's status, tag, broker id and fills; everything
else about an order is fixed when it is registered.
"""

import hashlib
import hmac
import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.deconstruct import deconstructible

from orderdesk import statements
from orderdesk.network import validate_networks


class Status(models.TextChoices):
    CREATED = "CREATED"
    SENT_TO_BROKER = "SENT_TO_BROKER"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"


# The addresses TradingView's webhooks come from (TradingView's "About webhooks" page).
TRADINGVIEW_SENDER_IPS = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")

LIVE_STATUSES = (Status.CREATED, Status.SENT_TO_BROKER)
TERMINAL_STATUSES = (Status.EXECUTED, Status.FAILED)


class Source(models.TextChoices):
    WEBHOOK = "webhook"
    DASHBOARD = "dashboard"
    SYSTEM = "system"


class ExecutionType(models.TextChoices):
    ENTRY = "ENTRY"
    EXIT = "EXIT"


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL-M"


class Product(models.TextChoices):
    CNC = "CNC"
    NRML = "NRML"
    MIS = "MIS"


EXCHANGE_CODES = ("NSE", "NFO", "BSE", "BFO", "CDS", "MCX")
WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def split_list(text: str) -> list[str]:
    return [item.strip().upper() for item in text.replace(",", " ").split() if item.strip()]


@deconstructible
class ChoiceListValidator:
    """A comma- or space-separated list whose items are all among `choices` (any case)."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def __call__(self, text: str) -> None:
        unknown = [item for item in split_list(text) if item not in self.choices]
        if unknown:
            raise ValidationError(f"{', '.join(unknown)}: not one of {', '.join(self.choices)}")

    def __eq__(self, other):
        return isinstance(other, ChoiceListValidator) and self.choices == other.choices


STRUCTURED_FAMILIES = ("GUARD_BLOCKED", "RISK_BLOCKED")
# Every family and code the desk writes (the README's tag table), for the blotter's filters:
# listing them from the rows would scan every order's index entry.
TAG_FAMILIES = ("GUARD_BLOCKED", "RISK_BLOCKED", "CANCELLED", "BROKER_REJECTED", "BROKER_SESSION", "BROKER_CANCELLED",
                "BROKER_EXPIRED", "BROKER_IN_DOUBT", "BROKER_UNKNOWN", "BROKER_RECOVERED")
TAG_CODES = ("STRATEGY_DISABLED", "KILL_SWITCH_HALTED", "KILL_SWITCH_REDUCING", "STALE_ALERT", "MARKET_CLOSED",
             "SYMBOL_NOT_ALLOWED", "PRODUCT_NOT_ALLOWED", "ORDER_TYPE_NOT_ALLOWED", "OUTSIDE_WINDOW",
             "DAILY_LOSS_LIMIT", "PNL_UNKNOWN", "MAX_LOSS_LOCK", "COOLDOWN", "QTY_LIMIT", "NOTIONAL_LIMIT",
             "PRICE_UNKNOWN", "PRICE_BAND", "ORDER_RATE_LIMIT", "MAX_POSITIONS", "DUPLICATE_LIVE_ORDER",
             "DUPLICATE_POSITION", "CROSS_STRATEGY_CONFLICT", "NO_POSITION", "EXIT_EXCEEDS_POSITION", "BATCH",
             "STALE_ORDER", "UNKNOWN_SYMBOL", "LOT_SIZE", "TICK_SIZE", "FREEZE_QTY", "TOO_MANY_SLICES",
             "MTM_EXIT_DONE", "INSUFFICIENT_FUNDS", "FUNDS_UNKNOWN")


def tag_parts(tag: str) -> tuple[str, str]:
    """(family, code) of a tag: the text before the first colon, and for a block the word after
    it (`BATCH` for batch tags); a broker's free-text reason has no code."""
    if ":" not in tag:
        return "", ""
    family, rest = tag.split(":", 1)
    code = rest.split(" ", 1)[0] if family in STRUCTURED_FAMILIES else ""
    return family[:32], code[:48]


def secret_digest(secret: str) -> str:
    # Secrets are >= 24 chars (generated ones 32 random bytes): a fast hash is enough and
    # keeps the check far inside the webhook's time budget, unlike password hashers.
    return hashlib.sha256(secret.encode()).hexdigest()


def _storable(text) -> bool:
    """A string a database can hold and SHA-256 can hash (JSON can carry lone surrogates and NULs)."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MIN_SECRET_LENGTH = 24
_DUMMY_DIGEST = secret_digest("no-such-strategy-" + secrets.token_hex(16))


class LegPolicy(models.TextChoices):
    ALL_OR_NONE = "ALL_OR_NONE", "all or none: one blocked leg fails the whole alert"
    PER_LEG = "PER_LEG", "per leg: each leg passes or fails alone"


class Strategy(models.Model):
    name = models.CharField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    secret_digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    leg_policy = models.CharField(max_length=12, choices=LegPolicy.choices, default=LegPolicy.ALL_OR_NONE)
    block_duplicates = models.BooleanField(
        default=True, help_text="block an ENTRY while a live order or open position on the same symbol and side exists")
    allow_cross_strategy = models.BooleanField(
        default=False, help_text="allow an ENTRY opposite to another strategy's live order or open position")
    # Strategy rules (risk.rules): empty = anything.
    allowed_exchanges = models.CharField(
        max_length=64, blank=True, validators=[ChoiceListValidator(EXCHANGE_CODES)],
        help_text="comma-separated, e.g. NSE,NFO; empty: any (GUARD_BLOCKED:SYMBOL_NOT_ALLOWED)")
    symbol_patterns = models.TextField(
        blank=True, help_text="trading symbols it may trade, shell patterns separated by commas or spaces, e.g. "
                              "NIFTY* BANKNIFTY* RELIANCE-EQ; empty: any (GUARD_BLOCKED:SYMBOL_NOT_ALLOWED)")
    allowed_products = models.CharField(
        max_length=32, blank=True, validators=[ChoiceListValidator(Product.values)],
        help_text="comma-separated, e.g. MIS; empty: any (GUARD_BLOCKED:PRODUCT_NOT_ALLOWED)")
    allowed_order_types = models.CharField(
        max_length=32, blank=True, validators=[ChoiceListValidator(OrderType.values)],
        help_text="comma-separated, e.g. LIMIT,SL; empty: any (GUARD_BLOCKED:ORDER_TYPE_NOT_ALLOWED)")
    window_start = models.TimeField(null=True, blank=True, help_text="IST; with window_end: orders only between")
    window_end = models.TimeField(null=True, blank=True, help_text="IST (GUARD_BLOCKED:OUTSIDE_WINDOW)")
    trading_days = models.CharField(
        max_length=32, blank=True, validators=[ChoiceListValidator(WEEKDAYS)],
        help_text="comma-separated, e.g. MON,TUE,WED,THU,FRI; empty: every day (GUARD_BLOCKED:OUTSIDE_WINDOW)")
    exits_outside_window = models.BooleanField(
        default=True, help_text="let EXIT legs through outside the window and days (never trapped in a position)")
    squareoff_time = models.TimeField(
        null=True, blank=True, help_text="IST: cancel the strategy's open orders and exit its positions at this time "
                                         "each day (MIS strategies: 15:15); empty: never")
    market_protection_pct = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal("0.01"))],
        help_text="% : send MARKET orders as LIMIT at the last price ± this (empty: MARKET_PROTECTION_PCT)")
    check_funds = models.BooleanField(
        default=False, help_text="refuse a CNC buy whose value exceeds the account's available cash "
                                 "(RISK_BLOCKED:INSUFFICIENT_FUNDS); margin products are the broker's to judge")
    split_above_freeze = models.BooleanField(
        default=False, help_text="a leg above the instrument's freeze quantity becomes several orders of at most "
                                 "it (slices, all or none) instead of GUARD_BLOCKED:FREEZE_QTY")
    allowed_ips = models.TextField(
        blank=True, validators=[validate_networks],
        help_text="IP addresses or CIDR networks the webhook accepts this strategy's alerts from, separated by "
                  "commas or spaces; empty: any. TradingView sends from " + ", ".join(TRADINGVIEW_SENDER_IPS) + ".")

    class Meta:
        verbose_name_plural = "strategies"

    def __str__(self):
        return self.name

    def set_secret(self, secret: str | None = None) -> str:
        """Store the digest of `secret` (or of a new random one) and return the secret."""
        if secret is None:
            secret = secrets.token_urlsafe(32)
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"a webhook secret must be at least {MIN_SECRET_LENGTH} characters")
        self.secret_digest = secret_digest(secret)
        return secret

    @staticmethod
    def authenticate(name, secret) -> "Strategy | None":
        """The strategy if `secret` is its secret; constant time whether or not it exists."""
        strategy = statements.first(Strategy, name=name) if _storable(name) else None
        expected = strategy.secret_digest if strategy else _DUMMY_DIGEST
        given = secret_digest(secret) if _storable(secret) else ""
        if hmac.compare_digest(expected, given) and strategy is not None:
            return strategy
        return None


def new_alert_id() -> str:
    return "a-" + secrets.token_hex(10)


def new_command_id() -> str:
    # Travels to the broker as the client order id (Noren `remarks`): short, URL-safe, hex.
    return secrets.token_hex(10)


class Alert(models.Model):
    """One row per accepted intake, whatever its source."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="alerts")
    source = models.CharField(max_length=16, choices=Source.choices)
    alert_id = models.CharField(max_length=64, db_index=True, help_text="client idempotency key, or generated")
    client_supplied_id = models.BooleanField(default=False)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="when the sender says it sent the alert")
    sender_ip = models.GenericIPAddressField(null=True, blank=True)
    actor = models.CharField(max_length=64)
    payload = models.JSONField(encoder=DjangoJSONEncoder, help_text="the body as received, secret redacted")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["strategy", "alert_id"], name="alert_id_unique_per_strategy")]

    def __str__(self):
        return f"{self.strategy_id}:{self.alert_id}"


class RejectedAlert(models.Model):
    """An intake refused with 4xx: kept so that no alert that reached us goes unrecorded."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    status_code = models.PositiveSmallIntegerField()
    reason = models.TextField()
    sender_ip = models.GenericIPAddressField(null=True, blank=True)
    strategy_name = models.CharField(max_length=64, blank=True)
    body = models.TextField(blank=True, help_text="redacted, capped")
    count = models.PositiveIntegerField(
        default=1, help_text="refusals from this sender with this status, reason and strategy name within the minute "
                             "of received_at")
    last_at = models.DateTimeField(null=True, blank=True, help_text="the latest of them")

    def __str__(self):
        return f"{self.status_code} {self.reason[:60]}"


class ImmutableOrderError(Exception):
    pass


class Order(models.Model):
    command_id = models.CharField(max_length=32, unique=True, default=new_command_id, editable=False)
    alert = models.ForeignKey(Alert, on_delete=models.PROTECT, related_name="orders")
    leg = models.PositiveSmallIntegerField()
    slice = models.PositiveSmallIntegerField(
        default=1, help_text="a leg above the freeze quantity, split: its orders are slices 1, 2 …")
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="orders")
    source = models.CharField(max_length=16, choices=Source.choices)
    execution_type = models.CharField(max_length=8, choices=ExecutionType.choices)
    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    qty = models.PositiveIntegerField()
    order_type = models.CharField(max_length=8, choices=OrderType.choices)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    trigger_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    product = models.CharField(max_length=4, choices=Product.choices)
    # Written only by orders.lifecycle:
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    tag = models.CharField(max_length=255, blank=True)
    tag_family = models.CharField(max_length=32, blank=True, db_index=True,
                                  help_text="the tag before its first colon: GUARD_BLOCKED, BROKER_REJECTED …")
    tag_code = models.CharField(max_length=48, blank=True, db_index=True,
                                help_text="a block's code (DUPLICATE_POSITION, QTY_LIMIT, BATCH …); empty for a "
                                          "broker's free-text reason")
    broker_order_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    filled_qty = models.PositiveIntegerField(default=0)
    avg_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="when the submission claim was won")
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="a cancel was asked for: sent to the broker once it has the order's id")
    # The terms the broker works with after an accepted modification (empty: as placed).
    working_qty = models.PositiveIntegerField(null=True, blank=True, help_text="total, filled and pending")
    working_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    working_trigger_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    audit_head = models.CharField(max_length=64, blank=True, editable=False,
                                  help_text="the hash of its last audit event (orders.audit)")

    class Meta:
        permissions = [("cancel_order", "Can cancel an order"), ("modify_order", "Can modify an open order"),
                       ("place_manual_order", "Can place manual orders and square off positions")]
        constraints = [models.UniqueConstraint(fields=["alert", "leg", "slice"], name="one_order_per_alert_leg_slice")]
        indexes = [models.Index(fields=["status", "created_at"], name="order_status_created"),
                   models.Index(fields=["symbol", "created_at"], name="order_symbol_created"),  # the blotter's search
                   # ORDER_RATE_LIMIT's count of a strategy's last 60 s, from the index alone.
                   models.Index(fields=["strategy", "created_at", "tag_family", "alert"], name="order_rate_count")]

    def __str__(self):
        return f"{self.command_id} {self.side} {self.qty} {self.symbol} [{self.status}]"

    @property
    def open_qty(self) -> int:
        """The quantity the broker works with: as placed, or as last modified."""
        return self.working_qty if self.working_qty is not None else self.qty

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableOrderError(
                f"order {self.command_id} is immutable: its details never change and its state "
                "changes only through orders.lifecycle"
            )
        super().save(*args, **kwargs)


class EventKind(models.TextChoices):
    CREATED = "CREATED"
    CLAIMED = "CLAIMED"  # CREATED -> SENT_TO_BROKER, about to call the broker
    BLOCKED = "BLOCKED"  # CREATED -> FAILED by a blocker
    BROKER_ACCEPTED = "BROKER_ACCEPTED"  # broker id stored
    BROKER_REJECTED = "BROKER_REJECTED"
    BROKER_IN_DOUBT = "BROKER_IN_DOUBT"  # no definite answer: never resent blindly
    BROKER_ID_ADOPTED = "BROKER_ID_ADOPTED"  # in-doubt order found in the book by command id
    FILL = "FILL"  # fill progress without a status change
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    RECOVERED = "RECOVERED"  # FAILED BROKER_UNKNOWN order later seen at the broker
    CONFLICT = "CONFLICT"  # a concurrent writer won; nothing changed
    CANCEL_REQUESTED = "CANCEL_REQUESTED"  # by a user (a queued order fails at once)
    CANCEL_SENT = "CANCEL_SENT"  # the broker took the cancel request; its CANCELED ends the order
    CANCEL_REFUSED = "CANCEL_REFUSED"  # the broker refused it (its message in the detail)
    MODIFY_REQUESTED = "MODIFY_REQUESTED"  # by a user: new price, trigger or qty (an OrderModification)
    MODIFIED = "MODIFIED"  # the broker took it: the working terms changed
    MODIFY_REFUSED = "MODIFY_REFUSED"  # the broker refused it (its message in the detail)
    PROTECTED_OPEN = "PROTECTED_OPEN"  # a protected MARKET order still open after MARKET_PROTECTION_TIMEOUT_S


class OrderEvent(models.Model):
    """The audit trail: one row per creation, transition and broker-field change."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    from_status = models.CharField(max_length=16, choices=Status.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=Status.choices)
    tag = models.CharField(max_length=255, blank=True)
    actor = models.CharField(max_length=64)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)
    # The order's broker-facing state after this event, for orders.audit's recomputation.
    broker_order_id = models.CharField(max_length=64, null=True, blank=True)
    filled_qty = models.PositiveIntegerField(null=True, blank=True)
    # The chain (orders.audit): this event's digest, and the previous event's of the same order.
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.kind} {self.from_status or '-'}->{self.to_status}"


class AuditCheck(models.Model):
    """One run of `manage.py verify_audit` (or its nightly schedule) and what it found."""

    ran_at = models.DateTimeField(default=timezone.now, db_index=True)
    since = models.DateTimeField(null=True, blank=True)
    orders = models.PositiveIntegerField(default=0)
    positions = models.PositiveIntegerField(default=0)
    mismatches = models.PositiveIntegerField(default=0)
    report = models.TextField(blank=True, help_text="the first mismatches, one a line")

    class Meta:
        ordering = ["-ran_at"]

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


class Fill(models.Model):
    """One fill increment of one of our orders: the ledger P&L is computed from. Written by
    orders.lifecycle in the transaction that records the fill; the same fill reported twice
    (a poll, later a push) counts once."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="fills")
    qty = models.PositiveIntegerField(help_text="this increment")
    price = models.DecimalField(max_digits=18, decimal_places=6, help_text="this increment's average price")
    cum_qty = models.PositiveIntegerField(help_text="the order's filled quantity after it")
    realized_pnl = models.DecimalField(max_digits=18, decimal_places=4, default=0,
                                       help_text="P&L this fill realised on the strategy's position")
    execution_type = models.CharField(max_length=8, blank=True, help_text="its order's, for the cooldown's read")
    broker_fill_id = models.CharField(max_length=64, null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "cum_qty"], name="one_fill_per_cumulative_qty"),
            models.UniqueConstraint(fields=["broker_fill_id"], condition=models.Q(broker_fill_id__isnull=False),
                                    name="one_fill_per_broker_fill_id"),
        ]
        # Covering the risk limits' reads (risk.limits.read_figures): the day's realised P&L and
        # the latest exits come from the index alone.
        indexes = [models.Index(fields=["strategy", "at", "realized_pnl"], name="fill_strategy_at"),
                   models.Index(fields=["strategy", "execution_type", "at", "order", "realized_pnl"],
                                name="fill_strategy_exits"),
                   models.Index(fields=["at"], name="fill_at")]

    def __str__(self):
        return f"{self.order_id} +{self.qty} @ {self.price} ({self.cum_qty})"


class Notification(models.Model):
    """A message to the trader (Telegram), delivered by orders.notify: retried with backoff,
    paced, never in the order flow's way. Unsent rows are the admin's undelivered list."""

    text = models.TextField()
    key = models.CharField(max_length=128, blank=True, db_index=True,
                           help_text="messages of one key coalesce while unsent (legs of one alert, same-code blocks)")
    priority = models.PositiveSmallIntegerField(default=1, help_text="0 first: broker rejections, in-doubt orders")
    count = models.PositiveIntegerField(default=1, help_text="events in this message")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["sent_at", "gave_up_at", "priority", "next_attempt_at"],
                                name="notification_due")]

    def __str__(self):
        return f"{'sent' if self.sent_at else 'unsent'}: {self.text[:60]}"


class WatcherLease(models.Model):
    """At most one OrderWatcher polls at a time: whoever holds an unexpired lease."""

    name = models.CharField(max_length=32, primary_key=True)
    owner = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(default=timezone.now)
    last_pass_at = models.DateTimeField(
        null=True, blank=True, help_text="end of the holder's last completed pass (written with the lease)")

    def __str__(self):
        return f"{self.name} held by {self.owner or '-'} until {self.expires_at:%H:%M:%S}"


class OrderModification(models.Model):
    """One requested change of an open order's terms, and the broker's answer. The order's
    own details never change; its working terms follow the modifications the broker took."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="modifications")
    qty = models.PositiveIntegerField(null=True, blank=True, help_text="the new total (filled and pending)")
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    trigger_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    actor = models.CharField(max_length=64)
    requested_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=16, blank=True, help_text="SENT, REFUSED, IN_DOUBT; empty while queued")
    message = models.CharField(max_length=255, blank=True, help_text="the broker's answer")
    answered_at = models.DateTimeField(null=True, blank=True)

    def requested(self) -> str:
        # 2900, not 2900.0000 as the column gives it back: the same words before and after a save
        parts = [f"{name} {value if isinstance(value, int) else format(value.normalize(), 'f')}"
                 for name, value in (("qty", self.qty), ("price", self.price), ("trigger_price", self.trigger_price))
                 if value is not None]
        return ", ".join(parts)


class BrokerRequest(models.Model):
    """A request sent to the broker in the last second (orders.broker_rate, without Redis), or
    (urgent_waiting) the mark of a cancel or exit waiting for a slot, until `at`."""

    at = models.DateTimeField(db_index=True)
    urgent_waiting = models.BooleanField(default=False)


class OrderFeedState(models.Model):
    """The broker's push feed of order updates, as its listener last recorded it (one row)."""

    name = models.CharField(max_length=32, primary_key=True)
    broker = models.CharField(max_length=32, blank=True)
    holder = models.CharField(max_length=64, blank=True, help_text="the process that listens")
    connected_since = models.DateTimeField(null=True, blank=True, help_text="empty while disconnected")
    last_message_at = models.DateTimeField(null=True, blank=True, help_text="the last order update")
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="the last sign of life")
    reconnects_today = models.PositiveIntegerField(default=0)
    reconnects_day = models.DateField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True, help_text="why it last disconnected")

    def __str__(self):
        return f"{self.broker or self.name} feed: {'connected' if self.connected_since else 'disconnected'}"


class Position(models.Model):
    """Our net position per strategy and instrument, from our own orders' fills.

    Written only by orders.lifecycle, in the transaction of the fill that changes it."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="positions")
    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=4, choices=Product.choices)
    net_qty = models.IntegerField(default=0, help_text="signed: > 0 long, < 0 short")
    avg_price = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    realized_pnl = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["strategy", "exchange", "symbol", "product"],
                                               name="one_position_per_strategy_instrument")]
        indexes = [models.Index(fields=["exchange", "symbol"], name="position_instrument")]

    def __str__(self):
        return f"{self.strategy_id} {self.exchange}:{self.symbol} {self.product} {self.net_qty:+d}"


class BrokerPosition(models.Model):
    """The broker's account-wide positions as of the watcher's last successful read."""

    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=4)
    net_qty = models.IntegerField()
    net_avg_price = models.DecimalField(max_digits=18, decimal_places=6)
    realized_pnl = models.DecimalField(max_digits=18, decimal_places=4)
    unrealized_pnl = models.DecimalField(max_digits=18, decimal_places=4)
    last_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    taken_at = models.DateTimeField()

    def __str__(self):
        return f"{self.exchange}:{self.symbol} {self.product} {self.net_qty:+d}"


class ExternalOrder(models.Model):
    """An order in the broker's book that we did not send (no command id of ours): placed by
    hand in the broker's app, say. Followed to its end from the book and the push feed, never
    sent or touched by us, outside every strategy's guard."""

    broker = models.CharField(max_length=32)
    broker_order_id = models.CharField(max_length=64, unique=True)
    client_order_id = models.CharField(max_length=64, blank=True, help_text="its remarks at the broker, if any")
    exchange = models.CharField(max_length=8, blank=True)
    symbol = models.CharField(max_length=64, blank=True)
    side = models.CharField(max_length=4, blank=True)
    qty = models.PositiveIntegerField(default=0)
    product = models.CharField(max_length=4, blank=True)
    order_type = models.CharField(max_length=8, blank=True)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    status = models.CharField(max_length=16, help_text="OPEN, COMPLETE, REJECTED, CANCELLED, EXPIRED or UNKNOWN")
    raw_status = models.CharField(max_length=32, blank=True, help_text="as the broker spells it")
    reason = models.CharField(max_length=255, blank=True)
    filled_qty = models.PositiveIntegerField(default=0)
    avg_price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-first_seen_at", "-id"]

    def __str__(self):
        return f"external {self.broker_order_id} {self.side} {self.qty} {self.symbol} [{self.status}]"

    @property
    def terminal(self) -> bool:
        return self.status not in ("OPEN", "UNKNOWN")


class Reconciliation(models.Model):
    """One comparison of the broker's positions with ours plus the external orders'."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    instruments = models.PositiveIntegerField(default=0)
    differences = models.PositiveIntegerField(default=0)
    external_orders = models.PositiveIntegerField(default=0, help_text="the day's external orders known then")

    class Meta:
        ordering = ["-at"]


class PositionDifference(models.Model):
    """An instrument whose net quantity at the broker differs from ours plus the external
    orders'. Told once, when seen on two reconciliations in a row; resolved when they agree."""

    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=4)
    broker_qty = models.IntegerField()
    ours_qty = models.IntegerField()
    external_qty = models.IntegerField()
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True, help_text="seen again: logged and told")
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-first_seen_at"]
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol", "product"],
                                               condition=models.Q(resolved_at__isnull=True),
                                               name="one_open_difference_per_instrument")]

    def __str__(self):
        return f"{self.exchange}:{self.symbol} {self.product}: broker {self.broker_qty:+d}, ours {self.ours_qty:+d}, " \
               f"external {self.external_qty:+d}"

    @property
    def difference(self) -> int:
        return self.broker_qty - self.ours_qty - self.external_qty


class BrokerFunds(models.Model):
    """The account's funds as of the watcher's last read of the broker's Limits (one row)."""

    broker = models.CharField(max_length=32, primary_key=True)
    cash = models.DecimalField(max_digits=18, decimal_places=2)
    payin = models.DecimalField(max_digits=18, decimal_places=2, help_text="added today")
    margin_used = models.DecimalField(max_digits=18, decimal_places=2)
    collateral = models.DecimalField(max_digits=18, decimal_places=2, help_text="pledged holdings (margin only)")
    available_cash = models.DecimalField(max_digits=18, decimal_places=2,
                                         help_text="cash + pay-in − margin used: what a CNC buy can spend")
    taken_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "broker funds"

    def __str__(self):
        return f"{self.broker} funds: available {self.available_cash}"


class SquareOffTrigger(models.TextChoices):
    TIME = "TIME", "the strategy's squareoff_time"
    MTM = "MTM", "an MTM stop loss or target"
    MANUAL = "MANUAL", "close requested (API, admin, command)"


class SquareOff(models.Model):
    """One position of a strategy to make flat: its open orders are cancelled, then its EXIT
    registered once the instrument has no live order (or SQUAREOFF_CANCEL_WAIT_S later), through
    the one intake, under `alert_id` (so it is registered once however often it is processed)."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="squareoffs")
    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=4, choices=Product.choices)
    trigger = models.CharField(max_length=8, choices=SquareOffTrigger.choices)
    actor = models.CharField(max_length=64)
    alert_id = models.CharField(max_length=64)
    requested_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True, help_text="empty: waiting for the cancels")
    exit_order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=255, blank=True, help_text="what became of it")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["strategy", "alert_id"], name="one_squareoff_per_alert_id")]
        indexes = [models.Index(fields=["done_at", "requested_at"], name="squareoff_waiting")]

    def __str__(self):
        return f"square-off {self.exchange}:{self.symbol} {self.product} of {self.strategy_id} ({self.trigger})"


class SquareOffDay(models.Model):
    """A strategy's automatic square-off of one trading day, by time or by MTM: at most one each."""

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="squareoff_days")
    day = models.DateField(help_text="the IST trading day")
    trigger = models.CharField(max_length=8, choices=SquareOffTrigger.choices)
    at = models.DateTimeField(default=timezone.now)
    detail = models.CharField(max_length=255, blank=True, help_text="the day P&L that triggered an MTM exit")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["strategy", "day", "trigger"], name="one_squareoff_a_day")]


class FollowUpStatus(models.TextChoices):
    WAITING = "WAITING", "waiting for the exit to execute"
    REGISTERED = "REGISTERED", "its entry was registered"
    VOID = "VOID", "the exit did not execute in full: no entry"
    CANCELLED = "CANCELLED", "cancelled by a user"


class TargetFollowUp(models.Model):
    """The second half of a flip to a target position (long 10 -> short 5): the ENTRY that
    follows once the EXIT registered with it is EXECUTED, as its own alert."""

    alert = models.ForeignKey(Alert, on_delete=models.PROTECT, related_name="follow_ups",
                              help_text="the alert that asked for the target")
    leg = models.PositiveSmallIntegerField()
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="follow_ups")
    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)
    product = models.CharField(max_length=4, choices=Product.choices)
    side = models.CharField(max_length=4, choices=Side.choices)
    qty = models.PositiveIntegerField()
    order_type = models.CharField(max_length=8, choices=OrderType.choices)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    after = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="follow_ups",
                              help_text="the exit it waits for")
    status = models.CharField(max_length=12, choices=FollowUpStatus.choices, default=FollowUpStatus.WAITING)
    entry = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status"], name="followup_status")]

    def __str__(self):
        return f"then ENTRY {self.side} {self.qty} {self.symbol} after {self.after_id} ({self.status})"
