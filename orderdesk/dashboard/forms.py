"""The manual order form: its fields (the labels are a contract), the body it makes for the
intake's own validation (orders.validation, the webhook's rules), and the errors put back next
to their fields."""

import secrets
from dataclasses import dataclass, field

from orders.models import EXCHANGE_CODES, ExecutionType, OrderType, Product, Side

LEG_FIELDS = ("symbol", "side", "qty", "lots", "order_type", "price", "trigger_price", "product")
LABELS = {"strategy": "Strategy", "execution_type": "Execution type", "exchange": "Exchange", "symbol": "Symbol",
          "side": "Side", "qty": "Quantity", "lots": "Lots", "order_type": "Order type", "price": "Price",
          "trigger_price": "Trigger price", "product": "Product"}
CHOICES = {"execution_type": ExecutionType.values, "exchange": list(EXCHANGE_CODES), "side": Side.values,
           "order_type": OrderType.values, "product": Product.values}
MAX_LEGS = 20


def new_alert_id() -> str:
    """One per rendered form: a double click or a resubmitted form registers the same orders."""
    return f"dash-{secrets.token_hex(10)}"


@dataclass
class LegForm:
    index: int
    values: dict
    errors: dict = field(default_factory=dict)


@dataclass
class OrderForm:
    values: dict
    legs: list[LegForm]
    errors: dict = field(default_factory=dict)  # alert-level field -> messages (non_field_errors too)

    @classmethod
    def blank(cls, strategy: str = "") -> "OrderForm":
        return cls({"strategy": strategy, "execution_type": ExecutionType.ENTRY, "exchange": "NSE",
                    "alert_id": new_alert_id()},
                   [LegForm(0, {"side": Side.BUY, "order_type": OrderType.MARKET, "product": Product.MIS})])

    @classmethod
    def from_post(cls, post) -> "OrderForm":
        values = {key: post.get(key, "").strip() for key in ("strategy", "execution_type", "exchange", "alert_id")}
        indexes = sorted({int(key.split("-")[1]) for key in post if key.startswith("leg-")
                          and key.split("-")[1].isdigit()})[:MAX_LEGS]
        legs = [LegForm(n, {name: post.get(f"leg-{i}-{name}", "").strip() for name in LEG_FIELDS})
                for n, i in enumerate(indexes)]
        return cls(values, legs or [LegForm(0, {})])

    def body(self) -> dict:
        """The alert the form stands for, as the webhook would receive it (empty fields absent)."""
        body = {key: value for key, value in self.values.items() if value}
        body["legs"] = [{name: value for name, value in leg.values.items() if value} for leg in self.legs]
        return body

    def take_errors(self, errors: dict) -> None:
        """orders.validation's errors, next to their fields."""
        for key, messages in errors.items():
            if key == "legs" and isinstance(messages, list) and messages and isinstance(messages[0], dict):
                for leg, leg_errors in zip(self.legs, messages, strict=False):
                    leg.errors = leg_errors
            else:
                self.errors[key] = messages
