"""Dashboards and exports on a real log of real films (issue 13): confirmed and corrected readings apart,
rejected masks and quality-flagged films filtered out on both tabs, the Bland-Altman legend clear of the
limits' labels, and the per-case CSV's case number, ages against CA, flags and reading kind.

Every expected figure is counted here by hand from :data:`ROWS` (numpy, not ``boneage_core``)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from apphelp import fixed_prediction, start
from dicom_fixtures import make_dicom

from boneage_core.clinical.greulich_pyle import gp_sd_months
from boneage_core.films.read import read_film
from boneage_core.review import dashboard as dash
from boneage_core.review.export import agreement_rows, case_rows, cases_csv, display_frame
from boneage_core.review.log import ReviewLog
from boneage_core.segment.classical import classical_segment
from boneage_core.settings import get_settings


@dataclasses.dataclass(frozen=True)
class Row:
    """One case: the model's age, sex, CA, the reading (None unread, "confirm", or the reader's age)."""

    predicted: float
    sex: str
    ca: float
    reading: float | str | None
    reader: str | None
    mask: str | None
    flags: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "unread" if self.reading is None else "confirmed" if self.reading == "confirm" else "corrected"

    @property
    def reference(self) -> float | None:
        return None if self.reading is None else self.predicted if self.reading == "confirm" else self.reading


ROWS = [
    Row(100.0, "F", 96.0, 110.0, "dr_a", "accepted", ()),
    Row(150.0095, "M", 140.0, 141.0, "dr_b", "accepted", ("rotated",)),
    Row(60.0, "F", 70.0, "confirm", "dr_a", "accepted", ()),
    Row(180.0, "M", 170.0, "confirm", "dr_b", "rejected", ()),
    Row(30.0, "M", 24.0, 18.0, "dr_a", "accepted", ("low_resolution",)),
    Row(131.0, "F", 120.0, "confirm", "dr_b", None, ()),
    Row(90.0, "F", 100.0, None, None, "accepted", ()),  # a DICOM with a name and an ID; never read
]


@pytest.fixture(scope="module")
def films(fullres_films):
    """Seven real films; the last one as a DICOM naming its patient."""
    out = [read_film(p) for p in fullres_films[: len(ROWS)]]
    named = make_dicom(out[-1].pixels, patient_name="Doe^Jane", patient_id="PID-0042", sex="F")
    return [*out[:-1], read_film(named)]


def build_log(path: Path, films) -> tuple[ReviewLog, list[int]]:
    """A log with one case per row of :data:`ROWS`: classical masks, decisions, estimates, flags, readings."""
    log = ReviewLog(path)
    ids = []
    for film, r in zip(films, ROWS, strict=True):
        fid, sid, pid = log.record_analysis(
            film,
            classical_segment(film.pixels),
            fixed_prediction(r.predicted, r.sex),
            chronological_age_months=r.ca,
            quality_flags=list(r.flags),
        )
        if r.mask:
            log.decide_mask(sid, r.mask, reader="dr_m")
        if r.reading == "confirm":
            log.add_reading(fid, pid, r.reader)
        elif r.reading is not None:
            log.add_reading(fid, pid, r.reader, r.reading, reason="carpals")
        ids.append(fid)
    return log, ids


@pytest.fixture(scope="module")
def logged(tmp_path_factory, films) -> tuple[ReviewLog, list[int]]:
    """One log for the tests that only read it."""
    return build_log(tmp_path_factory.mktemp("log") / "review.sqlite", films)


def by_hand(rows: list[Row]) -> dict:
    """n, MAE, bias, SD and limits of agreement of model - reference, by the textbook formulas."""
    e = np.array([r.predicted - r.reference for r in rows])
    out = {"n": len(rows), "mae_months": np.abs(e).mean() if len(e) else np.nan}
    out["bias_months"] = e.mean() if len(e) else np.nan
    out["sd_error_months"] = e.std(ddof=1) if len(e) > 1 else np.nan
    out["loa_lower_months"] = out["bias_months"] - 1.96 * out["sd_error_months"]
    out["loa_upper_months"] = out["bias_months"] + 1.96 * out["sd_error_months"]
    return out


def _read(rows: list[Row], kind: str | None = None) -> list[Row]:
    return [r for r in rows if r.kind != "unread" and (kind is None or r.kind == kind)]


def _assert_split(split, rows: list[Row], abs_tol: float = 1e-9) -> None:
    split = split.set_index(split.columns[0])
    for label, kind in (("corrected", "corrected"), ("confirmed", "confirmed"), ("all", None)):
        want = by_hand(_read(rows, kind))
        got = split.loc[label]
        assert int(got.iloc[0]) == want["n"], (label, got)
        for i, key in enumerate(dash.SPLIT_COLUMNS[2:-1], start=1):
            if np.isnan(want[key]):
                assert np.isnan(float(got.iloc[i])), (label, key)
            else:
                assert float(got.iloc[i]) == pytest.approx(want[key], abs=abs_tol), (label, key)


# ------------------------------------------------------------------------------------ without Streamlit


def test_the_split_by_reading_kind_equals_a_hand_count_of_the_rows(logged):
    log, ids = logged
    table = dash.hospital_table(log.cases(read_only=True))
    assert sorted(table["key"]) == sorted(i for i, r in zip(ids, ROWS, strict=True) if r.kind != "unread")
    assert dict(zip(table["key"], table["reading"], strict=True)) == {
        i: r.kind for i, r in zip(ids, ROWS, strict=True) if r.kind != "unread"
    }
    _assert_split(dash.reading_split(table), ROWS)
    confirmed = table[table["reading"] == "confirmed"]
    assert (confirmed["error_months"] == 0).all()  # the reference is the model's own number
    shown = dash.rounded(dash.reading_split(table))
    assert (shown["mae_months"] == shown["mae_months"].round(1)).all()
    # the export's agreement rows hold the same split
    agree = {r["group"]: r for r in agreement_rows(log.cases())}
    for kind in ("corrected", "confirmed"):
        want = by_hand(_read(ROWS, kind))
        got = agree[f"reading {kind}"]
        assert got["n"] == want["n"] and got["mae_months"] == pytest.approx(want["mae_months"], abs=1e-4)


def test_rejected_mask_and_flag_filters_leave_out_those_cases_and_say_how_many(logged):
    log, ids = logged
    table = dash.hospital_table(log.cases(read_only=True))
    key = dict(zip(ids, ROWS, strict=True))
    no_rejected = dash.CaseFilter(exclude_rejected_masks=True)
    kept = set(no_rejected.apply(table)["key"])
    assert kept == {i for i, r in key.items() if r.kind != "unread" and r.mask != "rejected"}
    assert no_rejected.left_out(table) == {"rejected mask": sum(r.mask == "rejected" for r in _read(ROWS))}
    _assert_split(dash.reading_split(no_rejected.apply(table)), [r for r in ROWS if r.mask != "rejected"])

    both = dataclasses.replace(no_rejected, without_flags=("rotated", "not_hand"))
    kept = set(both.apply(table)["key"])
    assert kept == {
        i for i, r in key.items() if r.kind != "unread" and r.mask != "rejected" and "rotated" not in r.flags
    }
    counts = both.left_out(table)
    assert counts["quality flags"] == sum("rotated" in r.flags for r in _read(ROWS))
    text = dash.left_out_text(table, both)
    assert text.startswith(f"Showing {len(kept)} of {len(table)} cases.")
    assert f"{counts['rejected mask']} by rejected mask" in text and "by quality flags" in text

    girls_6_14 = dash.CaseFilter(sexes=("F",), age_bands=("6-10 y", "10-14 y"))
    want = {i for i, r in key.items() if r.kind != "unread" and r.sex == "F" and 72 <= r.reference < 168}
    assert set(girls_6_14.apply(table)["key"]) == want and want
    only_corrected = dash.CaseFilter(readings=dash.CHART_READINGS["Corrected readings only"])
    assert set(only_corrected.apply(table)["key"]) == {i for i, r in key.items() if r.kind == "corrected"}


def test_the_same_filters_work_on_the_rsna_evaluation():
    eval_dir = get_settings().rsna_eval_dir
    raw = list(csv.DictReader(io.StringIO((eval_dir / "predictions.csv").read_text())))
    table, _ = dash.rsna_table(eval_dir)
    f = dash.CaseFilter(sexes=("F",), age_bands=("10-14 y",), exclude_rejected_masks=True)
    want = [r for r in raw if r["sex"] == "F" and 120 <= float(r["truth_months"]) < 168]
    got = f.apply(table)
    assert sorted(got["key"]) == sorted(r["id"] for r in want) and 0 < len(want) < len(raw)
    err = np.array([float(r["predicted_months"]) - float(r["truth_months"]) for r in want])
    assert dash.summarise(got)["mae_months"] == pytest.approx(np.abs(err).mean())
    counts = f.left_out(table)
    assert counts["rejected mask"] == 0  # the evaluation has no mask decisions
    assert counts["sex"] == sum(r["sex"] != "F" for r in raw)


def test_bland_altman_legend_sits_below_the_plot_and_confirmed_points_are_open(logged):
    log, ids = logged
    table = dash.hospital_table(log.cases(read_only=True))
    fig = dash.bland_altman_figure(table, dash.summarise(table))
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the x axis
    labels = [a for a in fig.layout.annotations if "SD" in a.text or "bias" in a.text]
    assert len(labels) == 3 and all(a.x >= 1 and a.xanchor == "left" for a in labels)  # in the right margin
    assert fig.layout.margin.r >= 100
    keys = {k for tr in fig.data for k in tr.customdata}
    assert keys == {str(k) for k in table["key"]}
    confirmed = {str(k) for k in table.loc[table["reading"] == "confirmed", "key"]}
    open_keys = {k for tr in fig.data if tr.marker.symbol == "circle-open" for k in tr.customdata}
    assert open_keys == confirmed and all(
        tr.name.endswith("confirmed") for tr in fig.data if tr.marker.symbol == "circle-open"
    )


def test_the_cases_csv_has_case_number_ages_against_ca_flags_and_reading_kind(logged):
    log, ids = logged
    text = cases_csv(log.cases()).decode()
    assert "Doe" not in text and "PID-0042" not in text and "Jane" not in text
    rows = {int(r["case"]): r for r in csv.DictReader(io.StringIO(text))}
    assert sorted(rows) == sorted(ids)
    for fid, r in zip(ids, ROWS, strict=True):
        row = rows[fid]
        sd = gp_sd_months(r.ca, r.sex)
        assert float(row["chronological_age_months"]) == pytest.approx(r.ca)
        assert float(row["model_minus_ca_months"]) == pytest.approx(r.predicted - r.ca, abs=0.05)
        assert float(row["model_z_score"]) == pytest.approx((r.predicted - r.ca) / sd, abs=0.005)
        if r.reference is None:
            assert row["reader_minus_ca_months"] == row["reader_z_score"] == row["reference_months"] == ""
        else:
            assert float(row["reader_minus_ca_months"]) == pytest.approx(r.reference - r.ca, abs=0.05)
            assert float(row["reader_z_score"]) == pytest.approx((r.reference - r.ca) / sd, abs=0.005)
        ba = (
            r.reference if r.reference is not None else r.predicted
        )  # the older column: reader's, else model's
        assert float(row["bone_age_minus_ca_months"]) == pytest.approx(ba - r.ca, abs=0.05)
        assert row["quality_flags"] == ";".join(r.flags)
        assert row["reading_kind"] == r.kind and row["mask_decision"] == (r.mask or "")
        assert row["reading_action"] == ("" if r.kind == "unread" else r.kind)
        assert row["model_version"] == "fixed-model" and row["weights_sha256"] == "cd" * 32
        assert row["preprocess"].startswith("film/fixed/224px") and len(row["film_sha256"]) == 64
    # the page's table: the same rows, months to one decimal
    shown = display_frame(case_rows(log.cases()), list(rows[ids[0]]))
    b = shown[shown["case"] == ids[1]].iloc[0]
    assert b["predicted_months"] == round(ROWS[1].predicted, 1) and float(
        rows[ids[1]]["predicted_months"]
    ) == round(ROWS[1].predicted, 2)


# ----------------------------------------------------------------------------------- the page, AppTest


def _n(tab) -> int:
    return int({m.label: m.value for m in tab.metric}["n"])


def _ba_symbols(at) -> set[str]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    ba = next(s for s in specs if s["layout"]["title"]["text"] == "Bland-Altman")
    return {tr["marker"].get("symbol", "circle") for tr in ba["data"]}


def test_dashboards_page_shows_the_split_and_applies_one_set_of_filters_to_both_tabs(data_dir, films):
    build_log(data_dir / "review.sqlite", films)
    at = start("dashboards")
    hospital, rsna = at.tabs[0], at.tabs[1]
    kept = [r for r in ROWS if r.mask != "rejected"]  # the default leaves out rejected masks
    _assert_split(hospital.dataframe[0].value, kept, abs_tol=0.051)
    assert _n(hospital) == len(_read(kept, "corrected"))  # default: corrected readings only
    captions = " ".join(c.value for c in hospital.caption)
    assert (
        f"Showing {len(_read(kept))} of {len(_read(ROWS))} cases. Left out: 1 by rejected mask." in captions
    )
    rsna_rows = list(
        csv.DictReader(io.StringIO((get_settings().rsna_eval_dir / "predictions.csv").read_text()))
    )
    assert _n(rsna) == len(rsna_rows)

    at.radio(key="dash_readings").set_value(list(dash.CHART_READINGS)[1]).run()
    assert _n(at.tabs[0]) == len(_read(kept)) and "circle-open" in _ba_symbols(at)

    at.toggle(key="dash_exclude_rejected").set_value(False)
    at.multiselect(key="dash_without_flags").set_value(["rotated"]).run()
    kept = [r for r in ROWS if "rotated" not in r.flags]
    _assert_split(at.tabs[0].dataframe[0].value, kept, abs_tol=0.051)
    assert "1 by quality flags" in " ".join(c.value for c in at.tabs[0].caption)

    at.multiselect(key="dash_sex").set_value(["F"]).run()
    assert not at.exception
    _assert_split(at.tabs[0].dataframe[0].value, [r for r in kept if r.sex == "F"], abs_tol=0.051)
    assert _n(at.tabs[1]) == sum(r["sex"] == "F" for r in rsna_rows)
    at.multiselect(key="dash_bands").set_value(["10-14 y"]).run()
    want = [r for r in rsna_rows if r["sex"] == "F" and 120 <= float(r["truth_months"]) < 168]
    assert _n(at.tabs[1]) == len(want)
    assert f"Showing {len(want)} of {len(rsna_rows)} cases." in " ".join(c.value for c in at.tabs[1].caption)


def test_export_page_shows_the_new_columns_rounded(data_dir, films):
    log, ids = build_log(data_dir / "review.sqlite", films)
    at = start("export", user="admin_test", role="admin")
    agreement, cases = at.dataframe[0].value, at.dataframe[1].value
    assert {"case", "model_minus_ca_months", "reader_minus_ca_months", "reading_kind"} <= set(cases.columns)
    b = cases[cases["case"] == ids[1]].iloc[0]
    assert b["predicted_months"] == round(ROWS[1].predicted, 1) and b["reading_kind"] == "corrected"
    assert {"reading corrected", "reading confirmed"} <= set(agreement["group"])
    assert (agreement["mae_months"].dropna() == agreement["mae_months"].dropna().round(1)).all()
