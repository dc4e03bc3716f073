"""URL routes: the admin, the API under /api/, the OpenAI-compatible gateway under /v1/, and the dashboard."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from sparkcontrol import service_pages, views
from sparkcontrol.api import api
from sparkcontrol.metrics import metrics_view

admin.site.site_header = "Spark Control"
admin.site.site_title = "Spark Control"
admin.site.site_url = "/"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("swaps/<uuid:swap_id>/", views.swap_detail, name="swap-detail"),
    path("services/<slug:key>/", service_pages.service_detail, name="service-detail"),
    path("login/", views.DashboardLoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(next_page="login"), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", include("gateway.urls")),
    path("metrics", metrics_view, name="metrics"),
    # Pages name their icon; browsers still ask for /favicon.ico on JSON pages and the API docs.
    path("favicon.ico", RedirectView.as_view(url=static("dashboard/favicon.svg"), permanent=True)),
]

handler404 = "sparkcontrol.errors.not_found"
handler500 = "sparkcontrol.errors.server_error"
