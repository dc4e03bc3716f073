"""URL routes: the admin, the API under /api/, and the dashboard."""

from django.contrib import admin
from django.urls import path

from sparkcontrol.api import api
from sparkcontrol.metrics import metrics_view

admin.site.site_header = "Spark Control"
admin.site.site_title = "Spark Control"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics_view, name="metrics"),
]

handler404 = "sparkcontrol.errors.not_found"
handler500 = "sparkcontrol.errors.server_error"
