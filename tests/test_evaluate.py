"""Agreement metrics checked against a tiny table worked out by hand; label formats; folder evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import make_dicom

from boneage_core.evaluate.folder import evaluate_folder
from boneage_core.evaluate.metrics import agreement_metrics
from boneage_core.films.labels import LabelFormatError, parse_sex, read_label_table

# truth, predicted, male. Errors (pred - truth): +6, -10, 0, -10.
TABLE = [(100.0, 106.0, 1.0), (120.0, 110.0, 0.0), (60.0, 60.0, 1.0), (200.0, 190.0, 0.0)]


def test_metrics_match_hand_computation():
    t, p, m = zip(*TABLE, strict=True)
    got = agreement_metrics(t, p, m)
    # By hand: |e| = 6, 10, 0, 10 -> MAE 26/4; e^2 = 36, 100, 0, 100 -> RMSE sqrt(236/4);
    # bias -14/4; deviations from the bias 9.5, -6.5, 3.5, -6.5 -> SD sqrt(187/3).
    sd = math.sqrt(187 / 3)
    assert got["n"] == 4
    assert got["mae_months"] == pytest.approx(6.5)
    assert got["rmse_months"] == pytest.approx(math.sqrt(59))
    assert got["bias_months"] == pytest.approx(-3.5)
    assert got["sd_error_months"] == pytest.approx(sd)
    assert got["loa_lower_months"] == pytest.approx(-3.5 - 1.96 * sd)
    assert got["loa_upper_months"] == pytest.approx(-3.5 + 1.96 * sd)
    assert got["within_6_months"] == pytest.approx(0.5)  # |6| counts as within 6
    assert got["within_12_months"] == pytest.approx(1.0)
    assert got["median_abs_error_months"] == pytest.approx(8.0)
    assert got["by_sex"]["M"]["n"] == 2 and got["by_sex"]["M"]["mae_months"] == pytest.approx(3.0)
    assert got["by_sex"]["F"]["mae_months"] == pytest.approx(10.0)
    assert got["by_sex"]["F"]["bias_months"] == pytest.approx(-10.0)
    bands = got["by_age_band"]
    # 60 mo = 5 y, 100 mo = 8.3 y, 120 mo = 10 y (lower bound inclusive), 200 mo = 16.7 y.
    assert [bands[b]["n"] for b in ("0-2 y", "2-6 y", "6-10 y", "10-14 y", "14-20 y")] == [0, 1, 1, 1, 1]
    assert bands["10-14 y"]["mae_months"] == pytest.approx(10.0)


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(ValueError):
        agreement_metrics([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "text",
    [
        "id,boneage,male\n1398,120,False\n1858,84,True\n",
        "Case ID,Sex,Ground truth bone age (months)\n1398,F,120\n1858,M,84\n",
        "\ufeffCase ID,Sex,Ground truth bone age (months)\r\n1398,f,120.0\r\n1858,m,84.0\r\n",
    ],
)
def test_both_rsna_label_formats(tmp_path: Path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    rows = read_label_table(path)
    assert [(r.id, r.boneage, r.male) for r in rows] == [("1398", 120.0, 0.0), ("1858", 84.0, 1.0)]


def test_label_errors_are_clear(tmp_path: Path):
    path = tmp_path / "labels.csv"
    path.write_text("name,age\nx,1\n")
    with pytest.raises(LabelFormatError, match="need an id and a bone-age column"):
        read_label_table(path)
    path.write_text("id,boneage,male\n1,twelve,True\n")
    with pytest.raises(LabelFormatError, match=":2:"):
        read_label_table(path)
    assert parse_sex("") is None
    with pytest.raises(LabelFormatError):
        parse_sex("perhaps")


def test_evaluate_folder_mixed_formats_and_bad_files(tmp_path: Path, fullres_films, predictor):
    from PIL import Image

    from boneage_core.films.read import read_film

    images = tmp_path / "films"
    images.mkdir()
    src = {p.stem: p for p in fullres_films}
    with open(src["1398"].parent / "labels.csv") as f:
        labels = {r["id"]: r for r in csv.DictReader(f)}
    ids = ["1398", "1858", "3736", "7043"]
    (images / "1398.jpg").write_bytes(src["1398"].read_bytes())
    Image.open(src["1858"]).save(images / "1858.png")
    pixels = read_film(src["3736"]).pixels
    # A DICOM with no sex in the labels file: the header's PatientSex is used.
    (images / "3736.dcm").write_bytes(
        make_dicom(pixels, sex="M" if labels["3736"]["male"] == "True" else "F")
    )
    (images / "7043.jpg").write_bytes(src["7043"].read_bytes()[:5000])  # truncated JPEG
    (images / "notes.txt").write_text("not a film")
    gt = tmp_path / "gt.csv"
    with open(gt, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Case ID", "Sex", "Ground truth bone age (months)"])
        for i in ids + ["99999"]:
            sex = "" if i == "3736" else ("M" if labels.get(i, {"male": "True"})["male"] == "True" else "F")
            w.writerow([i, sex, labels.get(i, {"boneage": 100})["boneage"]])

    out = tmp_path / "eval"
    result = evaluate_folder(images, gt, out, predictor)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_unreadable"] == 1 and metrics["unreadable"] == ["7043"]
    assert metrics["missing"] == ["99999"]
    assert metrics["weights_sha256"] == predictor.weights_sha256
    with open(out / "predictions.csv") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"1398", "1858", "3736"}
    assert rows["3736"]["sex_source"] == "dicom" and rows["1398"]["sex_source"] == "given"
    for r in rows.values():
        assert float(r["error_months"]) == pytest.approx(
            float(r["predicted_months"]) - float(r["truth_months"]), abs=0.02
        )
        assert r["model_version"] == predictor.version
    # metrics.json agrees with predictions.csv
    errors = np.array([float(r["error_months"]) for r in rows.values()])
    assert metrics["mae_months"] == pytest.approx(np.abs(errors).mean(), abs=1e-6)
    assert len(result.predictions) == 3


def test_compare_predictions_paired_bootstrap(tmp_path):
    from boneage_core.evaluate.compare import compare_predictions

    rng = np.random.default_rng(1)
    truth = rng.uniform(10, 220, 200).round(1)
    a = truth + rng.normal(0, 8, 200)
    b = truth + rng.normal(0, 4, 200)
    for name, pred in (("a", a), ("b", b)):
        rows = ["id,truth_months,predicted_months"] + [
            f"{i},{t},{p}" for i, (t, p) in enumerate(zip(truth, pred, strict=True))
        ]
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    r = compare_predictions(tmp_path / "a.csv", tmp_path / "b.csv", n_boot=2000)
    assert r["n"] == 200
    assert r["mae_a"] == pytest.approx(np.abs(a - truth).mean()) and r["mae_b"] == pytest.approx(
        np.abs(b - truth).mean()
    )
    lo, hi = r["ci95"]
    assert lo < r["mae_diff_b_minus_a"] < hi < 0  # b is clearly better
    same = compare_predictions(tmp_path / "a.csv", tmp_path / "a.csv", n_boot=200)
    assert same["mae_diff_b_minus_a"] == 0 and same["ci95"] == [0, 0]


def test_calibrate_writes_the_interval_and_keeps_the_weights(tmp_path: Path, rsna_train: Path, capsys):
    """`boneage calibrate` on 24 real films: the interval refits from the predictions it wrote to
    ``--outputs``, the weights (and their sha256) are the input's, and too few films is a clear error."""
    from label_subsets import first_labels

    from boneage_core.cli import main
    from boneage_core.model.checkpoint import load_checkpoint
    from boneage_core.model.intervals import conformal_quantile

    model = Path(__file__).resolve().parents[1] / "assets/models/boneage-lite0-224.pt"
    labels = tmp_path / "tune.csv"
    first_labels(rsna_train, labels, 24)
    out, outputs = tmp_path / "calibrated.pt", tmp_path / "calibration"
    argv = [
        "calibrate",
        "--model",
        str(model),
        "--images",
        str(rsna_train / "images"),
        "--labels",
        str(labels),
    ]
    assert main(argv + ["--out", str(out), "--outputs", str(outputs), "--device", "cpu"]) == 0

    before, after = load_checkpoint(model), load_checkpoint(out)
    assert after.weights_sha256 == before.weights_sha256
    cal = after.meta.validation["interval"]
    assert cal["n"] == 24 and cal["level"] == 0.9 and cal["labels"] == str(labels)
    with open(outputs / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and not (tmp_path / "calibrated.pt.calibration").exists()
    err = np.array([abs(float(r["predicted_months"]) - float(r["truth_months"])) for r in rows])
    spread = np.array([float(r["view_sd_months"]) for r in rows])
    scores = err if cal["method"] == "absolute" else err / (spread + cal["eps"])
    # The CSV rounds to 0.01 month: the quantile refit from it agrees to that.
    assert cal["q"] == pytest.approx(conformal_quantile(scores, 0.9), abs=0.02)
    half = cal["q"] * (1.0 if cal["method"] == "absolute" else spread + cal["eps"])
    assert cal["tune_coverage"] == pytest.approx(np.mean(err <= half), abs=1 / 24 + 1e-9)

    few = tmp_path / "few.csv"
    first_labels(rsna_train, few, 8)
    argv = ["calibrate", "--model", str(model), "--images", str(rsna_train / "images"), "--labels", str(few)]
    assert main(argv + ["--out", str(tmp_path / "few.pt"), "--device", "cpu"]) == 2
    assert "needs at least 20 readable labelled films" in capsys.readouterr().err
    assert not (tmp_path / "few.pt").exists()
