"""The default user lookup (``CFACCESS_USER_LOOKUP``): the user model's row for the token's email, found
case-insensitively, refused when the email matches more than one row; with the sync twin WSGI servers call."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, MultipleObjectsReturned

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


#: How many rows an email may match case-insensitively before the lookup refuses to choose (see below).
MAX_EMAIL_MATCHES = 10


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _user_query(email: str) -> tuple[Any, str]:
    """The queryset of candidate users for ``email``, and the email field's name."""
    model = get_user_model()
    field = model.get_email_field_name()
    query: dict[str, object] = {f"{field}__iexact": email}
    if _has_field(model, "is_active"):
        query["is_active"] = True
    return model._default_manager.filter(**query)[:MAX_EMAIL_MATCHES], field


def _the_one(candidates: list[Any], field: str, email: str) -> AbstractBaseUser | None:
    matches = [user for user in candidates if str(getattr(user, field) or "").translate(_ASCII_LOWER) == email]
    if len(matches) > 1:
        raise MultipleObjectsReturned(f"{len(matches)} users share one email")
    return matches[0] if matches else None


async def user_model_lookup(email: str) -> AbstractBaseUser | None:
    """The active user of ``AUTH_USER_MODEL`` whose email is ``email``, or ``None``; never creates one.

    Async (the ORM's async API), so it runs on the event loop without a thread hop;
    under WSGI (``runserver``, gunicorn) its ``sync`` twin runs the same query with the
    sync ORM in the worker thread. The email field is the model's ``EMAIL_FIELD``. The
    database is asked case-insensitively (``iexact``), and the answer is then held to the
    ASCII-only case folding the token's email went through: PostgreSQL's ``UPPER()``
    folds Unicode too, which would let ``al\u0131ce@`` (dotless i) find ``alice@``. Two
    users with the same email raise ``MultipleObjectsReturned`` (a 503
    ``user_lookup_failed``, logged) rather than picking one.
    """
    candidates, field = _user_query(email)
    return _the_one([user async for user in candidates], field, email)


def _user_model_lookup_sync(email: str) -> AbstractBaseUser | None:
    candidates, field = _user_query(email)
    return _the_one(list(candidates), field, email)


user_model_lookup.sync = _user_model_lookup_sync  # type: ignore[attr-defined]  # the sync path's twin


@functools.lru_cache(maxsize=16)
def _has_field(model: type[Any], name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True
