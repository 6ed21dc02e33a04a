"""Batch preprocessing on real films: outputs, manifest, resume, and bad files that do not stop it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boneage_core.segment.batch import preprocess_folder
from boneage_core.segment.manifest import MANIFEST_FIELDS, ManifestWriter, read_manifest

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


@pytest.fixture
def film_folder(tmp_path: Path) -> Path:
    """Two real sample films (one without an extension), a corrupt JPEG, a text file posing as DICOM."""
    src = tmp_path / "films"
    src.mkdir()
    shutil.copy(SAMPLES / "7043.jpg", src / "7043.jpg")
    shutil.copy(SAMPLES / "3736.jpg", src / "3736")  # no extension: sniffed from the bytes
    (src / "broken.jpg").write_bytes((SAMPLES / "1858.jpg").read_bytes()[:300])
    (src / "notes.dcm").write_text("patient name: nobody\n")
    (src / "labels.csv").write_text("id,boneage,male\n7043,156,False\n")
    return src


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_preprocess_writes_masks_crops_manifest_and_resumes(film_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts = preprocess_folder(film_folder, out, segmenter="sam", keep_names=True)
    assert counts == {"skipped": 0, "ok": 2, "flagged": 0, "error": 2}
    rows = {r["id"]: r for r in _rows(out / "manifest.csv")}
    assert set(rows) == {"7043", "3736", "broken", "notes"}
    assert list(_rows(out / "manifest.csv")[0]) == MANIFEST_FIELDS
    for fid in ("7043", "3736"):
        r = rows[fid]
        assert r["status"] == "ok" and r["segmenter"] == "sam:vit_t" and len(r["sam_sha256"]) == 64
        film = np.asarray(Image.open(film_folder / ("7043.jpg" if fid == "7043" else "3736")))
        mask = np.asarray(Image.open(out / r["mask_path"]))
        assert mask.shape == film.shape[:2]  # original size: overlays the film
        assert set(np.unique(mask)) == {0, 255}
        crop = np.asarray(Image.open(out / r["crop_path"]))
        x0, y0, x1, y1 = (int(r[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        assert crop.shape == (y1 - y0, x1 - x0)
        # background removed: outside the mask the crop is black, inside it is the film
        m = mask[y0:y1, x0:x1] > 0
        assert crop[~m].max() == 0
        np.testing.assert_array_equal(crop[m], film[y0:y1, x0:x1][m])
        assert 0.5 < float(r["sam_iou"]) <= 1.1 and float(r["seconds"]) > 0
        assert r["pseudonym"] and r["input_sha256"] and "nobody" not in ",".join(r.values())
    assert rows["broken"]["status"] == "error" and "Unreadable" in rows["broken"]["error"]
    assert rows["notes"]["status"] == "error" and "text" in rows["notes"]["error"].lower()
    # resume: finished films are not redone, errors are retried
    again = preprocess_folder(film_folder, out, segmenter="sam", keep_names=True)
    assert again == {"skipped": 2, "ok": 0, "flagged": 0, "error": 2}
    assert len(_rows(out / "manifest.csv")) == 6
    # a deleted crop makes that film due again
    (out / rows["3736"]["crop_path"]).unlink()
    third = preprocess_folder(film_folder, out, segmenter="classical", keep_names=True)
    assert third["ok"] + third["flagged"] == 1 and third["skipped"] == 1
    assert read_manifest(out / "manifest.csv")["3736"]["segmenter"] == "classical"


def test_file_names_stay_out_of_the_outputs_and_every_entry_gets_a_row(tmp_path: Path) -> None:
    """Without --keep-names a name holding an MRN and a patient name is nowhere in the output folder
    (names of files, manifest, crops); a name that is not UTF-8, a folder, a named pipe and a looping
    link each get a row saying why, and a second run redoes only those."""
    src = tmp_path / "films"
    src.mkdir()
    phi = "4829173_Smith_Johnathan"
    shutil.copy(SAMPLES / "7043.jpg", src / f"{phi}.jpg")
    shutil.copy(SAMPLES / "3736.jpg", os.fsdecode(bytes(src) + b"/caf\xe9_\xff.jpg"))
    (src / "folder.dcm").mkdir()
    os.mkfifo(src / "pipe.dcm")
    (src / "loop.png").symlink_to(src / "loop.png")
    out = tmp_path / "out"
    counts = preprocess_folder(src, out, segmenter="classical")
    assert counts["ok"] + counts["flagged"] == 2 and counts["error"] == 3
    rows = _rows(out / "manifest.csv")
    assert len(rows) == 5 and all(len(r["id"]) == 16 for r in rows)
    errors = sorted(r["error"] for r in rows if r["status"] == "error")
    assert any("folder" in e for e in errors) and any("named pipe" in e for e in errors)
    assert any("link loop" in e for e in errors)
    for path in out.rglob("*"):
        assert "Smith" not in path.name and "4829173" not in path.name
        if path.is_file() and path.suffix == ".csv":
            text = path.read_text()
            assert "Smith" not in text and "4829173" not in text and "caf" not in text
    for r in rows:
        if r["status"] in ("ok", "flagged"):
            copy = np.asarray(Image.open(r["source"]))  # the decoded pixels, losslessly, named by the id
            assert Path(r["source"]).parent == (out / "films").resolve() and copy.shape == (
                int(r["height"]),
                int(r["width"]),
            )
    again = preprocess_folder(src, out, segmenter="classical")
    assert again == {"skipped": 2, "ok": 0, "flagged": 0, "error": 3}


def test_labels_select_ids_and_carry_truth(film_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts = preprocess_folder(film_folder, out, labels=film_folder / "labels.csv", segmenter="classical")
    assert counts["ok"] + counts["flagged"] == 1 and counts["error"] == 0
    row = read_manifest(out / "manifest.csv")["7043"]
    assert row["boneage"] == "156" and row["sex"] == "F"


def test_manifest_writer_drops_a_torn_last_row(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    with ManifestWriter(path) as w:
        w.write({"id": "a", "status": "ok", "package_version": "0"})
    with open(path, "a") as fh:
        fh.write("b,/x,ok,,crops/b.png")  # a crash in the middle of a row
    with ManifestWriter(path) as w:
        w.write({"id": "c", "status": "error", "package_version": "0"})
    assert list(read_manifest(path)) == ["a", "c"]
    assert path.read_text().count("\n") == 3


def test_cli_preprocess_runs_from_the_console_script(film_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    exe = Path(sys.executable).with_name("boneage")
    proc = subprocess.run(
        [
            str(exe),
            "preprocess",
            "--images",
            str(film_folder),
            "--out",
            str(out),
            "--segmenter",
            "classical",
            "--limit",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"error": 1' in proc.stdout  # broken.jpg is among the first three, recorded not fatal
    assert len(read_manifest(out / "manifest.csv")) == 3
