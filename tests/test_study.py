"""A blinded reading study on real films: the readers' consensus, the figures of the model and the readers
against it and each other (checked against formulas written here), the CSV and one-page PDF, the
`boneage study` command, and the Worklist's study mode (the estimate hidden until the reading is saved)."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from apphelp import fixed_log, start
from reference_stats import icc_a1_by_hand

from boneage_core.cli import main
from boneage_core.review.study import consensus, study_table
from boneage_core.review.study_figures import bootstrap_mae_ci, reader_agreement, study_summary
from boneage_core.review.study_report import render_study_pdf, study_figures, summary_csv

ROOT_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
ESTIMATES = [60.0, 84.0, 100.0, 120.0, 132.0, 150.0, 170.0, 190.0]
SEXES = ["F", "M", "F", "M", "F", "M", "F", "M"]
#: Each reader's offset from a "truth" of estimate + 5 months, plus a per-case wobble (fixed here).
OFFSETS = {"dr_a": 0.0, "dr_b": 6.0, "dr_c": -3.0}
WOBBLE = [1.0, -2.0, 0.5, 3.0, -1.5, 2.0, -0.5, 1.5]


def _study_log(path, films, readers=("dr_a", "dr_b", "dr_c"), skip=()):
    log = fixed_log(path, films[:8], [(m, s, None, None) for m, s in zip(ESTIMATES, SEXES, strict=True)])
    cases = log.cases()
    readings = {}
    for (i, c), reader in itertools.product(enumerate(cases), readers):
        if (reader, i) in skip:
            continue
        months = ESTIMATES[i] + 5 + OFFSETS[reader] + WOBBLE[i] * (1 if reader != "dr_c" else -1)
        log.add_reading(c.film_id, c.prediction_id, reader, months, study="hosp", blinded=True)
        readings[(i, reader)] = months
    log.add_reading(cases[0].film_id, cases[0].prediction_id, "dr_z", 10.0, reason="unblinded look")
    return log, readings


def test_study_figures_equal_the_formulas(tmp_path, eight_films):
    log, readings = _study_log(tmp_path / "review.sqlite", eight_films, skip={("dr_c", 7)})
    table = study_table(log, "hosp")
    assert set(table["reader"]) == {"dr_a", "dr_b", "dr_c"} and len(table) == 23  # dr_z is not in the study
    ref = consensus(table, log)
    truth = [np.mean([v for (i, _), v in readings.items() if i == k]) for k in range(8)]
    assert np.allclose(ref["consensus_months"], truth)
    summary = study_summary(table, ref, n_boot=500)
    row = summary[(summary["comparison"] == "model vs consensus") & (summary["group"] == "all")].iloc[0]
    err = np.array(ESTIMATES) - np.array(truth)
    assert row.n == 8 and row.mae_months == pytest.approx(np.abs(err).mean())
    assert row.bias_months == pytest.approx(err.mean())
    assert row.loa_upper_months == pytest.approx(err.mean() + 1.96 * err.std(ddof=1))
    assert row.mae_ci95_low <= row.mae_months <= row.mae_ci95_high
    girls = summary[(summary["comparison"] == "model vs consensus") & (summary["group"] == "F")].iloc[0]
    assert girls.n == 4 and girls.mae_months == pytest.approx(np.abs(err[0::2]).mean())
    pair = summary[(summary["comparison"] == "dr_a vs dr_b") & (summary["group"] == "all")].iloc[0]
    assert pair.bias_months == pytest.approx(-6.0) and pair.n == 8
    # a reader against the consensus of the *others*
    own = summary[(summary["comparison"] == "dr_a vs the others' consensus") & (summary["group"] == "all")]
    others = [np.mean([readings[(k, r)] for r in ("dr_b", "dr_c") if (k, r) in readings]) for k in range(8)]
    dr_a = [readings[(k, "dr_a")] for k in range(8)]
    assert own.iloc[0].mae_months == pytest.approx(np.abs(np.array(dr_a) - np.array(others)).mean())

    agree = reader_agreement(table)
    complete = np.array([[readings[(k, r)] for r in ("dr_a", "dr_b", "dr_c")] for k in range(7)])
    assert agree["n_readers"] == 3 and agree["n_cases"] == 8
    assert agree["icc"] == pytest.approx(icc_a1_by_hand(complete), abs=1e-9)
    diffs = [
        abs(readings[(k, x)] - readings[(k, y)])
        for x, y in itertools.combinations(("dr_a", "dr_b", "dr_c"), 2)
        for k in range(8)
        if (k, x) in readings and (k, y) in readings
    ]
    assert agree["mean_abs_difference"] == pytest.approx(np.mean(diffs))


def test_bootstrap_ci_brackets_the_mae_and_narrows_with_cases():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 5, 400)
    lo, hi = bootstrap_mae_ci(a, np.zeros(400), n_boot=1000)
    lo_small, hi_small = bootstrap_mae_ci(a[:40], np.zeros(40), n_boot=1000)
    assert lo < np.abs(a).mean() < hi and (hi - lo) < (hi_small - lo_small)
    assert all(np.isnan(bootstrap_mae_ci(a[:1], np.zeros(1))))


def test_study_csv_pdf_and_command(tmp_path, eight_films, capsys):
    log, _ = _study_log(tmp_path / "review.sqlite", eight_films)
    figures = study_figures(log, "hosp", n_boot=200)
    rows = list(csv.DictReader(io.StringIO(summary_csv(figures).decode())))
    assert {r["study"] for r in rows} == {"hosp"}
    assert any(r["comparison"] == "readers: ICC(A,1)" and float(r["icc"]) > 0.5 for r in rows)
    pdf = render_study_pdf(figures)
    assert pdf.startswith(b"%PDF")
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    assert len(doc) == 1
    text = doc[0].get_textpage().get_text_range()
    assert "hosp" in text and "model vs consensus" in text and "ICC(A,1)" in text
    out = tmp_path / "out"
    assert (
        main(
            [
                "study",
                "summary",
                "--study",
                "hosp",
                "--db",
                str(log.path),
                "--out",
                str(out),
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "model vs consensus on 8 cases" in printed
    assert (out / "study-summary.csv").read_bytes() == summary_csv(study_figures(log, "hosp", n_boot=200))
    assert main(["study", "summary", "--study", "nope", "--db", str(log.path), "--out", str(out)]) == 2
    assert main(["study", "list", "--db", str(log.path)]) == 0 and capsys.readouterr().out.strip() == "hosp"


# ------------------------------------------------------------------------------------- the study mode
def test_study_mode_hides_the_estimate_until_the_reading_is_saved(data_dir, eight_films):
    log = fixed_log(
        data_dir / "review.sqlite", eight_films[:2], [(120.0, "F", None, None), (90.0, "M", None, None)]
    )
    ids = [c.film_id for c in log.cases()]
    at = start("worklist", user="dr_blind")
    at.toggle(key="wl_study_mode").set_value(True).run()
    at.text_input(key="wl_study_name").set_value("hosp").run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown) + " ".join(m.value for m in at.metric)
    assert "120.0" not in shown and not at.metric, "no estimate before the reading"
    assert "estimate" not in at.dataframe[0].value.columns
    assert not [b for b in at.button if b.label == "Confirm the estimate"]
    at.text_input(key=f"form-age-{ids[0]}").set_value("10y 6m")
    next(b for b in at.button if b.label == "Save my bone age").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert "The model's estimate was 120.0 months" in at.success[0].value
    reading = log.readings(study="hosp")
    assert [(r["film_id"], r["reader"], r["months"], r["blinded"]) for r in reading] == [
        (ids[0], "dr_blind", 126.0, True)
    ]
    # the next case, still blinded; the case read shows its estimate only after the reading
    assert at.subheader[0].value.startswith(f"Case {ids[1]}")
    assert not at.metric


def test_the_dashboards_study_tab_shows_the_readers_agreement_and_the_model(data_dir, eight_films):
    log, _ = _study_log(data_dir / "review.sqlite", eight_films)
    at = start("dashboards")
    tab = at.tabs[2]
    values = {m.label: m.value for m in tab.metric}
    agree = reader_agreement(study_table(log, "hosp"))
    assert values["Cases read"] == "8" and values["Readers"] == "3"
    assert values["ICC(A,1) readers"] == f"{agree['icc']:.3f}"
    table = tab.dataframe[0].value
    assert table["comparison"].iloc[0] == "model vs consensus" and int(table["n"].iloc[0]) == 8
    at.radio(key="dash_study_group").set_value("F").run()
    assert int(at.tabs[2].dataframe[0].value["n"].iloc[0]) == 4


def test_the_study_tab_shows_the_adapted_models_figures_before_and_after(
    data_dir, eight_films, tmp_path, monkeypatch
):
    """An adapted model in use (``BONEAGE_MODEL``): its cross-validated figures, before and after."""
    from boneage_core.model.adapter import adaptation_info
    from boneage_core.settings import get_settings

    base = ROOT_MODELS / "boneage-lite0-224.pt"
    log, _ = _study_log(data_dir / "review.sqlite", eight_films)
    labels = tmp_path / "labels.csv"
    images = tmp_path / "films"
    images.mkdir()
    rows = ["id,boneage,male"]
    for i, film in enumerate(eight_films * 2):  # 16 cases, the fewest adapted
        fid = f"f{i}"
        (images / f"{fid}.png").write_bytes(_png(film.pixels))
        rows.append(f"{fid},{ESTIMATES[i % 8] + 9},{SEXES[i % 8] == 'M'}")
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "site.pt"
    assert (
        main(
            [
                "adapt",
                "--images",
                str(images),
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--model",
                str(base),
            ]
        )
        == 0
    )
    monkeypatch.setenv("BONEAGE_MODEL", str(out))
    get_settings.cache_clear()
    at = start("dashboards")
    info = adaptation_info(out)
    assert any(f"adapted to this site ({info['method']}, 16 cases)" in h.value for h in at.tabs[2].subheader)
    table = at.tabs[2].dataframe[0].value
    assert list(table["cases"]) == ["all", "girls", "boys"]
    assert table["MAE after"].iloc[0] == pytest.approx(info["cv"]["after"]["mae_months"], abs=0.05)


def _png(pixels) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
