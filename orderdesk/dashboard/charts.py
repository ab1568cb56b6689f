"""The day's charts as inline SVG (pygal: no script, nothing fetched from elsewhere): orders per
status per 5 minutes (IST), and the realised P&L accumulated over the day."""

import pygal
from pygal.style import CleanStyle

from orders.models import Status

COLOURS = {Status.CREATED: "#6c757d", Status.SENT_TO_BROKER: "#0d6efd", Status.EXECUTED: "#198754",
           Status.FAILED: "#dc3545"}
SIZE = {"height": 220, "width": 720, "x_label_rotation": 45, "disable_xml_declaration": True, "js": [],
        "show_minor_x_labels": False, "legend_at_bottom": True, "truncate_legend": -1}


def day_charts(buckets, realized) -> str:
    """`buckets`: [(HH:MM, Counter of statuses)]; `realized`: [(HH:MM, cumulative ₹)]."""
    svg = []
    if buckets:
        orders = pygal.StackedBar(style=CleanStyle(colors=tuple(COLOURS.values())), title="orders per 5 minutes",
                                  **SIZE)
        orders.x_labels = [label for label, _ in buckets]
        orders.x_labels_major = orders.x_labels[::6]
        for status in COLOURS:
            orders.add(status, [counts.get(status, 0) for _, counts in buckets])
        svg.append(orders.render(is_unicode=True))
    if realized:
        pnl = pygal.Line(style=CleanStyle(colors=("#222222",)), title="realised P&L today (₹)", show_legend=False,
                         **SIZE)
        pnl.x_labels = [label for label, _ in realized]
        pnl.x_labels_major = pnl.x_labels[::6]
        pnl.add("realised", [float(value) for _, value in realized])
        svg.append(pnl.render(is_unicode=True))
    return "".join(svg)
