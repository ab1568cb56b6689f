from django.contrib.admin.apps import AdminConfig


class DeskAdminConfig(AdminConfig):
    default_site = "orderdesk.admin_site.DeskAdminSite"
