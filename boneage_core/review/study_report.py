"""A study's summary as CSV and as a one-page PDF, and ``boneage study summary``.

    boneage study summary --study hosp-2026 [--db data/review.sqlite] --out study-out/
    -> study-out/study-summary.csv   (the rows of study_figures.study_summary, plus the readers' agreement)
       study-out/study-report.pdf    (one A4 page: cases, readers, agreement, the model against the
                                      consensus and each reader, by sex)

No identifiers: readers by account name, cases only counted.
"""

from __future__ import annotations

import argparse
import html
import io
import math
from pathlib import Path

import pandas as pd

from .queries import LogQueries
from .report import NOTICE, a4_document
from .study import consensus, study_table
from .study_figures import reader_agreement, study_summary
from .target import db_arg


def study_figures(log: LogQueries, study: str, n_boot: int = 2000) -> dict:
    """``table``, ``consensus``, ``summary`` and ``agreement`` of ``study`` (see :mod:`.study_figures`)."""
    table = study_table(log, study)
    ref = consensus(table, log)
    return {
        "study": study,
        "table": table,
        "consensus": ref,
        "summary": study_summary(table, ref, n_boot=n_boot),
        "agreement": reader_agreement(table),
    }


def summary_csv(figures: dict) -> bytes:
    """The summary rows, then one row per reader pair and one for the ICC, as CSV (months to 2 decimals)."""
    rows = figures["summary"].copy()
    agree = figures["agreement"]
    extra = [
        {
            "comparison": f"readers: {p['pair']}",
            "group": "all",
            "n": p["n"],
            "mae_months": p["mean_abs_difference"],
            "bias_months": p["bias"],
        }
        for p in agree["pairs"]
    ]
    extra.append(
        {
            "comparison": "readers: ICC(A,1)",
            "group": "all",
            "n": agree["n_cases"],
            "mae_months": agree["mean_abs_difference"],
            "icc": agree["icc"],
            "icc_ci95_low": agree["icc_ci95"][0],
            "icc_ci95_high": agree["icc_ci95"][1],
        }
    )
    rows = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)
    rows.insert(0, "study", figures["study"])
    return rows.round(3).to_csv(index=False).encode("utf-8")


def fmt_value(value: float | None, digits: int = 1) -> str:
    """``value`` to ``digits`` decimals, or an em dash for a missing or NaN figure."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render_study_pdf(figures: dict) -> bytes:
    """One A4 page summarising the study (see the module docstring)."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8.5, leading=10.5)
    buf = io.BytesIO()
    doc = a4_document(buf, "Bone age study")
    table, ref, agree = figures["table"], figures["consensus"], figures["agreement"]
    summary = figures["summary"]
    readers = ", ".join(sorted(table["reader"].unique())) if not table.empty else "none"
    intro = (
        f"Study <b>{html.escape(figures['study'])}</b>: {len(ref)} cases read blinded by {agree['n_readers']} "
        f"readers ({html.escape(readers)}); {int((ref['n_readers'] >= 2).sum()) if len(ref) else 0} cases "
        f"read by two or more. Readers' agreement: ICC(A,1) {fmt_value(agree['icc'], 3)} "
        f"(95 % CI {fmt_value(agree['icc_ci95'][0], 3)} to {fmt_value(agree['icc_ci95'][1], 3)}), mean absolute "
        f"difference between readers {fmt_value(agree['mean_abs_difference'])} months."
    )
    head = ["comparison", "group", "n", "MAE (95 % CI), months", "bias", "limits of agreement"]
    body = [head]
    for row in summary[summary["group"].isin(["all", "F", "M"])].itertuples():
        body.append(
            [
                row.comparison,
                row.group,
                str(row.n),
                f"{fmt_value(row.mae_months)} ({fmt_value(row.mae_ci95_low)}-{fmt_value(row.mae_ci95_high)})",
                fmt_value(row.bias_months),
                f"{fmt_value(row.loa_lower_months)} to {fmt_value(row.loa_upper_months)}",
            ]
        )
    grid = Table(
        [[Paragraph(html.escape(str(c)), small) for c in r] for r in body],
        colWidths=[52 * mm, 14 * mm, 10 * mm, 40 * mm, 16 * mm, 48 * mm],
        repeatRows=1,
    )
    grid.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
            ]
        )
    )
    notice = styles["BodyText"].clone("notice", textColor=colors.darkred, fontSize=8.5)
    story = [
        Paragraph("Bone age study summary", styles["Title"]),
        Paragraph(intro, small),
        Spacer(1, 4 * mm),
        grid,
        Spacer(1, 4 * mm),
        Paragraph(
            "The consensus of a case is the mean of its readers' latest blinded readings; a reader is "
            "compared with the consensus of the other readers. Bias is the first named minus the second.",
            small,
        ),
        Paragraph(html.escape(NOTICE), notice),
    ]
    doc.build(story)
    return buf.getvalue()


def add_parser(sub) -> None:
    s = sub.add_parser("study", help="a blinded reading study's figures: CSV and one-page PDF")
    s.add_argument("action", choices=["summary", "list"])
    s.add_argument("--study", help="the study's name (as typed in the app's study mode)")
    s.add_argument(
        "--db", type=db_arg, help="review log (default: BONEAGE_REVIEW_DB or <data>/review.sqlite)"
    )
    s.add_argument("--out", type=Path, help="folder for study-summary.csv and study-report.pdf")
    s.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the MAE's CI")
    s.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from ..settings import get_settings
    from .log import ReviewLog

    log = ReviewLog(args.db or get_settings().review_db)
    if args.action == "list":
        for name in log.studies():
            print(name)
        return 0
    if not args.study or not args.out:
        raise SystemExit("boneage study summary: --study and --out are required")
    if args.study not in log.studies():
        from .schema import ReviewLogError

        raise ReviewLogError(
            f"no readings of a study {args.study!r} in {log.target} (see `boneage study list`)"
        )
    figures = study_figures(log, args.study, n_boot=args.n_boot)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study-summary.csv").write_bytes(summary_csv(figures))
    (args.out / "study-report.pdf").write_bytes(render_study_pdf(figures))
    main = figures["summary"]
    row = main[(main["comparison"] == "model vs consensus") & (main["group"] == "all")]
    if len(row):
        r = row.iloc[0]
        print(
            f"{args.study}: model vs consensus on {r.n} cases: MAE {r.mae_months:.2f} months "
            f"(95 % CI {r.mae_ci95_low:.2f}-{r.mae_ci95_high:.2f}), bias {r.bias_months:+.2f}"
        )
    print(f"wrote {args.out / 'study-summary.csv'} and {args.out / 'study-report.pdf'}")
    return 0
