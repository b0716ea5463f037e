"""A Django project in one file behind Cloudflare Access, its users Django's own (``auth.User`` in SQLite).

Unlike the other examples, the users are not in ``examples/userdb.py``: a Django
app's users are its user model, and ``cfaccess_mw.django.user_model_lookup`` finds
them there. ``EXAMPLE_DB`` names the SQLite file (default ``users.sqlite3``);
``CFACCESS_*`` come from the environment::

    python -m examples.django_app migrate
    python -m examples.django_app shell -c "from django.contrib.auth.models import User; \\
        User.objects.create_user('alice', 'alice@example.com', is_staff=True, is_superuser=True)"
    uvicorn examples.django_app:create_app --factory --lifespan off      # ASGI
    python -m examples.django_app runserver                              # WSGI, for development
    gunicorn -k gthread --threads 8 'examples.django_app:create_wsgi_app()'   # WSGI, threads

``--lifespan off`` because Django answers no lifespan; the keys are fetched when
``create_app`` (or ``create_wsgi_app``) builds Django's handler. The same middleware
serves both: on the server's event loop under ASGI, in the worker threads under WSGI. Views read the caller Django's way
(``request.user``, ``@login_required``, ``@permission_required``, the admin), and
``request.principal`` for the machines that are not users.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import django
from django.conf import settings as django_settings
from django.contrib.auth.decorators import login_required, permission_required
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path

from cfaccess_mw import Principal, Settings
from cfaccess_mw.django import AccessRequest, require

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "cfaccess_mw.django.CloudflareAccessMiddleware",  # right after AuthenticationMiddleware, which it overrides
    "django.contrib.messages.middleware.MessageMiddleware",
]


def roles(principal: Principal) -> list[str]:
    """Scopes for ``request.principal_scopes``: staff users get ``staff`` (no database query: it runs in the loop)."""
    return ["staff"] if principal.kind == "user" and principal.user.is_staff else []


def configure(db_path: str | None = None, cfaccess: Settings | None = None, **overrides: Any) -> None:
    """Configure Django for this project (once per process: Django's settings are global) and set it up."""
    if django_settings.configured:
        return
    values: dict[str, Any] = dict(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(32),
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
        ],
        MIDDLEWARE=MIDDLEWARE,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"),
            }
        },
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        STATIC_URL="static/",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        CFACCESS_SETTINGS=cfaccess,  # None: the CFACCESS_* environment variables
        CFACCESS_EXTRA_SCOPES=roles,
    )
    django_settings.configure(**{**values, **overrides})
    django.setup()


def create_app(settings: Settings | None = None, db_path: str | None = None) -> ASGIHandler:
    """The ASGI application; building it fetches the keys (Django has no lifespan to do it at)."""
    configure(db_path, settings)
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def create_wsgi_app(settings: Settings | None = None, db_path: str | None = None) -> WSGIHandler:
    """The WSGI application (gunicorn, uWSGI, mod_wsgi); ``runserver`` builds the same one itself."""
    configure(db_path, settings)
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# --- views ------------------------------------------------------------------------------------


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@login_required
async def me(request: AccessRequest) -> JsonResponse:
    user = await request.auser()
    assert request.principal is not None
    return JsonResponse(
        {
            "kind": request.principal.kind,
            "display_name": request.principal.display_name,
            "username": user.get_username(),
            "scopes": request.principal_scopes,
        }
    )


@permission_required("auth.view_user", raise_exception=True)
def users(request: HttpRequest) -> JsonResponse:
    """Django's permissions, checked against the verified user (sync view: the permission query is sync)."""
    from django.contrib.auth import get_user_model

    return JsonResponse({"users": sorted(get_user_model().objects.values_list("email", flat=True))})


@require("service", "api_key")
async def machines(request: AccessRequest) -> JsonResponse:
    """For callers that are not users: ``request.user`` is ``AnonymousUser``; ``request.principal`` says who."""
    assert request.principal is not None
    return JsonResponse({"who": request.principal.display_name, "user": str(request.user)})


def __getattr__(name: str) -> Any:
    """``urlpatterns``, built when Django asks (the admin's URLs need the app registry, ready only after setup)."""
    if name != "urlpatterns":
        raise AttributeError(name)
    from django.contrib import admin

    return [
        path("healthz", healthz),
        path("api/me", me),
        path("api/users", users),
        path("api/machines", machines),
        path("admin/", admin.site.urls),
    ]


if __name__ == "__main__":
    configure()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
