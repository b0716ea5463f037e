"""A key set's bookkeeping: a pure function of its state and the clock (no I/O, no locks, no event loop).

:class:`~cfaccess_mw.keys.JWKSClient` fetches and holds a lock around every call here;
this module decides. The rules, and why:

* Keys are cached for ``cache_seconds``. When the key set is older than that, the next
  request that uses a key starts a refresh in the background and goes on with the
  cached key (:meth:`KeySetState.due`): no request waits for a routine refresh, and
  traffic that only hits the token cache still keeps the key set fresh.
* A refresh keeps the very key object of every ``kid`` whose key material did not
  change, so what was verified with it stays valid; a ``kid`` republished with other
  material gets a new object, and a verified token remembered with the old one is
  checked again (see :mod:`cfaccess_mw.tokens`).
* A token naming an unknown ``kid`` causes a refetch, but unknown kids cause at most
  one fetch per ``cooldown`` seconds, so a flood of made-up kids cannot turn the
  middleware into a load generator against the certs endpoint. Fetches for other
  reasons (start-up, the routine refresh) do not use up that allowance.
* A flood must not delay a real rotation either. No fetch can tell a made-up kid from
  a genuine new one: only the certs endpoint knows, and it may be asked once per
  cooldown. So an unknown kid is refused as unknown (401) only when a fetch made after
  its request arrived, or one it waited for, does not list it (such kids are
  remembered for the rest of the cooldown). A kid that arrives while the allowance is
  spent is *undecided*: 503 with ``Retry-After``, and it moves the next refresh forward
  to the end of the cooldown. A genuine new key is therefore accepted within one
  cooldown of its first token, however many made-up kids arrive meanwhile.
* A failed refresh keeps the last good key set (a short outage must not become refused
  logins) and is retried at most once per ``cooldown``; only with no keys at all does
  the caller get a 503. Keys no fetch confirmed for ``max_age_seconds`` are dropped,
  and then every token gets 503 until a fetch succeeds.
* Each fetch has a sequence number from when it was claimed; a fetch's conclusion is
  applied only when no later fetch's conclusion is held, so an owner that comes back
  after its flight was taken over cannot put back an older document.
* Failures are logged when the state changes, not once per request.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

from .errors import AuthUnavailable, InvalidToken, Reason
from .jwk import JWKParser, PublicKey, parse_jwks
from .plans import Fetched, JWKSFetchError

logger = logging.getLogger("cfaccess_mw.keys")

MAX_JWKS_BYTES = 1 << 20  # Cloudflare's document is about 3 KB; 1 MiB is generous.
#: How long keys stay trusted with no fetch confirming them (CFACCESS_JWKS_MAX_AGE_SECONDS): a day rides out any
#: certs outage seen so far, and bounds how long a withdrawn key works while the endpoint cannot be reached.
DEFAULT_MAX_AGE_SECONDS = 86400.0
#: Kids that a fetch made for them did not list, remembered so that they stay 401 (not "undecided", 503) for the
#: rest of the cooldown. A bound, because an attacker chooses them.
ABSENT_KIDS_REMEMBERED = 256


def human_seconds(seconds: float) -> str:
    """``2 days``, ``5 hours``, ``90 s``: an age or a bound, for the log and ``cfaccess-mw check``."""
    if not math.isfinite(seconds):
        return "ever"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}s"
    return f"{seconds:.0f} s"


def too_old(age: float, max_age_seconds: float) -> str | None:
    """Why an answer a cache held for ``age`` seconds (its ``Age``) cannot confirm keys, or ``None`` when it can."""
    if age < max_age_seconds:
        return None
    return (
        f"served from a cache {human_seconds(age)} old (its Age header), past the maximum age of "
        f"{human_seconds(max_age_seconds)} (CFACCESS_JWKS_MAX_AGE_SECONDS)"
    )


class CertsRead(NamedTuple):
    """What one certs document says: the usable keys, the problems with the rest, every kid it lists (usable or
    not), why each unusable one is, and how long a cache on the way held it (``Age``, RFC 9111 section 5.1)."""

    keys: dict[str, PublicKey]
    problems: list[str]
    listed: set[str]
    unusable: dict[str, str]
    age: float


def read_certs(answer: Fetched, max_age_seconds: float, parse: JWKParser) -> CertsRead:
    """A certs endpoint's answer to a :class:`CertsRead`; :class:`JWKSFetchError` when it is not a usable key set."""
    status, body, age = answer
    if status != 200:
        raise JWKSFetchError(f"HTTP {status}")
    old = too_old(age, max_age_seconds)
    if old is not None:
        raise JWKSFetchError(f"the key set was {old}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JWKSFetchError("response is not JSON") from None
    keys, problems, unusable = parse_jwks(document, parse)
    listed = {jwk["kid"] for jwk in document["keys"] if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str)}
    return CertsRead(keys, problems, listed, unusable, age)


class KeySetState:
    """The cached keys and every timestamp that decides when to fetch and what a miss means.

    Every method takes the time (``now``) from its caller and does no I/O; the caller
    serialises calls (:class:`~cfaccess_mw.keys.JWKSClient` holds a thread lock).
    """

    def __init__(
        self, url: str, *, cache_seconds: float, cooldown_seconds: float, timeout: float, max_age_seconds: float
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.cooldown_seconds = cooldown_seconds
        self.timeout = timeout
        self.max_age_seconds = max(max_age_seconds, cache_seconds)
        self.keys: Mapping[str, PublicKey] = {}
        self.unusable: Mapping[str, str] = {}  # kid -> why, for the kids the last key set read lists unusably
        self.fetched_at = -math.inf  # last success
        #: kid -> when a fetch last served its key, for the cached keys the document now lists only unusably (kept,
        #: see succeeded): no fetch confirms those, so they age on their own towards ``max_age_seconds``.
        self.kept_since: dict[str, float] = {}
        self.expired = False  # the keys outlived max_age_seconds unconfirmed and were dropped (said once)
        self.attempted_at = -math.inf  # end of the last attempt, success or not
        self.kid_fetch_at = -math.inf  # last fetch caused by an unknown kid (the cooldown's allowance)
        self.kid_waiting = False  # an unknown kid was left undecided since the last fetch started
        self.due_at = -math.inf  # when a request should start a background refresh (see _schedule)
        self.absent: OrderedDict[str, None] = OrderedDict()  # kids a fetch made for them did not list
        self.generation = 0  # bumped after every attempt; waiters use it to skip a second fetch
        self.last_failure: str | None = None
        self.last_problems: list[str] = []
        self.background_generation = -1  # the generation the latest background refresh fetches for
        self.kid_fetch_generation = -1  # the generation the latest fetch for an unknown kid was started from
        self.claims = 0  # fetches claimed so far: each fetch's sequence number
        self.held = 0  # the sequence number of the fetch whose conclusion is held

    def is_expired(self, now: float) -> bool:
        """Whether the keys went unconfirmed past ``max_age_seconds`` and are no longer trusted."""
        return self.expired or (bool(self.keys) and now - self.fetched_at >= self.max_age_seconds)

    def due(self, now: float) -> int:
        """A request came at or after ``due_at``: drop what is too old, and plan the background refresh that the
        caller now starts; the generation it fetches for. ``due_at`` is pushed past the longest a fetch can take,
        so requests do not start more; :meth:`not_started` undoes that when the refresh could not be started."""
        if self.keys and now - self.fetched_at >= self.max_age_seconds:
            self._expire(now)
        else:
            self._drop_kept(now)
        self.due_at = min(now + self.timeout + self.cooldown_seconds, self._expires_at())
        if self.kid_waiting:  # this is the fetch the waiting kid was promised: it uses the cooldown's allowance
            self.kid_fetch_at = now
        self.background_generation = self.generation
        return self.generation

    def not_started(self, now: float) -> None:
        """The background refresh could not start, or ended before any fetch concluded: the next request starts one."""
        self.due_at = now

    def plan(self, now: float, *, flight_busy: bool, background_running: bool) -> tuple[int, bool]:
        """``(generation, fetch)``: whether a request for an uncached kid waits for, or causes, a fetch."""
        generation = self.generation
        if flight_busy:
            return generation, True  # a fetch is under way: its answer is worth the wait
        if background_running and self.background_generation == generation:
            return generation, True  # a background fetch is about to start: run it now, or wait for it
        if self.kid_fetch_generation == generation:
            # Another request's fetch for an unknown kid is about to start (its request is between deciding and
            # claiming the flight): wait for its answer rather than take this kid for undecided.
            return generation, True
        if now >= self._next_kid_fetch_at():
            self.kid_fetch_at = now
            self.kid_fetch_generation = generation
            return generation, True
        return generation, False

    def claim(self) -> int:
        """A fetch starts (it decides every kid waiting so far); its sequence number.

        The fetch an unknown kid was promised has now started: later requests wait for it through the flight,
        not through ``kid_fetch_generation``. Were that left set, a fetch cancelled before it concluded (its
        client went away and the server cancelled the request) would leave the generation unchanged and the
        promise open, and every next made-up kid would start a fetch of its own, cooldown or not. A cancelled
        fetch spends the cooldown's allowance like any other.
        """
        self.kid_waiting = False
        self.kid_fetch_generation = -1
        self.claims += 1
        return self.claims

    def conclude(self, kid: str, generation: int, now: float) -> PublicKey:
        """After the fetch (if any): the key, or the refusal that says why not."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        unusable = self.unusable.get(kid)
        if unusable is not None:
            # The key set lists this kid, in a form that cannot verify this token: no fetch will change that.
            raise InvalidToken(
                Reason.KEY_UNUSABLE,
                "The token was signed with a key this application cannot use.",
                f"{unusable} (published at {self.url})",
            )
        if not self.keys or self.last_failure is not None:
            # No keys at all, or the endpoint is failing and so cannot say whether ``kid`` is a key Cloudflare just
            # rotated in: the request cannot be decided, which is a 503 ("try again"), not a 401.
            why = f"key id {kid!r} is not cached and" if self.keys else "no signing keys:"
            if self.expired:
                why = f"no signing keys (none confirmed for over {human_seconds(self.max_age_seconds)}):"
            raise AuthUnavailable(
                Reason.KEYS_UNAVAILABLE,
                "The signing keys for this application cannot be fetched right now; try again shortly.",
                f"{why} {self.url} is failing: {self.last_failure or 'not fetched yet'}",
                retry_after=max(1, math.ceil(self.cooldown_seconds)),
            )
        if self.generation != generation or kid in self.absent:
            # A fetch made for this request (or for an earlier one with this kid) does not list it: unknown.
            self.absent[kid] = None
            self.absent.move_to_end(kid)
            if len(self.absent) > ABSENT_KIDS_REMEMBERED:
                self.absent.popitem(last=False)
            raise InvalidToken(
                Reason.UNKNOWN_KEY,
                "The token was signed with a key this application does not know.",
                f"key id {kid!r} is not among the {len(self.keys)} keys at {self.url} ({', '.join(sorted(self.keys))})",
            )
        # Unknown kids have used this cooldown's fetch: ``kid`` may be a key Cloudflare rotated in since. Undecided
        # until the next fetch, which the first request after the cooldown starts (see _schedule).
        self.kid_waiting = True
        self._schedule()
        retry = max(1, math.ceil(self._next_kid_fetch_at() - now))
        raise AuthUnavailable(
            Reason.KEYS_UNAVAILABLE,
            "The token names a signing key this application has not fetched yet; try again shortly.",
            f"key id {kid!r} is not among the {len(self.keys)} cached keys, and unknown key ids already caused a "
            f"fetch {now - self.kid_fetch_at:.1f}s ago; the next may run in {retry}s "
            f"(refetch cooldown {self.cooldown_seconds:g}s)",
            retry_after=retry,
        )

    def _concludes(self, sequence: int, now: float) -> bool:
        """Whether the fetch numbered ``sequence`` may apply its conclusion (none from a later fetch is held)."""
        if sequence < self.held:
            logger.debug("certs endpoint %s: an older fetch ended after a newer one; its answer is dropped", self.url)
            return False
        self.held = sequence
        self.attempted_at = now
        self.generation += 1
        return True

    def succeeded(self, read: CertsRead, now: float, sequence: int) -> None:
        """A fetch read a key set: adopt it (see the module's rules)."""
        if not self._concludes(sequence, now):
            return
        keys, problems, listed, unusable, age = read
        self.unusable = unusable
        # A cached key whose kid the document still lists, but in a form we cannot use (a wrong kty, alg or use,
        # listed twice), has not been withdrawn: keep the last good copy rather than refuse its tokens.
        # Only until the maximum age, though: the document does not serve that key, so no fetch confirms it.
        self.kept_since = {
            kid: self.kept_since.get(kid, self.fetched_at) for kid in self.keys if kid in listed and kid not in keys
        }
        self._drop_kept(now)
        kept = sorted(self.kept_since)
        if kept:
            keys = {**keys, **{kid: self.keys[kid] for kid in kept}}
            problems = [*problems, f"keeping the cached copy of {', '.join(map(repr, kept))}"]
        # The same material under the same kid keeps its key object, so tokens verified with it stay cached; a kid
        # republished with other material gets the new object, and its cached tokens are verified again.
        replaced = []
        for kid, old in self.keys.items():
            new = keys.get(kid)
            if new is not None and new is not old:
                if new.public_numbers() == old.public_numbers():
                    keys[kid] = old
                else:
                    replaced.append(kid)
        added = sorted(set(keys) - set(self.keys))
        removed = sorted(set(self.keys) - set(keys))
        self.keys = keys
        self.fetched_at = now - age  # a copy a cache held for a while confirms the keys only as of then
        if self.expired:
            logger.warning("certs endpoint %s: %d signing keys confirmed again and trusted", self.url, len(keys))
        self.expired = False
        if self.last_failure is not None:
            logger.warning("certs endpoint %s recovered; %d keys", self.url, len(keys))
        self.last_failure = None
        if added or removed:
            logger.info("signing keys from %s: added %s, removed %s", self.url, added, removed)
        if replaced:
            logger.warning(
                "certs endpoint %s: key id(s) %s now carry different key material; tokens verified with the old "
                "key are checked again",
                self.url,
                sorted(replaced),
            )
        if problems != self.last_problems:  # said once, not again on every refresh that finds the same
            for problem in problems:
                logger.warning("certs endpoint %s: %s", self.url, problem)
        self.last_problems = problems
        self._schedule()

    def failed(self, why: str, unusable: dict[str, str] | None, now: float, sequence: int) -> None:
        """A fetch failed (``unusable``: it read a key set none of whose keys is usable); the cached keys stay."""
        if not self._concludes(sequence, now):
            return
        if unusable is not None:
            self.unusable = unusable
        if why != self.last_failure:
            kept = f"keeping {len(self.keys)} cached keys" if self.keys else "no keys cached: requests get 503"
            logger.warning("certs endpoint %s failed: %s; %s", self.url, why, kept)
        else:
            logger.debug("certs endpoint %s still failing: %s", self.url, why)
        self.last_failure = why
        self._schedule()

    def _next_kid_fetch_at(self) -> float:
        """When an unknown kid may next cause a fetch: a cooldown after the last such fetch and the last failure."""
        at = self.kid_fetch_at + self.cooldown_seconds
        if self.last_failure is not None:
            at = max(at, self.attempted_at + self.cooldown_seconds)
        return at

    def _schedule(self) -> None:
        """When the next request should start a background refresh.

        A lifetime after the last success; while the endpoint fails, a cooldown after
        the last attempt (but not before the lifetime ends: a failed fetch for an
        unknown kid must not make every request retry); when an unknown kid is
        waiting, as soon as the cooldown allows a fetch for it; and never after the
        keys reach their maximum age.
        """
        due = self.fetched_at + self.cache_seconds
        if self.last_failure is not None or due <= self.attempted_at:
            # Failing, or served a copy a cache held past the lifetime (Age): retry no sooner than the cooldown.
            due = max(due, self.attempted_at + self.cooldown_seconds)
        if self.kid_waiting:
            due = min(due, self._next_kid_fetch_at())
        self.due_at = min(due, self._expires_at())

    def _expires_at(self) -> float:
        """When cached keys stop being trusted unless a fetch confirms them (never, with none cached)."""
        if not self.keys:
            return math.inf
        return min(self.fetched_at, min(self.kept_since.values(), default=math.inf)) + self.max_age_seconds

    def _drop_kept(self, now: float) -> None:
        """Stop trusting the kept copies (see :meth:`succeeded`) that no fetch has served for ``max_age_seconds``;
        the document lists their kids unusably, so their tokens then get 401 key_unusable."""
        stale = [kid for kid, since in self.kept_since.items() if now - since >= self.max_age_seconds]
        if stale:
            logger.error(
                "certs endpoint %s: key id(s) %s have been listed only in an unusable form for %s (the maximum "
                "age, CFACCESS_JWKS_MAX_AGE_SECONDS); their cached copies are no longer trusted",
                self.url,
                stale,
                human_seconds(self.max_age_seconds),
            )
            self.keys = {kid: key for kid, key in self.keys.items() if kid not in stale}
            for kid in stale:
                del self.kept_since[kid]

    def _expire(self, now: float) -> None:
        """Stop trusting keys that no fetch has confirmed for ``max_age_seconds``.

        Keeping the last good keys through an outage is right, within a bound: a key
        the issuer withdrew (rotated out after a compromise, say) must not stay
        trusted for as long as the certs endpoint stays unreachable, which an
        attacker may be able to arrange. Past the bound every token gets 503 until a
        fetch succeeds, those naming a kid the old document listed unusably too (that
        document is no longer trusted either); said once, as an error.
        """
        logger.error(
            "certs endpoint %s: no fetch has confirmed the %d signing keys for %s (the maximum age, "
            "CFACCESS_JWKS_MAX_AGE_SECONDS); they are no longer trusted and tokens get 503 until a fetch succeeds "
            "(last failure: %s)",
            self.url,
            len(self.keys),
            human_seconds(now - self.fetched_at),
            self.last_failure or "none",
        )
        self.keys = {}
        self.unusable = {}
        self.expired = True
