"""``boneage import DIR``: a hospital's export becomes cases on the worklist, de-identified, each film once.

    service = ReadingService(log, predictor, segmenter, sam_sha256, gate=QualityGate())
    summary = import_archive(Path("/media/export"), log, service, sex=None, skip_flagged=False)
    summary.imported, summary.reasons          # 12, {"duplicate-sop": 1, "no-sex": 1, ...}

Each file of the archive (:func:`boneage_core.hospital.archive.walk_archive`) is taken through these
steps, cheapest first, and ends imported, skipped or failed with a reason code
(:data:`boneage_core.hospital.summary.REASONS`):

1. its bytes (a regular file of at most ``settings.max_bytes``) and their sha256: bytes an earlier run
   imported are ``already-imported`` (a resumed run: nothing is written, wherever the archive is now
   mounted), bytes this run imported from another file ``duplicate-bytes``;
2. DICOM or not, sniffed from the bytes (``not-dicom``); a DICOMDIR, by name or SOP class, is the index;
3. the header, read bounded in this process (:mod:`boneage_core.hospital.header`): SOP class, modality,
   BodyPartExamined (``not-hand-modality``, ``not-hand-body-part``); the same SOPInstanceUID imported
   before from other bytes (another transfer syntax) is ``duplicate-sop``;
4. the Read page's analysis, :meth:`ReadingService.analyse`: decoding in the sandbox, segmentation (SAM
   or classical), estimate and quality gate, logged in one transaction with origin ``import:<batch>``.
   Sex comes from the header, else from ``sex`` (the whole archive), else the file is skipped (``no-sex``).
   A film the gate flags ``not_hand`` is imported and stays marked on the worklist, or is skipped
   (``flagged-not-hand``) with ``skip_flagged``.

One bad file never stops the run: whatever it raises is its ``failed`` outcome. Every file met gets an
:class:`~boneage_core.review.schema.ImportRow` under the run's random batch id, except the files an
earlier run imported; skipped and failed files are looked at again by the next run (which may now give
``--sex``), so a failed one is retried. Nothing identifying is stored: the row holds
``keyed_hash("import-path", path relative to the root)``, ``keyed_hash("import-sop", SOPInstanceUID)``,
the sha256 and a reason worded by the importer; the film's own row holds only the keyed pseudonym.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..errors import BoneAgeError, ImageSizeError, MissingSexError, NotARadiographError, UnreadableFilmError
from ..films.read import read_regular_file
from ..films.sniff import sniff_format
from ..review.log import ReviewLog
from ..review.reading import FlaggedFilmError, ReadingService
from ..review.schema import FilmRow, ImportRow
from ..review.target import db_arg
from ..secret import keyed_hash
from ..settings import get_settings
from .archive import ArchiveEntry, is_dicomdir, relative_bytes, walk_archive
from .header import Header, not_a_hand, peek_header
from .summary import IMPORTED, ImportSummary, Outcome, outcome

log = logging.getLogger("boneage.import")

#: ``on_file(entry, outcome)``: called after each file (``entry.relative`` may name the patient).
OnFile = Callable[[ArchiveEntry, Outcome], None]


@dataclass
class _Known:
    """What earlier runs (and this one, as it goes) imported, by sha256 and SOP key."""

    sha_batches: dict[str, str] = field(default_factory=dict)  # sha256 -> batch that imported it
    sops: set[str] = field(default_factory=set)
    flagged: set[str] = field(default_factory=set)  # sha256 skipped as flagged-not-hand

    @classmethod
    def load(cls, review: ReviewLog) -> _Known:
        known = cls()
        with Session(review.engine) as s:
            rows = s.execute(
                select(ImportRow.sha256, ImportRow.batch, ImportRow.sop_key, ImportRow.status).where(
                    or_(ImportRow.status == IMPORTED, ImportRow.reason.startswith("flagged-not-hand:"))
                )
            )
            for sha, batch, sop_key, status in rows:
                if status != IMPORTED:
                    known.flagged.add(sha)
                    continue
                known.sha_batches.setdefault(sha, batch)
                if sop_key:
                    known.sops.add(sop_key)
        return known


def _where(log: ReviewLog) -> object:
    """Which database ``log`` writes to: its resolved file, or its PostgreSQL URL."""
    return log.path.resolve() if log.path is not None else log.target.url


def import_archive(
    root: Path,
    review: ReviewLog,
    service: ReadingService,
    *,
    sex: str | None = None,
    skip_flagged: bool = False,
    progress: Callable[[Iterable], Iterator] | None = None,
    on_file: OnFile | None = None,
    batch: str | None = None,
) -> ImportSummary:
    """Import every film of the archive at ``root`` into ``review`` (see the module docstring).

    ``sex`` ("M" or "F") is used for files whose header gives none; ``progress`` wraps the iterator of
    files (e.g. ``tqdm``); ``on_file`` sees each file's outcome. Raises only before the first file (a
    missing root, the site secret); a file's own failure is its outcome.
    """
    if sex is not None and sex.strip().upper()[:1] not in ("M", "F"):
        raise MissingSexError(f"the archive's sex must be M or F, got {sex!r}")
    sex = sex.strip().upper()[:1] if sex else None
    if _where(service.log) != _where(review):
        raise ValueError("the reading service writes to another review log than the import's")
    keyed_hash("import-path", b"")  # the site secret: refused now rather than on every file
    started = time.perf_counter()
    entries = walk_archive(Path(root))
    summary = ImportSummary(batch=batch or secrets.token_hex(8), sex_given=sex)
    run = _Run(review, service, _Known.load(review), summary.batch, sex, skip_flagged)
    for entry in progress(entries) if progress else entries:
        t0 = time.perf_counter()
        result = run.one(entry)
        if result.status == IMPORTED:
            summary.analysis_seconds += time.perf_counter() - t0
        summary.add(result)
        if on_file is not None:
            on_file(entry, result)
    summary.seconds = time.perf_counter() - started
    return summary


class _Run:
    def __init__(
        self,
        review: ReviewLog,
        service: ReadingService,
        known: _Known,
        batch: str,
        sex: str | None,
        skip_flagged: bool,
    ):
        self.review, self.service, self.known = review, service, known
        self.batch, self.sex, self.skip_flagged = batch, sex, skip_flagged
        self.limit = get_settings().max_bytes

    def one(self, entry: ArchiveEntry) -> Outcome:
        """The file's outcome, its ImportRow written (but for ``already-imported``)."""
        source_key = keyed_hash("import-path", relative_bytes(entry))
        sha = sop_key = None
        try:
            result, sha, sop_key = self._decide(entry)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad file never stops the run; its message may name it
            log.warning("import: a file failed (%s)", type(exc).__name__)
            result = outcome("error")
        if result.code != "already-imported":
            self._record(source_key, sop_key, sha, result)
        return result

    def _decide(self, entry: ArchiveEntry) -> tuple[Outcome, str | None, str | None]:
        if entry.problem is not None:
            return outcome(entry.problem), None, None
        try:
            data = read_regular_file(entry.path, self.limit)
        except ImageSizeError:
            return outcome("too-large"), None, None
        except UnreadableFilmError:  # became something else than a regular file since the walk
            return outcome("not-regular"), None, None
        except OSError:
            return outcome("cannot-open"), None, None
        if len(data) > self.limit:
            return outcome("too-large"), None, None
        sha = hashlib.sha256(data).hexdigest()
        earlier = self.known.sha_batches.get(sha)
        if earlier is not None:
            return outcome("duplicate-bytes" if earlier == self.batch else "already-imported"), sha, None
        if sniff_format(data) != "dicom":
            return outcome("not-dicom"), sha, None
        if is_dicomdir(entry.path):
            return outcome("dicomdir"), sha, None
        header = peek_header(data, self.limit)
        sop_key = None
        if header is not None:
            if header.sop_instance_uid:
                sop_key = keyed_hash("import-sop", header.sop_instance_uid.encode("utf-8", "replace"))
            refused = not_a_hand(header)
            if refused is not None:
                return outcome(*refused), sha, sop_key
            if sop_key is not None and sop_key in self.known.sops:
                return outcome("duplicate-sop"), sha, sop_key
        if self.skip_flagged and sha in self.known.flagged:
            return outcome("flagged-not-hand"), sha, sop_key
        result = self._analyse(data, header)
        if result.status == IMPORTED:
            self.known.sha_batches[sha] = self.batch
            if sop_key is not None:
                self.known.sops.add(sop_key)
        elif result.code == "flagged-not-hand":
            self.known.flagged.add(sha)
        return result, sha, sop_key

    def _analyse(self, data: bytes, header: Header | None) -> Outcome:
        given = self.sex if header is None or header.sex is None else None  # the header's sex wins
        try:
            analysis = self.service.analyse(
                data,
                sex=given,
                origin=f"import:{self.batch}",
                refuse_flags=("not_hand",) if self.skip_flagged else (),
            )
        except MissingSexError:
            return outcome("no-sex")
        except FlaggedFilmError:
            return outcome("flagged-not-hand")
        except NotARadiographError:
            return outcome("not-radiograph")
        except ImageSizeError:
            return outcome("too-large")
        except UnreadableFilmError:
            return outcome("unreadable")
        except BoneAgeError as exc:
            log.warning("import: the analysis failed (%s)", type(exc).__name__)
            return outcome("error")
        if analysis.seen_before and not self._imported_before(analysis.film_id):
            return outcome("already-in-log", film_id=analysis.film_id)
        return Outcome(
            status=IMPORTED, film_id=analysis.film_id, flags=tuple(analysis.case.quality_flags or ())
        )

    def _imported_before(self, film_id: int) -> bool:
        """True when the film came from an import whose ImportRow was never written (a run stopped
        between the two transactions): it counts as imported now."""
        with Session(self.review.engine) as s:
            row = s.get(FilmRow, film_id)
            return row is not None and row.origin.startswith("import:")

    def _record(self, source_key: str, sop_key: str | None, sha: str | None, result: Outcome) -> None:
        with self.review.appending() as tx:
            tx.add(
                ImportRow(
                    batch=self.batch,
                    source_key=source_key,
                    sop_key=sop_key,
                    sha256=sha,
                    film_id=result.film_id,
                    status=result.status,
                    reason=result.reason,
                )
            )


# ------------------------------------------------------------------------------------------ the command


def add_parser(sub) -> None:
    """``boneage import`` (registered by :mod:`boneage_core.cli`)."""
    p = sub.add_parser(
        "import",
        help="import a hospital's export (DICOM folders, DICOMDIR) into the review log, de-identified",
        description="Every hand film of the archive becomes a case on the worklist (estimate, mask, quality "
        "flags); duplicates, other modalities and body parts are skipped; a second run resumes.",
    )
    p.add_argument("archive", type=Path, help="the export's folder (or its DICOMDIR)")
    p.add_argument(
        "--db",
        type=db_arg,
        help="review log, a file or a postgresql:// URL (default: $BONEAGE_REVIEW_DB or data/review.sqlite)",
    )
    p.add_argument(
        "--segmenter",
        choices=["auto", "sam", "localizer", "classical"],
        default="auto",
        help="auto: SAM when its checkpoint is present (as the Read page), else classical; localizer: the "
        "fast hand localizer distilled from SAM",
    )
    p.add_argument(
        "--sex",
        choices=["M", "F", "m", "f"],
        help="sex for the files whose header gives none (whole archive)",
    )
    p.add_argument(
        "--skip-flagged", action="store_true", help="leave out films the quality gate flags not_hand"
    )
    p.add_argument("--summary", type=Path, metavar="FILE.json", help="write the summary here too")
    p.add_argument(
        "--show-paths",
        action="store_true",
        help="print each skipped or failed file's path on stderr (paths may name patients; never stored)",
    )
    p.add_argument("--model", type=Path, help="bone-age checkpoint (default: the shipped one)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    p.add_argument("--no-tta", action="store_true", help="no mirrored-film test-time augmentation")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    root = args.archive.parent if args.archive.is_file() and is_dicomdir(args.archive) else args.archive
    if not root.is_dir():
        raise NotADirectoryError(f"{args.archive} is not a folder")
    review = ReviewLog(args.db or get_settings().review_db)
    service = _service(args, review)

    def show(entry: ArchiveEntry, result: Outcome) -> None:
        if args.show_paths and result.status != IMPORTED and result.code != "already-imported":
            name = os.fsencode(entry.relative).decode("utf-8", "backslashreplace")  # printable, any bytes
            tqdm.write(f"{result.status}: {name}: {result.reason}", file=sys.stderr)

    summary = import_archive(
        root,
        review,
        service,
        sex=args.sex,
        skip_flagged=args.skip_flagged,
        progress=lambda it: tqdm(it, unit="file", desc="import", file=sys.stderr, mininterval=2),
        on_file=show,
    )
    print("\n".join(summary.lines()))
    if args.summary:
        summary.write_json(args.summary)
        print(f"summary: {args.summary}")
    return 1 if summary.failed else 0


def _service(args: argparse.Namespace, review: ReviewLog) -> ReadingService:
    from .service import reading_service

    return reading_service(review, args.segmenter, args.model, args.device, tta=not args.no_tta)
