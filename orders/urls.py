from django.urls import path

from . import views

urlpatterns = [
    path("webhook/", views.WebhookView.as_view(), name="webhook"),
    path("orders/", views.OrderListView.as_view(), name="order-list"),
    path("orders/<str:command_id>/", views.OrderDetailView.as_view(), name="order-detail"),
]
