from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from orders.models import Strategy


class Mode(models.TextChoices):
    ACTIVE = "ACTIVE", "active: trading as usual"
    REDUCING = "REDUCING", "reducing: exits only"
    HALTED = "HALTED", "halted: nothing new reaches the broker"


class KillSwitch(models.Model):
    """One global switch (strategy empty) and at most one per strategy; the stricter wins."""

    strategy = models.OneToOneField(Strategy, null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="kill_switch", help_text="empty: the global switch")
    is_global = models.BooleanField(default=False, editable=False)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ACTIVE)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_global"], condition=models.Q(is_global=True),
                                    name="one_global_kill_switch"),
            models.CheckConstraint(condition=models.Q(is_global=True, strategy__isnull=True)
                                   | models.Q(is_global=False, strategy__isnull=False),
                                   name="kill_switch_scope"),
        ]
        verbose_name_plural = "kill switches"

    def __str__(self):
        return f"{self.strategy.name if self.strategy_id else 'global'}: {self.mode}"


class KillSwitchChange(models.Model):
    """Who changed which switch, when, from what to what."""

    strategy = models.ForeignKey(Strategy, null=True, blank=True, on_delete=models.CASCADE)
    from_mode = models.CharField(max_length=8, choices=Mode.choices)
    to_mode = models.CharField(max_length=8, choices=Mode.choices)
    actor = models.CharField(max_length=64)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.strategy or 'global'} {self.from_mode}->{self.to_mode} by {self.actor}"


class GuardLock(models.Model):
    """A row per instrument, locked by every intake that checks orders on it (on PostgreSQL,
    created and locked in one INSERT … ON CONFLICT, see risk.guard.lock_instruments), so two
    alerts for one instrument are checked one after the other."""

    exchange = models.CharField(max_length=8)
    symbol = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="one_guard_lock_per_instrument")]

    def __str__(self):
        return f"{self.exchange}:{self.symbol}"


class RiskLimits(models.Model):
    """A strategy's risk limits, or the whole account's (strategy empty). Empty fields: no
    limit. Loss limits are positive rupee amounts: blocked when the P&L is at or below −N."""

    strategy = models.OneToOneField(Strategy, null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="risk_limits", help_text="empty: the whole account")
    is_account = models.BooleanField(default=False, editable=False)
    daily_loss = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True,
                                     help_text="₹: no new ENTRY once today's P&L is at or below −N (DAILY_LOSS_LIMIT)")
    max_loss = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True,
                                   help_text="₹: entries locked until reset once the P&L since max_loss_since is at or "
                                             "below −N (MAX_LOSS_LOCK)")
    max_loss_since = models.DateTimeField(null=True, blank=True,
                                          help_text="the P&L for max_loss counts from here (set with it, and at reset)")
    cooldown_min = models.PositiveIntegerField(null=True, blank=True,
                                               help_text="minutes without a new ENTRY after losing exits (COOLDOWN)")
    cooldown_after_losses = models.PositiveIntegerField(default=1, help_text="losing exits in a row that start it")
    max_qty = models.PositiveIntegerField(null=True, blank=True, help_text="per order (QTY_LIMIT)")
    max_notional = models.DecimalField(max_digits=16, decimal_places=2, null=True, blank=True,
                                       help_text="₹ per order: qty × price (NOTIONAL_LIMIT, PRICE_UNKNOWN)")
    max_orders_per_min = models.PositiveIntegerField(null=True, blank=True,
                                                     help_text="orders not blocked at intake in the last 60 s "
                                                               "(ORDER_RATE_LIMIT)")
    max_positions = models.PositiveIntegerField(null=True, blank=True, help_text="open positions (MAX_POSITIONS)")
    price_band_pct = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True,
                                         help_text="% a LIMIT/SL price may be from the latest known price (PRICE_BAND)")
    mtm_stop_loss = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="₹: day P&L at -N squares the strategy off and locks its entries for the day (MTM_EXIT_DONE)")
    mtm_target = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="₹: day P&L at +N squares the strategy off and locks its entries for the day (MTM_EXIT_DONE)")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_account"], condition=models.Q(is_account=True),
                                    name="one_account_risk_limits"),
            models.CheckConstraint(condition=models.Q(is_account=True, strategy__isnull=True)
                                   | models.Q(is_account=False, strategy__isnull=False),
                                   name="risk_limits_scope"),
        ]
        verbose_name_plural = "risk limits"

    LIMIT_FIELDS = ("daily_loss", "max_loss", "cooldown_min", "max_qty", "max_notional", "max_orders_per_min",
                    "max_positions", "price_band_pct", "mtm_stop_loss", "mtm_target")

    def __str__(self):
        return f"limits of {self.strategy.name if self.strategy_id else 'the account'}"

    def clean(self):
        if self.is_account and (self.mtm_stop_loss is not None or self.mtm_target is not None):
            raise ValidationError("MTM exits are per strategy: set mtm_stop_loss and mtm_target on a strategy's limits")

    def configured(self) -> dict:
        return {name: getattr(self, name) for name in self.LIMIT_FIELDS if getattr(self, name) is not None}


class RiskLock(models.Model):
    """A lock on new entries that stays until an admin resets it (MAX_LOSS_LOCK)."""

    limits = models.ForeignKey(RiskLimits, on_delete=models.CASCADE, related_name="locks",
                               help_text="the strategy's (or the account's) limits that locked")
    code = models.CharField(max_length=32, default="MAX_LOSS_LOCK")
    tag = models.CharField(max_length=255)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    reset_at = models.DateTimeField(null=True, blank=True)
    reset_by = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [models.Index(fields=["limits", "reset_at"], name="risk_lock_active")]

    def __str__(self):
        return f"{self.limits} {self.code} {'reset' if self.reset_at else 'active'}"


class MarketHoliday(models.Model):
    """A day an exchange is closed (empty exchange: all of them): MARKET_CLOSED."""

    date = models.DateField()
    exchange = models.CharField(max_length=8, blank=True, help_text="empty: every exchange")
    description = models.CharField(max_length=128, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["date", "exchange"], name="one_holiday_per_exchange_day")]
        ordering = ["date"]

    def __str__(self):
        return f"{self.date} {self.exchange or 'all'} {self.description}"


class OrderRateBucket(models.Model):
    """Orders of a strategy not blocked at intake, per whole second, kept while an order rate
    limit (the strategy's or the account's) is set: ORDER_RATE_LIMIT's count of the last 60 s
    then sums at most 60 rows, however many orders the strategy sends."""

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="+")
    second = models.BigIntegerField(help_text="Unix time, whole seconds")
    orders = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["strategy", "second"], name="one_rate_bucket_per_second")]
        indexes = [models.Index(fields=["second"], name="rate_bucket_second")]

    def __str__(self):
        return f"{self.strategy_id}@{self.second}: {self.orders}"
