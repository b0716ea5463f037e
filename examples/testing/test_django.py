"""Testing a Django project: ``override_settings(CFACCESS_SETTINGS=...)`` with the stand-in issuer's settings.

Done right, that is: Django's test ``Client`` builds its middleware (which reads ``CFACCESS_SETTINGS``) on its
first request, so make the client inside the ``with override_settings(...)`` block. Users are Django's own
(``auth.User``); the project is ``examples/django_app.py``, configured once per process as Django requires.

It also shows what a machine gets from ``@login_required`` (Django's 302 to the login page: a service token or
API key is no Django user) and the idiom that answers machines with cfaccess_mw's JSON instead:
``@require("user")`` from ``cfaccess_mw.django``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from cfaccess_mw.django import require
from cfaccess_mw.testing import LocalIssuer
from examples import django_app


@login_required
def django_login_required(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"username": request.user.get_username()})


@require("user")  # users only, like @login_required, but a machine or no caller gets the JSON 403 / 401
def users_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"username": request.user.get_username()})


urlpatterns = [path("login-required", django_login_required), path("users-only", users_only)]


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The example project on a fresh SQLite file, migrated, with alice (staff) and bob as its users."""
    django_app.configure(str(Path(tmp_path_factory.mktemp("django")) / "db.sqlite3"))
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    users = get_user_model()._default_manager  # typed as a UserManager (``objects`` is not, to the stubs)
    users.create_user("alice", "alice@example.com", is_staff=True)
    users.create_user("bob", "bob@example.com")


def test_a_user_is_request_user(django_project: None, cfaccess_issuer: LocalIssuer) -> None:
    with override_settings(CFACCESS_SETTINGS=cfaccess_issuer.settings(public_paths=("/healthz",))):
        client = Client()  # made inside the override: its middleware reads CFACCESS_SETTINGS on the first request
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        mallory = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("mallory@example.com"))

        assert client.get("/api/me", headers=alice).json()["username"] == "alice"
        assert client.get("/api/me", headers=mallory).json()["error"]["reason"] == "unknown_user"
        assert client.get("/api/me").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_a_machine_on_login_required_gets_a_redirect_and_on_require_user_our_json(
    django_project: None, cfaccess_issuer: LocalIssuer
) -> None:
    settings = cfaccess_issuer.settings(service_tokens={"ci": "ci.access"})
    with override_settings(CFACCESS_SETTINGS=settings, ROOT_URLCONF=__name__):
        client = Client()
        robot = cfaccess_issuer.request_headers(cfaccess_issuer.service_token("ci.access"))
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))

        redirected = client.get("/login-required", headers=robot)
        refused = client.get("/users-only", headers=robot)
        admitted = client.get("/users-only", headers=alice)

    assert redirected.status_code == 302  # Django's: the service token is no Django user
    assert (refused.status_code, refused.json()["error"]["reason"]) == (403, "insufficient_scope")
    assert admitted.json() == {"username": "alice"}
