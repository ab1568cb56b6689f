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
