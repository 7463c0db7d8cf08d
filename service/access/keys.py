"""API keys: created once and shown once, stored only as a SHA-256 hash, revocable by name.

Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force
that a slow password hash would protect.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.access.roles import ROLES
from service.access.tables import api_keys
from service.times import utcnow

KEY_PREFIX = "csk_"
_CACHE_LIMIT = 10_000  # keys remembered per process; more is a misconfiguration, not a workload


class KeyRequestError(Exception):
    """A key cannot be created or revoked as asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (the events' actor), its role and its id (what a dashboard
    session keeps instead of the key)."""

    name: str
    role: str
    key_id: int | None = None


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_ACTIVE = select(api_keys.c.id, api_keys.c.name, api_keys.c.role).where(api_keys.c.revoked_at.is_(None))
_FIND_KEY = _ACTIVE.where(api_keys.c.key_hash == bindparam("key_hash"))
_FIND_ID = _ACTIVE.where(api_keys.c.id == bindparam("key_id"))


class KeyStore:
    """Create, list, revoke and check API keys.

    A key that checked out is remembered by this process for ``cache_seconds``, so most
    requests need no lookup; a revoked key therefore stops working within that time in
    every process (at once in the one that revoked it). Unknown keys are never remembered.
    """

    def __init__(self, engine: Engine, *, cache_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}

    def create(self, name: str, role: str) -> str:
        """Store a new key for ``name`` with ``role`` and return it; it cannot be shown again."""
        if role not in ROLES:
            raise KeyRequestError(f"role must be one of {', '.join(ROLES)}")
        if not name or len(name) > 128 or not name.isprintable():
            raise KeyRequestError("name must be 1-128 printable characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(
                    name=name, role=role, key_hash=hash_key(key), prefix=key[:10], created_at=utcnow()))
        except IntegrityError:
            raise KeyRequestError(f"a key named {name!r} already exists (names are kept after revocation "
                            "so that events stay attributable)") from None
        return key

    def revoke(self, name: str) -> None:
        """Revoke the key named ``name``; it stops working at once."""
        with self.engine.begin() as conn:
            done = conn.execute(update(api_keys)
                                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
        if done.rowcount != 1:
            raise KeyRequestError(f"no active key named {name!r}")
        self._cache.clear()

    def list(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys.c.name, api_keys.c.role, api_keys.c.prefix,
                                       api_keys.c.created_at, api_keys.c.revoked_at)
                                .order_by(api_keys.c.name))
            return [KeyInfo(*row) for row in rows]

    def authenticate(self, key: str) -> Principal | None:
        """The principal for a presented key, or None when it is unknown or revoked."""
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        digest = hash_key(key)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.engine.connect() as conn:
            row = conn.execute(_FIND_KEY, {"key_hash": digest}).first()
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row.name, row.role, row.id)
        if self.cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (principal, now + self.cache_seconds)
        return principal

    def by_id(self, key_id: int) -> Principal | None:
        """The principal of the active key with id ``key_id``, read afresh (never from the cache), so a
        revoked key stops working at the next lookup; None when it is unknown or revoked."""
        with self.engine.connect() as conn:
            row = conn.execute(_FIND_ID, {"key_id": key_id}).first()
        return Principal(row.name, row.role, row.id) if row else None
