"""Orders as CSV, streamed: the API's `?format=csv` and the admin's export action share it."""

import csv

from django.http import StreamingHttpResponse
from django.utils import timezone

COLUMNS = ["command_id", "alert_id", "leg", "strategy", "source", "execution_type", "exchange", "symbol", "side",
           "qty", "order_type", "price", "trigger_price", "product", "status", "tag", "tag_family", "tag_code",
           "broker_order_id", "filled_qty", "avg_price", "created_at", "sent_at", "updated_at"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CHUNK = 2000


class _Echo:
    def write(self, value):
        return value


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return timezone.localtime(value).isoformat(timespec="milliseconds")
    text = str(value)
    # A spreadsheet runs a cell that starts like a formula: a symbol or a broker's reason
    # must never become one (CSV injection).
    return "'" + text if text.startswith(FORMULA_START) else text


def _row(order) -> list[str]:
    values = {"alert_id": order.alert.alert_id, "strategy": order.strategy.name}
    return [_cell(values[c] if c in values else getattr(order, c)) for c in COLUMNS]


def csv_response(queryset, filename: str = "orders.csv") -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(COLUMNS)
        for order in queryset.select_related("strategy", "alert").iterator(chunk_size=CHUNK):
            yield writer.writerow(_row(order))

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
