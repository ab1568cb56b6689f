"""django-axes' answer to a login refused for a locked-out username + IP pair: JSON with
Retry-After for the API, a plain page for the admin and the dashboard."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse


def lockout_response(request, original_response, credentials):
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = (f"Too many failed logins for this username from this address: locked for {minutes} minutes "
               "from the last failure.")
    retry_after = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = retry_after
    return response
