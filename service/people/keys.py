"""The master key and what is made from it: each person's wrapped key, the handles people are
found by, and the tokens sealed fields are stored as.

A token is ``pd1.<person id>.<base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)>``: the person's id
(16 random bytes, base64url) is in the clear (it says nothing about them) and is the ciphertext's associated data, so a
token cannot be moved to another person. Tokens hold only URL-safe characters, so they pass
unchanged through JSON, HTML and CSV until they are revealed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.config import master_key_bytes

TOKEN_PREFIX = "pd1."
TOKEN = re.compile(r"pd1\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{38,})")
TOKEN_BYTES = re.compile(TOKEN.pattern.encode())
_NONCE = 12


def new_master_key() -> str:
    """A new master key, as PERSONAL_DATA_KEY takes it (32 random bytes, base64url)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"casestudies " + purpose).derive(master)


def placeholder(erased_at: datetime | None) -> str:
    """What a field of an erased person reads as."""
    return f"erased on {erased_at.date().isoformat()}" if erased_at else "erased"


class Keyring:
    """Everything made from the master key. The master key never leaves this object."""

    def __init__(self, master_key: str):
        master = master_key_bytes(master_key)
        self._wrapping = AESGCM(_derive(master, b"subject keys"))
        self._handles = _derive(master, b"handles")
        self._signing = _derive(master, b"receipts")

    # -- people's keys -------------------------------------------------------------------
    @staticmethod
    def new_subject() -> tuple[str, bytes]:
        """A new person's id and key."""
        return _b64(os.urandom(16)), AESGCM.generate_key(bit_length=256)

    def wrap(self, subject_id: str, key: bytes) -> str:
        nonce = os.urandom(_NONCE)
        return _b64(nonce + self._wrapping.encrypt(nonce, key, subject_id.encode()))

    def unwrap(self, subject_id: str, wrapped: str) -> bytes:
        raw = _unb64(wrapped)
        return self._wrapping.decrypt(raw[:_NONCE], raw[_NONCE:], subject_id.encode())

    # -- finding people ------------------------------------------------------------------
    def handle(self, *, email: str | None = None, name: str | None = None, account_id: str | None = None) -> str:
        """The keyed hash a person is found by: their email (case aside), else their name (case and
        spacing aside) within an account."""
        if email is not None:
            text = "email\x00" + email.strip().casefold()
        else:
            text = "name\x00" + (account_id or "") + "\x00" + " ".join((name or "").split()).casefold()
        return hmac.new(self._handles, text.encode(), hashlib.sha256).hexdigest()

    def sign(self, body: bytes) -> str:
        """An HMAC-SHA256 of ``body`` under a key derived from the master key (receipts)."""
        return hmac.new(self._signing, body, hashlib.sha256).hexdigest()


def seal(subject_id: str, key: bytes, value: str) -> str:
    """``value`` as a token under the person's key."""
    nonce = os.urandom(_NONCE)
    prefix = f"{TOKEN_PREFIX}{subject_id}"
    return f"{prefix}.{_b64(nonce + AESGCM(key).encrypt(nonce, value.encode(), prefix.encode()))}"


def keyed_hash(key: bytes, value: str) -> str:
    """An HMAC-SHA256 of ``value`` under a person's key: equal for equal values while the key lives,
    and worthless for confirming a guess once it is destroyed (what request digests are taken over)."""
    return "hmac:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def unseal(subject_id: str, key: bytes, sealed: str) -> str | None:
    """The value of a token's sealed part, or None when it does not open under ``key``."""
    try:
        raw = _unb64(sealed)
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], f"{TOKEN_PREFIX}{subject_id}".encode()).decode()
    except (InvalidTag, ValueError, binascii.Error):
        return None


def marker(subject_id: str) -> str:
    """A LIKE pattern that finds a person's tokens in stored text (``_`` taken literally)."""
    return "%" + f"{TOKEN_PREFIX}{subject_id}.".replace("_", "\\_") + "%"


def subjects_in(text: str) -> set[str]:
    """The ids of the people whose tokens appear in ``text``."""
    return {match.group(1) for match in TOKEN.finditer(text)} if TOKEN_PREFIX in text else set()
