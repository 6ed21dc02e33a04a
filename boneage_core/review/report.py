"""A one-page report per case, as HTML and as PDF (ReportLab): what a radiologist signs.

It holds the film, mask and heatmap thumbnails; the bone age with its interval; the chronological age,
the Greulich-Pyle SD, z-score and category; the quality flags; the reader's confirmation or correction
and name; the model version and weights hash; and the research-use notice. Nothing identifying beyond
what the reader chose to type: the case is named by its pseudonymous key and the sha256 of the film.

    report = CaseReport(case_key="3f2a...", film_sha256="...", sex="F", bone_age_months=131.2, ...)
    html = render_html(report)
    pdf = render_pdf(report)          # bytes of a one-page A4 PDF
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..clinical.ages import format_years_months
from ..clinical.greulich_pyle import Interpretation, interpret
from .target import db_arg

NOTICE = (
    "Research use only: not a medical device, not for diagnosis. Estimated by a model trained on the RSNA "
    "Pediatric Bone Age 2017 data (Halabi et al., Radiology 2019); a radiologist's reading is the reference."
)


@dataclass(frozen=True)
class CaseReport:
    """Everything a report shows. Images are (H, W) or (H, W, 3) uint8; ages in months."""

    case_key: str
    film_sha256: str
    sex: str | None
    bone_age_months: float
    interval_low_months: float | None
    interval_high_months: float | None
    interval_level: float | None
    interpretation: Interpretation
    quality_flags: tuple[str, ...]
    model_version: str
    weights_sha256: str
    preprocess: str
    film: np.ndarray
    mask_overlay: np.ndarray | None = None
    heatmap_overlay: np.ndarray | None = None
    #: "confirmed" or "corrected" (None: not read yet), with the reader's age, name, reason and time.
    reading_action: str | None = None
    reader_months: float | None = None
    reader: str | None = None
    reason: str | None = None
    read_at: dt.datetime | None = None
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines of the report, in order, as plain text."""
        gp = self.interpretation
        interval = "-"
        if self.interval_low_months is not None and self.interval_high_months is not None:
            interval = (
                f"{self.interval_low_months:.0f}-{self.interval_high_months:.0f} months "
                f"({self.interval_level:.0%} interval for a single radiologist's reading)"
            )
        ca = gp.chronological_age_months
        rows = [
            ("Case (pseudonymous key)", self.case_key),
            ("Sex", {"M": "male", "F": "female"}.get(self.sex or "", "unknown")),
            (
                "Bone age (model)",
                f"{self.bone_age_months:.1f} months ({format_years_months(self.bone_age_months)})",
            ),
            ("Interval", interval),
            (
                "Chronological age",
                f"{ca:.1f} months ({format_years_months(ca)})" if ca is not None else "not known",
            ),
            (
                "Bone age - chronological age",
                f"{gp.bone_age_minus_ca_months:+.1f} months"
                if gp.bone_age_minus_ca_months is not None
                else "-",
            ),
            ("Greulich-Pyle SD at this age", f"{gp.gp_sd_months:.2f} months" if gp.gp_sd_months else "-"),
            ("z-score", f"{gp.z_score:+.2f}" if gp.z_score is not None else "-"),
            ("Category", gp.category + (f" ({gp.reason})" if gp.reason else "")),
            ("Quality flags", ", ".join(self.quality_flags) if self.quality_flags else "none"),
        ]
        if self.reading_action:
            when = f" on {self.read_at:%Y-%m-%d %H:%M} UTC" if self.read_at else ""
            age = f"{self.reader_months:.1f} months" if self.reader_months is not None else ""
            reason = f"; reason: {self.reason}" if self.reason else ""
            rows.append(("Reading", f"{self.reading_action} by {self.reader or '?'}{when}: {age}{reason}"))
        else:
            rows.append(("Reading", "not yet confirmed or corrected by a reader"))
        rows += [
            ("Model", f"{self.model_version}; weights sha256 {self.weights_sha256[:16]}..."),
            ("Preprocessing", self.preprocess),
            ("Film sha256", self.film_sha256),
            ("Report made", f"{self.created_at:%Y-%m-%d %H:%M} UTC"),
        ]
        return rows

    def images(self) -> list[tuple[str, np.ndarray]]:
        pics = [("Film", self.film), ("Hand mask", self.mask_overlay), ("Heatmap", self.heatmap_overlay)]
        return [(t, p) for t, p in pics if p is not None]


def thumbnail(pixels: np.ndarray, height: int = 360) -> Image.Image:
    img = Image.fromarray(pixels)
    scale = height / img.height
    return img.resize((max(1, round(img.width * scale)), height), Image.BILINEAR)


def _png_b64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    thumbnail(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(report: CaseReport) -> str:
    """A self-contained HTML page (images inline)."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in report.rows())
    figs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{_png_b64(p)}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in report.images()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Bone age report</title><style>"
        "body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#111}"
        "figure{display:inline-block;margin:0 1em 1em 0}img{height:240px}"
        "th{text-align:left;padding:2px 12px 2px 0;vertical-align:top}"
        ".notice{border:1px solid #a00;padding:8px;color:#700}</style></head><body>"
        f"<h1>Bone age report</h1><div>{figs}</div><table>{rows}</table>"
        f"<p class='notice'>{html.escape(NOTICE)}</p></body></html>"
    )


def a4_document(buf: io.BytesIO, title: str):
    """The one-page A4 layout of the project's PDFs (15 mm sides, 12 mm top and bottom), writing to ``buf``."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    return SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=title,
        author="boneage",
    )


def render_pdf(report: CaseReport) -> bytes:
    """One A4 page: the thumbnails side by side, the table, the notice."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image as RLImage
    from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    buf = io.BytesIO()
    doc = a4_document(buf, "Bone age report")
    cells = []
    for _title, pixels in report.images():
        img = thumbnail(pixels)
        png = io.BytesIO()
        img.save(png, format="PNG")
        png.seek(0)
        h = 70 * mm
        cells.append(RLImage(png, width=h * img.width / img.height, height=h))
    small = styles["BodyText"].clone("small", fontSize=8.5, leading=10.5)
    table = Table(
        [
            [Paragraph(f"<b>{html.escape(k)}</b>", small), Paragraph(html.escape(v), small)]
            for k, v in report.rows()
        ],
        colWidths=[55 * mm, 125 * mm],
    )
    table.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey)])
    )
    story = [Paragraph("Bone age report", styles["Title"])]
    if cells:
        story += [Table([cells]), Spacer(1, 4 * mm)]
    notice = styles["BodyText"].clone("notice", textColor=colors.darkred, fontSize=8.5)
    story += [table, Spacer(1, 4 * mm), Paragraph(html.escape(NOTICE), notice)]
    doc.build(story)
    return buf.getvalue()


def report_for_case(service, film_id: int, heatmap: bool = True) -> CaseReport:
    """The report of case ``film_id`` from the log: the latest estimate, mask and reading, the film's
    pixels from the film store, and (``heatmap``) a Grad-CAM++ of the estimate, computed now."""
    from ..errors import BoneAgeError
    from .visual import heatmap_overlay, mask_overlay

    log = service.log
    case = log.latest(film_id)
    if case is None or case.predicted_months is None:
        raise BoneAgeError(f"case {film_id} has no estimate in the log")
    pixels = service.pixels(film_id)
    mask = mask_overlay(pixels, log.mask(case.segmentation_id)) if case.segmentation_id else None
    heat = (
        heatmap_overlay(pixels, service.predictor.explain(pixels, case.sex == "M"), 0.45) if heatmap else None
    )
    return CaseReport(
        case_key=case.pseudonym,
        film_sha256=case.sha256,
        sex=case.sex,
        bone_age_months=case.predicted_months,
        interval_low_months=case.interval_low_months,
        interval_high_months=case.interval_high_months,
        interval_level=case.interval_level,
        interpretation=interpret(case.predicted_months, case.chronological_age_months, case.sex),
        quality_flags=tuple(case.quality_flags or ()),
        model_version=case.model_version or "",
        weights_sha256=case.weights_sha256 or "",
        preprocess=case.preprocess or "",
        film=pixels,
        mask_overlay=mask,
        heatmap_overlay=heat,
        reading_action=case.reading_action,
        reader_months=case.reference_months,
        reader=case.reader,
        reason=case.reason,
        read_at=case.read_at,
    )


def add_parser(sub) -> None:
    """``boneage report`` (registered by :mod:`boneage_core.cli`)."""
    from pathlib import Path

    r = sub.add_parser("report", help="the one-page report of a logged case (PDF or HTML)")
    r.add_argument("--case", type=int, required=True, help="case number (the film's id in the log)")
    r.add_argument("--db", type=db_arg, help="review log (default: $BONEAGE_REVIEW_DB)")
    r.add_argument("--out", type=Path, required=True, help="report.pdf or report.html")
    r.add_argument("--no-heatmap", action="store_true", help="leave the Grad-CAM++ thumbnail out (faster)")
    r.set_defaults(func=_command)


def _command(args) -> int:
    from ..model.predictor import BoneAgePredictor
    from ..settings import get_settings
    from .log import ReviewLog
    from .reading import ReadingService

    log = ReviewLog(args.db or get_settings().review_db)
    report = report_for_case(ReadingService(log, BoneAgePredictor()), args.case, heatmap=not args.no_heatmap)
    data = (
        render_html(report).encode("utf-8")
        if args.out.suffix.lower() in (".html", ".htm")
        else render_pdf(report)
    )
    tmp = args.out.with_name(args.out.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"case {args.case} -> {args.out}")
    return 0
