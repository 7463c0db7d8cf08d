"""Readiness (playbook sections 1 and 9): tracked and shown, never enforced."""
from __future__ import annotations

import math
from dataclasses import dataclass

from service.domain.model import CaseStudy, Status

NPS_PROMOTER = 8
# The events after which a record can have become a candidate (only they bring metrics or NPS),
# and those after which its readiness can differ at all (the MSA terms come with the commitment,
# and a declined record is no candidate).
CANDIDACY_EVENTS = frozenset(("metrics_recorded", "nps_recorded"))
READINESS_EVENTS = CANDIDACY_EVENTS | {"committed", "declined"}


@dataclass(frozen=True)
class Readiness:
    """How close a record is to being a case study candidate."""

    kpi_improvement_pct: float | None
    best_metric: str | None
    nps: int | None
    has_baseline: bool
    has_current: bool
    msa_clear: bool
    candidate: bool

    def to_dict(self) -> dict:
        return {
            "kpi_improvement_pct": self.kpi_improvement_pct,
            "best_metric": self.best_metric,
            "nps": self.nps,
            "has_baseline": self.has_baseline,
            "has_current": self.has_current,
            "msa_clear": self.msa_clear,
            "candidate": self.candidate,
        }


def improvement_pct(baseline: float, current: float, lower_is_better: bool) -> float | None:
    """Relative change from baseline to current in percent, positive when it got better."""
    if baseline == 0:
        return None
    change = (current - baseline) / abs(baseline) * 100.0
    if not math.isfinite(change):
        return None
    return round(-change if lower_is_better else change, 2)


def readiness(record: CaseStudy, kpi_threshold_pct: float) -> Readiness:
    """The best KPI improvement over metrics with both a baseline and a current value, NPS, and
    whether the record is a candidate: DOMAIN.md's rule (improvement of at least the threshold,
    NPS of at least 8, no MSA restriction unless anonymized), for a record not declined."""
    baseline, current = record.metrics["baseline"], record.metrics["current"]
    best_name, best = None, None
    for name in sorted(baseline.keys() & current.keys()):
        pct = improvement_pct(baseline[name], current[name], name in record.lower_is_better)
        if pct is not None and (best is None or pct > best):
            best_name, best = name, pct
    nps = record.nps["score"] if record.nps else None
    msa_clear = not record.msa_restricted or record.anonymized
    candidate = (record.state != Status.DECLINED.value and best is not None and best >= kpi_threshold_pct
                 and nps is not None and nps >= NPS_PROMOTER and msa_clear)
    return Readiness(best, best_name, nps, bool(baseline), bool(current), msa_clear, candidate)
