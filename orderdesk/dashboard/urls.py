from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", auth_views.LoginView.as_view(template_name="dashboard/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("dashboard/blotter/", views.blotter, name="blotter"),
    path("dashboard/summary/", views.summary, name="summary"),
    path("dashboard/reconciliation/", views.reconciliation, name="reconciliation"),
    path("dashboard/placed/", views.legs, name="placed"),
    path("dashboard/place/", views.place_order, name="place-order"),
    path("dashboard/close/", views.close, name="close"),
    path("dashboard/kill-switch/", views.kill_switch, name="kill-switch"),
    path("dashboard/orders/<slug:command_id>/", views.order_detail, name="order"),
    path("dashboard/orders/<slug:command_id>/cancel/", views.cancel, name="cancel"),
    path("dashboard/orders/<slug:command_id>/modify/", views.modify, name="modify"),
]
