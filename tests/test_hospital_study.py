"""Issue 14's walk end to end: a nested DICOM archive of real films (another scanner's look, names and IDs
in the headers) is imported, two readers read part of it blinded with a bias of their own, and
``boneage adapt --from-log`` gives a model that on the cases nobody fitted on is closer to the hospital's
readers than the base model.

The base is the shipped single 224-px model (fast on 2 cores); the films are RSNA validation films of the
report half, which no choice of the shipped models was tuned on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import make_dicom
from PIL import Image

from boneage_core.cli import main
from boneage_core.review.log import ReviewLog
from boneage_core.review.verify import verify_log

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "models" / "boneage-lite0-224.pt"
REPORT = ROOT / "configs" / "splits" / "rsna-val-report.csv"
N_FIT, N_HELD_OUT = 30, 20
#: The hospital's readers read older than RSNA's: +10 months for girls, +6 for boys, plus their own noise.
BIAS = {"F": 10.0, "M": 6.0}

pytestmark = pytest.mark.slow


def _reader_age(truth: float, sex: str, reader: int, i: int) -> float:
    wobble = ((i * 7 + reader * 3) % 5 - 2) * 1.0  # -2..+2 months, fixed
    return float(np.clip(truth + BIAS[sex] + wobble, 0, 240))


@pytest.fixture(scope="module")
def site(tmp_path_factory, rsna_train):
    if not BASE.is_file():
        pytest.skip(f"no {BASE}")
    rows = list(csv.DictReader(REPORT.open()))[: N_FIT + N_HELD_OUT]
    root = tmp_path_factory.mktemp("site")
    archive = root / "archive"
    truth = {}
    for i, r in enumerate(rows):
        pixels = np.asarray(Image.open(rsna_train / "images" / f"{r['id']}.jpg").convert("L"))
        sex = "M" if r["male"].strip().lower() == "true" else "F"
        twelve = pixels.astype(np.uint16) * 16 + (pixels >> 4)
        data = make_dicom(
            (4095 - twelve).astype(np.uint16),
            photometric="MONOCHROME1",
            bits_stored=12,
            sex=sex,
            patient_name=f"PATIENT^NUMBER{i:03d}",
            patient_id=f"H-{900000 + i}",
        )
        folder = archive / f"PATIENT{i:03d}_H-{900000 + i}" / "STUDY1" / "SERIES1"
        folder.mkdir(parents=True)
        (folder / "IM0001").write_bytes(data)  # no extension, as exports are
        truth[r["id"]] = (float(r["boneage"]), sex, data)
    db = root / "data" / "review.sqlite"
    rc = main(["import", str(archive), "--db", str(db), "--segmenter", "classical", "--model", str(BASE)])
    assert rc == 0
    return root, db, rows, truth


def test_import_read_blinded_adapt_and_the_held_out_cases_are_closer_to_the_readers(site):
    import hashlib

    root, db, rows, truth = site
    log = ReviewLog(db)
    cases = {c.sha256: c for c in log.cases()}
    assert len(cases) == N_FIT + N_HELD_OUT  # every film imported, none twice
    stored = db.read_bytes()
    assert b"PATIENT^NUMBER" not in stored and b"H-9000" not in stored

    # two readers read the first N_FIT cases blinded (as the Worklist's study mode records them)
    for i, r in enumerate(rows[:N_FIT]):
        boneage, sex, data = truth[r["id"]]
        case = cases[hashlib.sha256(data).hexdigest()]
        for reader in (1, 2):
            log.add_reading(
                case.film_id,
                case.prediction_id,
                f"dr_{reader}",
                _reader_age(boneage, sex, reader, i),
                study="site-study",
                blinded=True,
            )
    assert verify_log(db).ok

    out = root / "site.pt"
    assert (
        main(
            [
                "adapt",
                "--from-log",
                "--db",
                str(db),
                "--study",
                "site-study",
                "--out",
                str(out),
                "--model",
                str(BASE),
            ]
        )
        == 0
    )
    meta = json.loads((root / "site.pt.adapt" / "adaptation.json").read_text())
    assert meta["n"] == N_FIT and meta["reference"]["study"] == "site-study"
    cv = meta["cv"]
    print(
        f"adapted ({meta['method']}) on {N_FIT} cases: 5-fold CV MAE {cv['before']['mae_months']:.2f} -> {cv['after']['mae_months']:.2f}"
    )

    # the held-out cases, against the hospital readers' reading (their mean: truth + bias)
    held = root / "held-out"
    held.mkdir()
    with (held / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "boneage", "male"])
        for i, r in enumerate(rows[N_FIT:], start=N_FIT):
            boneage, sex, data = truth[r["id"]]
            (held / f"{r['id']}.dcm").write_bytes(data)
            reading = np.mean([_reader_age(boneage, sex, k, i) for k in (1, 2)])
            w.writerow([r["id"], f"{reading:.2f}", sex == "M"])
    figures = {}
    for name, model in (("base", BASE), ("adapted", out)):
        dest = root / f"eval-{name}"
        assert (
            main(
                [
                    "evaluate",
                    "--images",
                    str(held),
                    "--labels",
                    str(held / "labels.csv"),
                    "--out",
                    str(dest),
                    "--model",
                    str(model),
                ]
            )
            == 0
        )
        figures[name] = json.loads((dest / "metrics.json").read_text())
    base, adapted = figures["base"], figures["adapted"]
    mae = lambda m: m.get("mae_months", m.get("overall", {}).get("mae_months"))  # noqa: E731
    bias = lambda m: m.get("bias_months", m.get("overall", {}).get("bias_months"))  # noqa: E731
    print(
        f"held-out {N_HELD_OUT}: MAE {mae(base):.2f} -> {mae(adapted):.2f}, bias {bias(base):+.2f} -> {bias(adapted):+.2f}"
    )
    assert mae(adapted) < mae(base)
    assert abs(bias(adapted)) < abs(bias(base))
