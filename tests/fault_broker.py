"""A broker for the fault tests: the paper broker with switches, selected in a child process with
ORDERDESK_BROKER=tests.fault_broker.FaultBroker and set by its environment (a process that is
going to be killed cannot be told anything later):

    ORDERDESK_FAULT_PLACE=hang_after_booking   the order is booked at the paper broker, then the
                                               call never returns (kill the worker there)
    ORDERDESK_FAULT_PLACE=hang_before_booking  the call never reaches the book
    ORDERDESK_FAULT_PLACE=raise                a connection error after booking
    ORDERDESK_FAULT_PLACE=garbage              booked, then an answer that is no answer
    ORDERDESK_FAULT_PLACE=slow                 booked and answered after ORDERDESK_FAULT_SLEEP_S
"""

import os
import threading
import time

from brokers.base import PlaceRequest, PlaceResult
from brokers.paper import PaperBroker

FOREVER = threading.Event()


class FaultBroker(PaperBroker):
    def place(self, request: PlaceRequest) -> PlaceResult:
        fault = os.environ.get("ORDERDESK_FAULT_PLACE", "")
        if fault == "hang_before_booking":
            FOREVER.wait()
        if fault == "slow":
            time.sleep(float(os.environ.get("ORDERDESK_FAULT_SLEEP_S", "5")))
        result = super().place(request)
        if fault == "hang_after_booking":
            FOREVER.wait()
        if fault == "raise":
            raise ConnectionError("connection reset by peer (fault broker)")
        if fault == "garbage":
            return "<html>502 Bad Gateway</html>"  # type: ignore[return-value]
        return result
