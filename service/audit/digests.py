"""Digests: the verified head of every stream, written for an auditor to keep outside the service,
and the check that the store still leads to each head a digest recorded."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from service.audit.verification import Verification
from service.events.chain import FORMAT as CHAIN_FORMAT
from service.events.chain import canonical_json, canonical_time, check_chain
from service.events.schemas import is_valid_stream_id
from service.events.store import EventStore
from service.times import utcnow

DIGEST_FORMAT = "casestudies-digest/1"


class DigestError(ValueError):
    """A digest file that cannot be used: not ours, or altered since it was written."""


@dataclass(frozen=True)
class DigestFinding:
    """One stream whose stored history no longer matches what a digest recorded."""

    stream_id: str
    problem: str
    version: int | None = None
    expected_hash: str | None = None
    found_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.stream_id, "problem": self.problem, "version": self.version,
                "expected_hash": self.expected_hash, "found_hash": self.found_hash}


def write_digest(verification: Verification, *, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The verified head of every stream, for an auditor to keep outside the system.

    Raises DigestError when a chain is already broken: a digest vouches only for history
    that checks out.
    """
    heads, broken, total = [], [], 0
    for check in verification.verify_all(progress=progress):
        total += check.events
        if not check.intact:
            broken.append(check)
        heads.append({"id": check.stream_id, "version": check.version, "head_hash": check.head_hash})
    if broken:
        raise DigestError("chains are broken, so no digest was written: " + ", ".join(
            f"{c.stream_id} at version {c.broken_version}" for c in broken[:10]))
    body = {"format": DIGEST_FORMAT, "chain_format": CHAIN_FORMAT, "created_at": canonical_time(utcnow()),
            "stream_count": len(heads), "event_count": total, "streams": heads}
    return {**body, "sha256": _sha256(body)}


def check_digest(store: EventStore, document: dict[str, Any], *,
                 reseals: Mapping[tuple[str, int], tuple[str, str]] | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[list[DigestFinding], int]:
    """Streams whose history no longer leads to the head a digest recorded, and how many streams
    were checked. ``reseals`` are the verified reseals of migration 0006 ((stream, version) -> old and
    new hash, from ``People.trusted_reseals``): a head they link to today's is not a finding.
    Raises DigestError for a file that is not a digest or was altered."""
    if not isinstance(document, dict) or document.get("format") != DIGEST_FORMAT:
        raise DigestError(f"not a {DIGEST_FORMAT} file")
    body = {key: value for key, value in document.items() if key != "sha256"}
    try:
        altered = document.get("sha256") != _sha256(body)
    except (TypeError, ValueError):
        altered = True
    if altered:
        raise DigestError("the digest file was altered after it was written (its sha256 does not match)")
    _check_shape(document)
    findings = []
    for head in document["streams"]:
        stream = store.load(head["id"], to_version=head["version"])
        if progress:
            progress(len(stream))
        finding = _against_head(head, stream)
        if finding is not None and not _resealed(reseals or {}, head, stream):
            findings.append(finding)
    return findings, len(document["streams"])


def _against_head(head: dict[str, Any], stream: list) -> DigestFinding | None:
    """What is wrong with a stream (its events up to the digest's version) against the head recorded."""
    stream_id, version, recorded = head["id"], head["version"], head["head_hash"]
    if not stream:
        return DigestFinding(stream_id, "the stream is missing", version, recorded, None)
    check = check_chain(stream_id, stream)
    if not check.intact:
        return DigestFinding(stream_id, f"chain broken: {check.problem}", check.broken_version,
                             check.expected_hash, check.found_hash)
    if check.version < version:
        return DigestFinding(stream_id, "events are missing", version, recorded, None)
    if check.head_hash != recorded:
        return DigestFinding(stream_id, "history was rewritten since the digest", version, recorded, check.head_hash)
    return None


def _resealed(reseals: Mapping[tuple[str, int], tuple[str, str]], head: dict[str, Any], stream: list) -> bool:
    """True when the head a digest recorded was sealed anew (migration 0006 encrypted personal fields
    stored in clear) into the very hash the store now has at that version, by a verified reseal, and
    the chain from there on checks out."""
    if not stream or stream[-1].version != head["version"] or not check_chain(head["id"], stream).intact:
        return False
    return reseals.get((head["id"], head["version"])) == (head["head_hash"], stream[-1].hash)


def _sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _check_shape(document: dict[str, Any]) -> None:
    """Refuse a digest whose sha256 checks out but whose content is not what ``digest`` writes."""
    streams = document.get("streams")
    ok = (isinstance(streams, list) and isinstance(document.get("created_at"), str)
          and type(document.get("event_count")) is int and all(_is_head(head) for head in streams))
    if not ok:
        raise DigestError(f"not a {DIGEST_FORMAT} file: its streams, versions or hashes are malformed")


def _is_head(head: Any) -> bool:
    return (isinstance(head, dict) and isinstance(head.get("id"), str) and is_valid_stream_id(head["id"])
            and type(head.get("version")) is int and 1 <= head["version"] < 2**31
            and isinstance(head.get("head_hash"), str) and len(head["head_hash"]) == 64)


