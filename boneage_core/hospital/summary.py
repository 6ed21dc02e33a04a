"""What ``boneage import`` says about a run: the outcome of each file (a status and a reason code) and the
run's summary, printed and written as JSON.

Every file ends ``imported``, ``skipped`` or ``failed`` (failed files are tried again by the next run),
with one of the codes of :data:`REASONS` unless imported. The message stored in an
:class:`~boneage_core.review.schema.ImportRow` is ``"<code>: <message>"``, worded here (or by
:func:`boneage_core.hospital.header.not_a_hand`), never a file name or header text; the summary holds
counts and film ids, no paths.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMPORTED = "imported"
SKIPPED = "skipped"
FAILED = "failed"

#: Reason code -> (status, message).
REASONS: dict[str, tuple[str, str]] = {
    "already-imported": (SKIPPED, "imported by an earlier run"),
    "duplicate-bytes": (SKIPPED, "the same bytes were imported from another file"),
    "duplicate-sop": (SKIPPED, "the same image (SOP instance) was imported from other bytes"),
    "already-in-log": (SKIPPED, "the film was already in the review log (uploaded)"),
    "dicomdir": (SKIPPED, "a DICOMDIR (the archive's index), not an image"),
    "not-dicom": (SKIPPED, "not a DICOM file"),
    "not-hand-modality": (SKIPPED, "not a radiograph"),
    "not-hand-body-part": (
        SKIPPED,
        "the header's BodyPartExamined names another part than the hand or wrist",
    ),
    "not-radiograph": (SKIPPED, "a picture, not a radiograph"),
    "no-sex": (SKIPPED, "the header gives no sex and none was given for the archive"),
    "flagged-not-hand": (SKIPPED, "the quality gate found no hand on it (skipped on request)"),
    "not-regular": (SKIPPED, "not a regular file (a link, named pipe, device or socket): not opened"),
    "too-deep": (SKIPPED, "a folder nested too deep, or met twice: not entered"),
    "bad-reference": (SKIPPED, "a malformed DICOMDIR reference"),
    "missing": (FAILED, "listed in a DICOMDIR but absent from the archive"),
    "cannot-open": (FAILED, "the file could not be opened"),
    "too-large": (FAILED, "over the size limit"),
    "unreadable": (FAILED, "the film could not be decoded (damaged, truncated or unsupported)"),
    "error": (FAILED, "the analysis failed on this film"),
}


@dataclass(frozen=True)
class Outcome:
    """What became of one file: ``status`` (imported, skipped, failed), ``code`` (a key of
    :data:`REASONS`, "" when imported), the film it is in the log as, and the gate's flags."""

    status: str
    code: str = ""
    message: str = ""
    film_id: int | None = None
    flags: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """``"<code>: <message>"`` ("" when imported), as the ImportRow stores it."""
        if not self.code:
            return ""
        return f"{self.code}: {self.message or REASONS[self.code][1]}"


def outcome(code: str, message: str = "", film_id: int | None = None) -> Outcome:
    """The skipped or failed :class:`Outcome` of ``code`` (its status from :data:`REASONS`)."""
    return Outcome(status=REASONS[code][0], code=code, message=message, film_id=film_id)


@dataclass
class ImportSummary:
    """One run: counts by status and by reason code, the ids of the films it imported, how long it took.

    ``flagged_not_hand``: imported films the quality gate flags ``not_hand`` (on the worklist, marked).
    ``seconds_per_film``: analysis time per imported film (decoding, segmentation, estimate, gate, log).
    """

    batch: str
    files: int = 0
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    flagged_not_hand: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    film_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    analysis_seconds: float = 0.0
    sex_given: str | None = None

    def add(self, result: Outcome) -> None:
        self.files += 1
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.code:
            self.reasons[result.code] = self.reasons.get(result.code, 0) + 1
        if result.status == IMPORTED:
            if result.film_id is not None:
                self.film_ids.append(result.film_id)
            if "not_hand" in result.flags:
                self.flagged_not_hand += 1

    @property
    def seconds_per_film(self) -> float | None:
        return self.analysis_seconds / self.imported if self.imported else None

    def hints(self) -> list[str]:
        """What to do about the skipped and failed files (how to give the sex, what a retry does)."""
        out = []
        if self.reasons.get("no-sex"):
            out.append(
                f"{_files(self.reasons['no-sex'])} without the patient's sex in the header (skipped, no-sex): run "
                "the import again with --sex M or --sex F to import them as boys or girls (it applies to every "
                "such file of the archive: import files of the other sex separately)"
            )
        if self.failed:
            out.append(
                f"{_files(self.failed)} failed: the next run tries them again (--show-paths names them on stderr)"
            )
        if self.flagged_not_hand:
            n = self.flagged_not_hand
            out.append(
                f"{_films(n)} flagged not_hand by the quality gate {'is' if n == 1 else 'are'} on the worklist, "
                "marked (--skip-flagged leaves such films out)"
            )
        return out

    def to_dict(self) -> dict:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["analysis_seconds"] = round(self.analysis_seconds, 3)
        per = self.seconds_per_film
        out["seconds_per_film"] = round(per, 3) if per is not None else None
        out["reasons"] = dict(sorted(self.reasons.items()))
        out["reason_status"] = {code: REASONS[code][0] for code in sorted(self.reasons)}
        out["hints"] = self.hints()
        return out

    def write_json(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def lines(self) -> list[str]:
        """The summary as printed: one headline, one line per reason code, then the hints."""
        per = self.seconds_per_film
        speed = f", {per:.1f} s per imported film" if per is not None else ""
        flagged = f" ({self.flagged_not_hand} flagged not_hand)" if self.flagged_not_hand else ""
        out = [
            f"import {self.batch}: {self.imported} imported{flagged}, {self.skipped} skipped, "
            f"{self.failed} failed, of {_files(self.files)} in {self.seconds:.0f} s{speed}"
        ]
        order = {SKIPPED: 0, FAILED: 1}
        for code, n in sorted(self.reasons.items(), key=lambda kv: (order[REASONS[kv[0]][0]], kv[0])):
            out.append(f"  {REASONS[code][0]:8} {code:20} {n:6}")
        out += [f"hint: {h}" for h in self.hints()]
        return out


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _films(n: int) -> str:
    return f"{n} film" if n == 1 else f"{n} films"
