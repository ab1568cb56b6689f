"""What the broker adapters tell the rest of the desk, sent once the change is committed.
orders.events relays it as its BROKER_SESSION desk event (brokers never import orders)."""

from django.db import transaction
from django.dispatch import Signal

# sender: the adapter module; change: "invalidated" | "login_failed" | "stored"; broker, user, reason
session_changed = Signal()


def tell_on_commit(sender, **kwargs) -> None:
    transaction.on_commit(lambda: session_changed.send(sender=sender, **kwargs), robust=True)
