"""A hospital study's reference: each reader's latest blinded reading per case, and their consensus.

    table = study_table(log, "hosp-2026")     # one row per (case, reader): film_id, reader, months, ...
    ref = consensus(table)                    # one row per case: film_id, consensus_months, n_readers, ...

Only blinded readings of the study count (the reader saw no estimate before saving); a reader who read a
case twice counts with the latest reading. The consensus of a case is the mean of its readers' readings,
the reference the hospital's figures and ``boneage adapt --from-log`` use.
"""

from __future__ import annotations

import pandas as pd

from .queries import LogQueries

STUDY_COLUMNS = ["film_id", "reader", "months", "sex", "chronological_age_months", "predicted_months"]
CONSENSUS_COLUMNS = [
    "film_id",
    "consensus_months",
    "n_readers",
    "reader_sd_months",
    "sex",
    "chronological_age_months",
    "predicted_months",
    "pseudonym",
    "sha256",
]


def study_table(log: LogQueries, study: str) -> pd.DataFrame:
    """Each reader's latest blinded reading of each case in ``study`` (:data:`STUDY_COLUMNS`)."""
    cases = {c.film_id: c for c in log.cases()}
    latest: dict[tuple[int, str], dict] = {}
    for r in log.readings(study=study):
        if r["blinded"]:
            latest[(r["film_id"], r["reader"])] = r  # oldest first: the last one wins
    rows = []
    for (fid, reader), r in sorted(latest.items()):
        c = cases.get(fid)
        rows.append(
            {
                "film_id": fid,
                "reader": reader,
                "months": float(r["months"]),
                "sex": c.sex if c else None,
                "chronological_age_months": c.chronological_age_months if c else None,
                "predicted_months": c.predicted_months if c else None,
            }
        )
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def consensus(table: pd.DataFrame, log: LogQueries | None = None, min_readers: int = 1) -> pd.DataFrame:
    """One row per case read by at least ``min_readers`` (:data:`CONSENSUS_COLUMNS`): the mean of its
    readers' readings, how many and their SD (NaN for one reader). ``log`` adds each case's pseudonym
    and sha256 (for the films' files)."""
    if table.empty:
        return pd.DataFrame(columns=CONSENSUS_COLUMNS)
    grouped = table.groupby("film_id")
    out = pd.DataFrame(
        {
            "consensus_months": grouped["months"].mean(),
            "n_readers": grouped["reader"].nunique(),
            "reader_sd_months": grouped["months"].std(ddof=1),
            "sex": grouped["sex"].first(),
            "chronological_age_months": grouped["chronological_age_months"].first(),
            "predicted_months": grouped["predicted_months"].first(),
        }
    ).reset_index()
    out = out[out["n_readers"] >= min_readers].reset_index(drop=True)
    cases = {c.film_id: c for c in log.cases()} if log is not None else {}
    out["pseudonym"] = [cases[f].pseudonym if f in cases else None for f in out["film_id"]]
    out["sha256"] = [cases[f].sha256 if f in cases else None for f in out["film_id"]]
    return out[CONSENSUS_COLUMNS]
