"""The one hook for what happened: every lifecycle transition (and fill or broker-field change
recorded as an OrderEvent), and every kill-switch change, risk lock and broker-session
change, sent as a Django signal from transaction.on_commit. Subscribers (notifications)
never hear of a transaction that rolled back."""

from django.db import transaction
from django.dispatch import Signal, receiver

from brokers.signals import session_changed

# sender: the Order class; order: the order as it now is; event: its new OrderEvent row
order_event = Signal()
# sender: the module that made the change; kind: "KILL_SWITCH" | "RISK_LOCK" | "BROKER_SESSION" |
# "SQUARE_OFF"; params: a dict
desk_event = Signal()


def on_commit(signal: Signal, sender, **kwargs) -> None:
    """Send `signal` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: signal.send(sender=sender, **kwargs), robust=True)


@receiver(session_changed)
def _relay_session_change(sender, change, broker, user, reason, **kwargs):
    # brokers sends it on commit already: relayed as it arrives.
    desk_event.send(sender=sender, kind="BROKER_SESSION",
                    params={"change": change, "broker": broker, "user": user, "reason": reason})
