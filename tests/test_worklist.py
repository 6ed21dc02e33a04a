"""The reading workflow: the worklist and its order, the reading form bound to its case, the film viewer,
and browser sessions that survive a reload. Core functions on tiny inputs, then the Worklist page under
AppTest on real films in a real SQLite log."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pytest
from apphelp import fixed_log, metrics, start

from boneage_core.errors import BoneAgeError
from boneage_core.review.form import read_form, reader_age
from boneage_core.review.schema import Case
from boneage_core.review.sessions import SessionTokens
from boneage_core.review.verify import verify_log
from boneage_core.review.viewer import viewer_figure, viewer_image, window_level
from boneage_core.review.worklist import case_label, next_case, reading_status, step, worklist, worklist_table


def _case(film_id: int, **kw) -> Case:
    values = dict(
        film_id=film_id,
        sha256="ab" * 32,
        pseudonym=f"key{film_id}",
        sex="M",
        chronological_age_months=86.0,
        segmentation_id=1,
        mask_decision=None,
        mask_reader=None,
        prediction_id=film_id,
        predicted_months=84.9,
        model_version="m",
        weights_sha256="cd" * 32,
        preprocess="p",
        reading_action=None,
        reference_months=None,
        reader=None,
        reason=None,
        film_created_at=dt.datetime(2026, 1, 1),
        read_at=None,
    )
    values.update(kw)
    return Case(**values)


# ------------------------------------------------------------------------------------------- worklist
def test_worklist_keeps_arrival_order_and_filters_status_flags_and_sex() -> None:
    cases = [
        _case(3, reading_action="corrected", reference_months=90.0, reader="dr_a"),
        _case(1, quality_flags=("mirrored",)),
        _case(2, sex="F"),
        _case(4, prediction_id=None, predicted_months=None),  # a mask without an estimate: not readable
    ]
    assert [c.film_id for c in worklist(cases)] == [1, 2, 3]
    assert [c.film_id for c in worklist(cases, statuses={"unread"})] == [1, 2]
    assert [c.film_id for c in worklist(cases, flagged=True)] == [1]
    assert [c.film_id for c in worklist(cases, flagged=False)] == [2, 3]
    assert [c.film_id for c in worklist(cases, sex="F")] == [2]
    assert [c.film_id for c in worklist(cases, statuses={"unread"}, keep={3})] == [1, 2, 3]
    assert [reading_status(c) for c in cases[:2]] == ["corrected", "unread"]


@pytest.mark.parametrize(
    ("current", "unread", "expected"),
    [(None, {2, 5}, 2), (2, {2, 5}, 5), (5, {2, 5}, 2), (5, {5}, 5), (3, set(), None), (9, {7}, 7)],
)
def test_next_unread_wraps_round_and_comes_back_to_the_current_case_last(current, unread, expected) -> None:
    assert next_case([1, 2, 3, 5, 7], current, unread) == expected


def test_step_is_clamped_to_the_list() -> None:
    order = [4, 6, 9]
    assert [step(order, 6, -1), step(order, 6, 1), step(order, 9, 1), step(order, 4, -1)] == [4, 9, 9, 4]
    assert step(order, 99, 1) == 4 and step([], 1, 1) is None


def test_a_case_label_tells_neighbours_apart() -> None:
    label = case_label(_case(6, quality_flags=("rotated",)))
    assert label == "case 6 · boy · CA 7 y 2 m · model 7 y 1 m · unread · flags: rotated"
    read = case_label(_case(6, reading_action="confirmed", reader="dr_a", chronological_age_months=None))
    assert "CA not known" in read and "confirmed by dr_a" in read


def test_the_worklist_table_has_one_row_per_case_with_its_thumbnail() -> None:
    cases = [_case(1), _case(2, reading_action="corrected", reference_months=126.0, reader="dr_b")]
    table = worklist_table(cases, {1: "data:image/png;base64,AAAA"})
    assert list(table["case"]) == [1, 2] and table["film"][0].startswith("data:image/png")
    assert list(table["status"]) == ["unread", "corrected (dr_b)"] and table["reader"][1] == "10 y 6 m"


# ------------------------------------------------------------------------------------------------ form
@pytest.mark.parametrize(
    ("action", "age", "reason", "expected"),
    [
        ("confirm", "", "", None),
        ("confirm", "85m", "", None),  # the estimate itself (84.9, shown to one decimal)
        ("confirm", "7y 1m", "", None),
        ("correct", "8y 0m", "carpals", 96.0),
        ("correct", "126", "radius", 126.0),
        ("correct", "10.5y", "radius", 126.0),
        ("correct", "85", "", None),  # within half a month of the estimate, no reason: a confirmation
    ],
)
def test_the_form_reads_what_the_reader_meant(action, age, reason, expected) -> None:
    entry = read_form(_case(5), 5, action, age, reason)
    assert entry.film_id == 5 and entry.months == expected


@pytest.mark.parametrize(
    ("form_case", "action", "age", "reason", "message"),
    [
        (6, "confirm", "", "", "filled for case 6, but case 5 is open"),
        (5, "confirm", "8y 0m", "", "chose to confirm the estimate .* but typed 8y 0m"),
        (5, "correct", "", "x", "Type your bone age"),
        (5, "correct", "8y 0m", "  ", "give the reason"),
        (5, "correct", "10.5", "radius", "no unit: 10.5 months or 10.5 years \\(126 months\\)"),
        (5, "correct", "eleven", "radius", "Cannot read 'eleven'"),
        (5, "correct", "300m", "radius", "between 0 and 240"),
    ],
)
def test_the_form_refuses_what_could_land_wrong(form_case, action, age, reason, message) -> None:
    with pytest.raises(BoneAgeError) as e:  # ReadingFormError, or AgeFormatError from parse_age
        read_form(_case(5), form_case, action, age, reason)
    assert re.search(message, str(e.value)), str(e.value)


def test_bare_numbers_from_20_on_are_months() -> None:
    assert reader_age("20") == 20.0 and reader_age("130") == 130.0 and reader_age("19.5m") == 19.5


# ---------------------------------------------------------------------------------------------- viewer
def test_window_level_maps_low_to_black_and_high_to_white() -> None:
    grey = np.array([[0, 40, 130, 220, 255]], np.uint8)
    assert window_level(grey, 40, 220).tolist() == [[0, 0, 128, 255, 255]]
    assert window_level(grey, 40, 220, invert=True).tolist() == [[255, 255, 128, 0, 0]]
    with pytest.raises(ValueError):
        window_level(grey, 200, 100)


def test_the_viewer_shows_the_film_at_its_own_resolution_with_optional_overlays(eight_films) -> None:
    film = eight_films[0].pixels
    fig = viewer_figure(film)
    image = fig.data[0]
    assert image.source.startswith("data:image/png;base64,") and (image.dx, image.dy) == (1, 1)
    assert list(fig.layout.xaxis.range) == [0, film.shape[1]] and list(fig.layout.yaxis.range) == [
        film.shape[0],
        0,
    ]
    assert fig.layout.dragmode == "pan" and fig.layout.yaxis.scaleanchor == "x"
    plain = viewer_image(film)
    assert plain.shape == (*film.shape, 3) and np.array_equal(plain[:, :, 0], film)
    mask = np.zeros(film.shape, bool)
    mask[100:400, 100:300] = True
    outlined = viewer_image(film, mask=mask)
    changed = np.any(outlined != plain, axis=2)
    assert changed.any() and not changed[200:300, 150:250].any(), "an outline, not a tint"


# -------------------------------------------------------------------------------------------- sessions
def test_session_tokens_resolve_until_idle_expiry_and_revoke() -> None:
    now = [0.0]
    tokens = SessionTokens(hours=1, clock=lambda: now[0])
    a, b = tokens.issue("dr_a"), tokens.issue("dr_b")
    assert a != b and tokens.resolve(a) == "dr_a" and tokens.resolve("forged") is None
    now[0] = 3000
    assert tokens.resolve(a) == "dr_a"  # use restarts the idle clock
    now[0] = 4000
    assert tokens.resolve(b) is None and tokens.resolve(a) == "dr_a"
    tokens.revoke(a)
    assert tokens.resolve(a) is None
    c = tokens.issue("dr_c")
    tokens.revoke_account("dr_c")
    assert tokens.resolve(c) is None and tokens.resolve(None) is None


# ------------------------------------------------------------------------------------ the Worklist page
def _read_log(data_dir, films):
    """Three unread cases of real films with chronological ages, and one read by another reader."""
    rows = [
        (120.0, "F", None, None),
        (84.9, "M", None, None),
        (150.0, "M", None, None),
        (60.0, "F", "dr_x", 66.0),
    ]
    return fixed_log(data_dir / "review.sqlite", films[:4], rows, chronological=[118.0, 86.0, 160.0, 62.0])


def _form(at, fid: int):
    return at.text_input(key=f"form-age-{fid}"), at.text_area(key=f"form-reason-{fid}")


def _submit(at, label: str):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def test_worklist_reads_cases_in_order_and_each_reading_lands_on_its_case(data_dir, eight_films) -> None:
    log = _read_log(data_dir, eight_films)
    ids = [c.film_id for c in log.cases()]
    at = start("worklist")
    assert at.subheader[0].value.startswith(f"Case {ids[0]} · girl · CA 9 y 10 m")
    table = at.dataframe[0].value
    assert list(table["case"]) == ids[:3] and all(str(v).startswith("data:image/png") for v in table["film"])
    assert metrics(at)["Bone age"] == "120.0 months"

    # confirm the first: the next unread opens, with an empty form
    _submit(at, "Confirm the estimate")
    assert (
        f"Saved: case {ids[0]} confirmed by dr_test. Case {ids[1]} (next unread) is open."
        in at.success[0].value
    )
    assert at.subheader[0].value.startswith(f"Case {ids[1]} · boy")

    # correct the second: typed age with "confirm" is refused, nothing saved
    age, reason = _form(at, ids[1])
    age.set_value("8y 0m")
    _submit(at, "Confirm the estimate")
    assert "typed 8y 0m" in at.error[0].value and log.latest(ids[1]).reading_action is None
    age, reason = _form(at, ids[1])
    reason.set_value("carpals older")
    _submit(at, "Save my bone age")
    assert f"Saved: case {ids[1]} read at 96.0 months" in at.success[0].value
    assert at.subheader[0].value.startswith(f"Case {ids[2]}")
    # the form of the new case is empty, the previous case's text is gone
    age, reason = _form(at, ids[2])
    assert age.value == "" and reason.value == ""
    assert not [k for k in at.session_state if str(k).startswith("form-") and str(k).endswith(f"-{ids[1]}")]

    # a typed age on the third, then switching away and back: the form comes back empty
    age.set_value("13y")
    next(b for b in at.button if b.label == "Previous").click().run()
    assert at.subheader[0].value.startswith(f"Case {ids[1]}")
    next(b for b in at.button if b.label == "Next").click().run()
    age, _ = _form(at, ids[2])
    assert age.value == ""

    cases = {c.film_id: c for c in log.cases()}
    assert (cases[ids[0]].reading_action, cases[ids[0]].reference_months) == ("confirmed", 120.0)
    assert (cases[ids[1]].reading_action, cases[ids[1]].reference_months) == ("corrected", 96.0)
    assert cases[ids[2]].reading_action is None and cases[ids[3]].reader == "dr_x"
    assert verify_log(log.path).ok


def test_worklist_filters_and_marks_and_the_mask_buttons_log_under_the_reader(data_dir, eight_films) -> None:
    log = _read_log(data_dir, eight_films)
    ids = [c.film_id for c in log.cases()]
    at = start("worklist")
    at.multiselect(key="wl_status").set_value(["unread", "corrected"]).run()
    assert list(at.dataframe[0].value["case"]) == ids
    at.selectbox(key="wl_sex").set_value("girls").run()
    assert list(at.dataframe[0].value["case"]) == [ids[0], ids[3]]
    _submit(at, "Reject mask")
    assert f"Case {ids[0]}: mask rejected by dr_test." in at.success[0].value
    assert log.latest(ids[0]).mask_decision == "rejected"
    # the viewer: full-resolution film, overlays off by default, window applied
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    film = eight_films[0].pixels
    assert figure["layout"]["xaxis"]["range"] == [0, film.shape[1]]
    assert figure["data"][0]["source"].startswith("data:image/png") and figure["data"][0]["dx"] == 1
    assert not at.toggle(key=f"view-mask-{ids[0]}").value and not at.toggle(key=f"view-heat-{ids[0]}").value


def test_a_case_opened_from_another_page_is_the_one_shown(data_dir, eight_films) -> None:
    log = _read_log(data_dir, eight_films)
    ids = [c.film_id for c in log.cases()]
    at = start("worklist")
    at.session_state["focus_film"] = ids[3]  # what resources.open_case sets before switching page
    at.run()
    assert at.subheader[0].value.startswith(f"Case {ids[3]} · girl") and "corrected" in at.subheader[0].value
    assert any("**Reading:** corrected at 66.0 months" in m.value for m in at.markdown)


def test_read_page_keeps_the_films_read_when_the_reader_comes_back(
    data_dir, eight_films, fullres_films
) -> None:
    from apphelp import upload

    at = upload(start(), "first.jpg", fullres_films[2].read_bytes())
    at.radio(key="sex-batch").set_value("F")
    _submit(at, "Estimate bone age")
    assert metrics(at)["Bone age"].endswith("months")
    at.switch_page("../pages/worklist.py").run()
    at.switch_page("../pages/read.py").run()
    assert not at.exception
    assert any("Read earlier in this session (1)" in s.value for s in at.subheader)
    assert any("**first.jpg** · case 1 · girl" in m.value for m in at.markdown)


def test_one_sex_answer_for_a_batch_of_films_without_it(data_dir, fullres_films) -> None:
    from apphelp import start as begin

    at = begin()
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in fullres_films[3:6]]
    at.file_uploader[0].set_value(files).run()
    assert len(at.warning) == 1 and "do not say the patient's sex" in at.warning[0].value
    at.radio(key="sex-batch").set_value("M")
    sha_keys = [s.key for s in at.selectbox if s.key.startswith("sex-")]
    assert len(sha_keys) == 3
    at.selectbox(key=sha_keys[1]).set_value("F")
    _submit(at, "Estimate bone age")
    from boneage_core.review.log import ReviewLog

    sexes = sorted(c.sex for c in ReviewLog(data_dir / "review.sqlite").cases())
    assert sexes == ["F", "M", "M"]


def test_a_reading_is_logged_under_its_account_and_never_under_another(data_dir, eight_films) -> None:
    from boneage_core.review.accounts import Accounts
    from boneage_core.review.log import ReviewLog

    log = fixed_log(data_dir / "review.sqlite", eight_films[:1], [(120.0, "F", None, None)])
    fid = log.cases()[0].film_id
    at_a, at_b = start("worklist", user="dr_a"), start("worklist", user="dr_b")
    _submit(at_a, "Confirm the estimate")
    assert "confirmed by dr_a." in at_a.success[0].value
    at_b.multiselect(key="wl_status").set_value(["unread", "confirmed", "corrected"]).run()
    age, reason = _form(at_b, fid)
    age.set_value("130")
    reason.set_value("carpals older")
    _submit(at_b, "Save my bone age")
    assert "by dr_b." in at_b.success[0].value
    at_a.multiselect(key="wl_status").set_value(["unread", "confirmed", "corrected"]).run()
    age, reason = _form(at_a, fid)  # dr_a's session goes on as dr_a, after dr_b's reading
    age.set_value("125")
    reason.set_value("second look")
    _submit(at_a, "Save my bone age")
    assert "by dr_a." in at_a.success[0].value
    readings = [(e["reader"], e["months"]) for e in log.history(fid) if e["kind"].startswith("reading")]
    assert readings == [("dr_a", 120.0), ("dr_b", 130.0), ("dr_a", 125.0)]
    assert log.readers() == ["dr_a", "dr_b"] and verify_log(log.path).ok
    # a disabled account is signed out at its next step, and its session logs nothing more
    Accounts(ReviewLog(data_dir / "review.sqlite")).disable("dr_b", actor="test")
    at_b.run()
    assert at_b.title[0].value == "Bone age" and not at_b.sidebar.markdown
    assert len([e for e in log.history(fid) if e["kind"].startswith("reading")]) == 3
