"""Answering the forms of the Django providers (``tests.support.django_op``) like a person would.

Both django-oauth-toolkit and django-oidc-provider show plain Django forms, told apart by what they
hold, not by where they are (each mounts its pages elsewhere):

* the login page (Django's ``LoginView``): a form with a password field; it is answered with
  the user name and password, its hidden fields (``csrfmiddlewaretoken``, ``next``) kept;
* a consent page or a logout confirmation: a form whose submit button is named ``allow``
  (django-oauth-toolkit's "Authorize" and "Logout", django-oidc-provider's "Authorize" and
  "Yes"); it is submitted with that button, its hidden fields kept.

Only forms carrying Django's ``csrfmiddlewaretoken`` count, so pages of other providers pass
through untouched. ``tests.support.oidc_provider``'s walkers call ``answer_django_form`` for every
page they do not know themselves.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

__all__ = ["answer_django_form"]

_CSRF_FIELD = "csrfmiddlewaretoken"


class _Form:
    def __init__(self, action: str, method: str) -> None:
        self.action = action
        self.method = method
        self.hidden: dict[str, str] = {}
        self.has_password = False
        #: The value of the submit button named ``allow``, when the form has one.
        self.allow: str | None = None


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._current = _Form(attributes.get("action", ""), attributes.get("method", "get").lower())
            self.forms.append(self._current)
            return
        form = self._current
        if form is None or tag not in ("input", "button"):
            return
        kind = attributes.get("type", "text" if tag == "input" else "submit").lower()
        name = attributes.get("name")
        if kind == "hidden" and name:
            form.hidden[name] = attributes.get("value", "")
        elif kind == "password":
            form.has_password = True
        elif kind == "submit" and name == "allow":
            form.allow = attributes.get("value", "") or "allow"

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def answer_django_form(
    response: httpx.Response, username: str | None, password: str | None
) -> tuple[str, str, dict[str, str]] | None:
    """``(method, url, data)`` that answers this page's Django form, or ``None`` when it has none.

    A login form is answered only when ``username`` is given (a logout walk must not sign anyone in).
    """
    if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/html"):
        return None
    if _CSRF_FIELD not in response.text:
        return None
    parser = _Parser()
    parser.feed(response.text)
    parser.close()
    for form in parser.forms:
        if form.method != "post" or _CSRF_FIELD not in form.hidden:
            continue
        # An empty action posts back to the page itself, query string included.
        action = urljoin(str(response.url), form.action) if form.action else str(response.url)
        if form.has_password:
            if username is None:
                return None
            return "POST", action, {**form.hidden, "username": username, "password": password or ""}
        if form.allow is not None:
            return "POST", action, {**form.hidden, "allow": form.allow}
    return None
