from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "orderdesk blotter"
admin.site.site_title = "orderdesk"
admin.site.index_title = "Orders, alerts and the audit trail"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/orders/order/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("orders.urls")),
    path("api-auth/", include("rest_framework.urls")),
]
