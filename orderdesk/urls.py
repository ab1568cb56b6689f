from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("orderdesk.dashboard.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("orders.urls")),
    path("api-auth/", include("rest_framework.urls")),
]
