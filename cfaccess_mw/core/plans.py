"""Fetch plans: what a key source asks its I/O driver for, with no I/O of its own (h11's shape).

A key source decides *what* to fetch and what an answer means as a generator, a
:data:`Plan`: it yields a :class:`Get` (one GET; it is sent the :class:`Fetched`
answer, or has the error it ended in thrown in, usually a
:class:`JWKSFetchError`) or a :class:`Wait` (another
caller's fetch is under way; it is sent ``None`` when that lands or the wait is
over), and returns its result. :func:`cfaccess_mw.fetching.drive_async` and
:func:`~cfaccess_mw.fetching.drive_sync` answer, the one with ``httpx.AsyncClient``
in an event loop, the other with ``httpx.Client`` in a thread; the plan is the same
code for both. A driver cut short (a cancelled task) closes its plan, so the plan's
``finally`` clauses run at once (a flight is landed, never left held).
"""

from __future__ import annotations

from collections.abc import Generator
from concurrent.futures import Future
from typing import Generic, NamedTuple, TypeVar


class JWKSFetchError(Exception):
    """A fetch of the certs endpoint failed; the message says how (no secrets involved).

    ``unusable`` is set when the document was a key set whose every key was unusable:
    kid -> why, so that tokens naming those kids are told so (401) rather than to retry.
    """

    def __init__(self, message: str, unusable: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.unusable = unusable  # None: no key set was read (the network, the status, the body failed)


class Fetched(NamedTuple):
    """One GET's answer: the status, the body, and the seconds a cache held it (``Age``; 0 when fresh)."""

    status: int
    body: bytes
    age: float


class Get(NamedTuple):
    """One GET a fetch plan asks for."""

    url: str
    max_bytes: int
    accept: str = "application/json"


class Wait(NamedTuple):
    """Wait until another caller's fetch lands, or ``seconds`` pass (the plan then looks again)."""

    flight: Future[None]
    seconds: float


T = TypeVar("T")
#: A fetch plan returning a ``T``: yields what it needs, is sent each answer, returns what they mean.
Plan = Generator[Get | Wait, Fetched | None, T]


def fetch(url: str, max_bytes: int, accept: str = "application/json") -> Plan[Fetched]:
    """One GET, inside a plan (``answer = yield from fetch(...)``): its answer; a failed GET raises here."""
    answer = yield Get(url, max_bytes, accept)
    assert answer is not None, "a driver answers a GET with what it fetched"
    return answer


class Step(Generic[T]):
    """Where a plan stands: what it needs next (``need``), or, once ``need`` is ``None``, its ``result``."""

    __slots__ = ("need", "plan", "result")

    def __init__(self, plan: Plan[T]) -> None:
        self.plan = plan
        self.result: T
        self.need: Get | Wait | None = None
        self.send(None)

    def send(self, answer: Fetched | None, error: Exception | None = None) -> None:
        """Hand the plan its answer (or the error the GET ended in) and see what it needs next."""
        try:
            # The first send is None, as a generator needs; an error is raised in the plan where it yielded the GET.
            self.need = self.plan.throw(error) if error is not None else self.plan.send(answer)
        except StopIteration as done:
            self.need, self.result = None, done.value
