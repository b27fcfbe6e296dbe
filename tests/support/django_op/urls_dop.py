"""django-oidc-provider at /openid/ (its documented mount point), and the login page."""

from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path

urlpatterns = [
    path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
    path("accounts/login/", LoginView.as_view(), name="login"),
]
