"""The logic behind the app pages, without Streamlit: ages as typed, dashboard tables and figures, the film
store, the colour-photo refusal."""

from __future__ import annotations

import datetime as dt
import io

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from boneage_core.clinical.ages import AgeFormatError, parse_age
from boneage_core.errors import NotARadiographError
from boneage_core.films.raster import colourfulness
from boneage_core.films.read import read_film
from boneage_core.films.store import FilmStore
from boneage_core.review import dashboard as dash


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("130", 130.0),
        ("130.5", 130.5),
        ("130,5 m", 130.5),
        ("10y 6m", 126.0),
        ("10 y 6 m", 126.0),
        ("10 years 6 months", 126.0),
        ("10y", 120.0),
        ("10.5 y", 126.0),
        ("10;6", 126.0),
        ("0", 0.0),
        ("20y", 240.0),
        (96, 96.0),
    ],
)
def test_parse_age_reads_months_or_years_and_months(text, months):
    assert parse_age(text) == months


@pytest.mark.parametrize("text", ["", "eleven", "10y 13m", "-3", "241", "21y", "10;12", "nan", "1e3"])
def test_parse_age_refuses_with_a_message(text):
    with pytest.raises(AgeFormatError, match="age|months"):
        parse_age(text)


def _table(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "key": i,
                "sex": s,
                "reference_months": r,
                "predicted_months": p,
                "error_months": p - r,
                "reader": rd,
                "read_at": pd.Timestamp(at),
                "model_version": "m",
            }
            for i, (s, r, p, rd, at) in enumerate(rows)
        ],
        columns=dash.TABLE_COLUMNS,
    )


ROWS = [
    ("F", 100, 104, "a", "2026-01-01 10:00"),
    ("M", 150, 140, "b", "2026-01-02 23:59"),
    ("M", 30, 31, "a", "2026-01-03 00:00"),
    ("F", 200, 212, "b", "2026-01-05 12:00"),
]


def test_summary_and_filters_on_a_small_table():
    df = _table(ROWS)
    s = dash.summarise(df)
    err = np.array([4, -10, 1, 12], float)
    assert s["n"] == 4 and s["mae_months"] == pytest.approx(np.abs(err).mean())
    assert s["bias_months"] == pytest.approx(err.mean())
    assert s["by_sex"]["F"]["n"] == 2 and s["by_age_band"]["14-20 y"]["n"] == 1
    assert 0 < s["icc_a1"] <= 1 and not np.isnan(s["icc_a1_ci95"][0])
    assert len(dash.filter_table(df, readers=["a"])) == 2
    assert list(dash.filter_table(df, dt.date(2026, 1, 2), dt.date(2026, 1, 3))["key"]) == [1, 2]
    g = dash.group_rows(s)
    assert list(g["n"]) == [0, 1, 1, 1, 1, 2, 2] and np.isnan(g["mae_months"].iloc[0])


def test_figures_carry_case_keys_and_limits_of_agreement():
    df = _table(ROWS)
    s = dash.summarise(df)
    ba = dash.bland_altman_figure(df, s)
    keys = sorted(k for tr in ba.data for k in tr.customdata)
    assert keys == ["0", "1", "2", "3"]
    assert {round(sh.y0, 6) for sh in ba.layout.shapes} == {
        round(s["bias_months"], 6),
        round(s["loa_lower_months"], 6),
        round(s["loa_upper_months"], 6),
    }
    sc = dash.scatter_figure(df)
    assert [tr.name for tr in sc.data] == ["girls", "boys", "identity"]
    bars = dash.group_error_figure(s)
    assert len(bars.data[0].x) == 7
    empty = dash.hospital_table([])
    assert len(empty) == 0 and list(empty.columns) == dash.TABLE_COLUMNS


def test_rsna_table_reads_evaluate_outputs_and_refuses_others(tmp_path):
    from boneage_core.settings import get_settings

    df, meta = dash.rsna_table(get_settings().rsna_eval_dir)
    assert len(df) == meta["n"] == 500  # the report half of the validation split
    assert dash.summarise(df)["mae_months"] == pytest.approx(meta["mae_months"], abs=0.01)
    with pytest.raises(dash.DashboardDataError, match="boneage evaluate"):
        dash.rsna_table(tmp_path)
    (tmp_path / "predictions.csv").write_text("a,b\n1,2\n")
    with pytest.raises(dash.DashboardDataError, match="not a"):
        dash.rsna_table(tmp_path)


def test_film_store_round_trip_is_lossless_and_refuses_bad_keys(tmp_path, fullres_films):
    film = read_film(fullres_films[0])
    store = FilmStore(tmp_path / "films")
    assert store.get(film.sha256) is None
    path = store.put(film.sha256, film.pixels)
    assert np.array_equal(store.get(film.sha256), film.pixels)
    assert store.put(film.sha256, film.pixels) == path and not list(path.parent.glob("*.part"))
    with pytest.raises(ValueError):
        store.path("../../etc/passwd")


def test_colour_pictures_are_refused_but_grey_films_saved_as_rgb_are_read(fullres_films):
    grey = read_film(fullres_films[0]).pixels
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert colourfulness(rgb) == 0

    def jpeg(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    assert np.abs(read_film(jpeg(rgb)).pixels.astype(int) - grey).mean() < 3
    with pytest.raises(NotARadiographError, match="colour picture"):
        read_film(jpeg(cv2.applyColorMap(grey, cv2.COLORMAP_JET)[:, :, ::-1].copy()))


def test_masks_cli_imports_a_manifest_and_lists_films_not_rejected(tmp_path, fullres_films, capsys):
    from boneage_core.cli import main
    from boneage_core.review.log import ReviewLog
    from boneage_core.segment.batch import preprocess_folder

    images = tmp_path / "films"
    images.mkdir()
    for p in fullres_films[:2]:
        (images / p.name).write_bytes(p.read_bytes())
    preprocess_folder(images, tmp_path / "pre", segmenter="classical", keep_names=True)
    manifest, db = tmp_path / "pre" / "manifest.csv", tmp_path / "review.sqlite"
    assert main(["masks", "import", str(manifest), "--db", str(db)]) == 0
    assert "2 new masks" in capsys.readouterr().out
    log = ReviewLog(db)
    first = log.mask_queue()[0]
    log.decide_mask(first, "rejected", reader="dr_a")
    rejected, _ = log.film_source(log.segmentation(first)["film_id"])
    assert main(["masks", "usable", str(manifest), "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert out.out.split() == sorted({p.stem for p in fullres_films[:2]} - {rejected})
    assert "1 of 2 films usable" in out.err
    assert main(["masks", "import", str(tmp_path / "nope.csv"), "--db", str(db)]) == 2
