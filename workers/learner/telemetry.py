"""How informative the audits of one step's batch were (TensorBoard `learner/audit_*`).

- audit_chunks: audited chunks in the batch;
- audit_k_sem_interior: share of them with 0 < k_sem < N (the teacher neither agreed nor
  disagreed unanimously: the Bayesian proxy of Eq. 5 has something to smooth);
- audit_phi_interior: mean over those chunks of the share of their N teacher samples with
  0 < phi < 1 (phi is graded, not a match/mismatch bit);
- audit_distinct: mean distinct continuations per chunk / N (1/N: the teacher repeats itself).

The last two come from the per-chunk telemetry the audit worker stores with the trajectory
(`db.repo_audit.record_chunk_telemetry`); the run-wide totals are in `omniopd spend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from db.repo_audit import AUDIT_META_KEY


def audit_telemetry(bundles: Sequence[Any]) -> dict[str, float | int | None]:
    """The batch's audit telemetry; None where no chunk was audited."""
    k_interior = audited = 0
    phi, distinct = [], []
    for bundle in bundles:
        stored = ((bundle.meta or {}).get(AUDIT_META_KEY) or {}).get("chunks") or {}
        for chunk in bundle.chunks:
            if chunk.state != "audited" or chunk.k_sem is None:
                continue
            audited += 1
            k_interior += 0.0 < chunk.k_sem < chunk.n_target
            numbers = stored.get(str(chunk.idx)) or {}
            if "phi_interior" in numbers:
                phi.append(float(numbers["phi_interior"]))
            if "distinct" in numbers:
                distinct.append(float(numbers["distinct"]))
    return {
        "audit_chunks": audited,
        "audit_k_sem_interior": k_interior / audited if audited else None,
        "audit_phi_interior": sum(phi) / len(phi) if phi else None,
        "audit_distinct": sum(distinct) / len(distinct) if distinct else None,
    }
