"""GET /api/health/: the overall status for anyone, the details for an authenticated user.

503 only when the database is unreachable: a load balancer that dropped the web tier for a
stalled watcher or a missing broker session would also stop alerts being recorded.
"""

import logging

from django.db import DatabaseError
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .health import DOWN, health_report
from .schema import health_schema
from .views import AlwaysJSON

log = logging.getLogger("orderdesk.health")


class HealthView(APIView):
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AlwaysJSON
    throttle_classes: list = []  # a throttle would authenticate (and may read the database)
    plain_http_allowed = True  # load balancers probe the web tier directly

    def perform_authentication(self, request):
        pass  # deferred: the database is checked first (token and session auth read it)

    @health_schema
    def get(self, request):
        report = health_report()
        if report.status == DOWN:
            log.warning("health: database unreachable (%s)", report.details["database"]["error"])
            return Response({"status": DOWN}, status=503)
        body = report.as_dict() if _authenticated(request) else {"status": report.status}
        return Response(body, status=200)


def _authenticated(request) -> bool:
    """Whether the request carries a valid token or session. A database that fails now, after
    the report read it, makes the caller anonymous rather than the answer an error. Wrong
    credentials still answer 401, as everywhere in the API."""
    try:
        user = request.user
    except DatabaseError:
        log.warning("health: authentication could not read the database; answering as to an anonymous caller")
        return False
    return bool(user and user.is_authenticated)
