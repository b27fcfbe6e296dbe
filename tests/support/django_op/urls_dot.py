"""django-oauth-toolkit at /o/ (its documented mount point), the login page, and a GitHub-like
profile endpoint at /api/user for plain OAuth 2.0 clients (`dot_plain`)."""

from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path

from tests.support.django_op import dot_plain

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("api/user", dot_plain.user, name="api-user"),
]
