"""The DICOM node against a real PACS: a private Orthanc (``.ci/orthanc.sh``).

A film is uploaded to Orthanc (``POST /instances``), the node is registered there as a modality
(``PUT /modalities/boneage``) and Orthanc C-STOREs the film to it (``POST /modalities/boneage/store``);
the SR and the SC must come back into the film's study within two minutes, the SR's bone age equal to the
predictor's on that film; a reader's confirmation written to the log must bring the amended, verified SR
too. No identifier of the film may be in the node's log files, its spool's plain files or its output.

Skipped unless ``BONEAGE_TEST_ORTHANC`` (its HTTP root) and ``BONEAGE_TEST_ORTHANC_DICOM``
(``AET@HOST:PORT``) are set; with ``BONEAGE_REQUIRE_SERVERS=1`` a missing Orthanc fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from node_helpers import (
    dataset,
    free_port,
    hand_films,
    leaks,
    node_traces,
    sr_number,
    wait_until,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from boneage_core.films.read import read_film
from boneage_core.hospital.pacs.config import NodeConfig, parse_peer
from boneage_core.hospital.pacs.node import DicomNode
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.review.schema import TransferRow
from boneage_core.settings import REPO_ROOT

FAST_MODEL = REPO_ROOT / "assets" / "models" / "boneage-lite0-224.pt"


@pytest.fixture(scope="module")
def orthanc() -> tuple[str, str]:
    url, dicom = os.environ.get("BONEAGE_TEST_ORTHANC"), os.environ.get("BONEAGE_TEST_ORTHANC_DICOM")
    if not url or not dicom:
        if os.environ.get("BONEAGE_REQUIRE_SERVERS") == "1":
            pytest.fail(
                "BONEAGE_REQUIRE_SERVERS=1 but BONEAGE_TEST_ORTHANC(_DICOM) is not set: run .ci/orthanc.sh"
            )
        pytest.skip(
            "no Orthanc: set BONEAGE_TEST_ORTHANC and BONEAGE_TEST_ORTHANC_DICOM (eval $(.ci/orthanc.sh))"
        )
    import requests

    try:
        requests.get(f"{url}/system", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        if os.environ.get("BONEAGE_REQUIRE_SERVERS") == "1":
            pytest.fail(f"Orthanc at {url} does not answer: {exc}")
        pytest.skip(f"Orthanc at {url} does not answer: {exc}")
    return url.rstrip("/"), dicom


def _series(url: str, study: str) -> dict[str, list[str]]:
    """Modality -> instance ids of the study's series in Orthanc."""
    import requests

    out: dict[str, list[str]] = {}
    for s in requests.get(f"{url}/studies/{study}/series", timeout=10).json():
        out.setdefault(s["MainDicomTags"].get("Modality", ""), []).extend(s["Instances"])
    return out


def _file(url: str, instance: str):
    import requests

    return dataset(requests.get(f"{url}/instances/{instance}/file", timeout=30).content)


def test_orthanc_sends_a_film_and_gets_the_sr_the_sc_and_the_amended_sr(
    orthanc, review_db, rsna_train: Path, tmp_path: Path, caplog, capfd
) -> None:
    """On each database of the review log (SQLite, PostgreSQL)."""
    import requests

    from boneage_core.model.gate import QualityGate
    from boneage_core.model.predictor import BoneAgePredictor

    if not FAST_MODEL.is_file():
        pytest.skip(f"no {FAST_MODEL}")
    caplog.set_level("DEBUG")
    url, dicom = orthanc
    builder, items = hand_films(rsna_train, tmp_path / "films", n=1, patient="okafor")
    data = items[0][0]
    predictor = BoneAgePredictor(FAST_MODEL, tta=False)
    review = ReviewLog(review_db.location)
    service = ReadingService(review, predictor, None, gate=QualityGate())
    peer = parse_peer(dicom, name="orthanc")
    cfg = NodeConfig(
        port=free_port(),
        peers=(peer,),
        spool_dir=tmp_path / "spool",
        poll_s=0.5,
        backoff_s=1.0,
        backoff_max_s=5.0,
    )
    node = DicomNode(cfg, service)
    node.start()
    try:
        uploaded = requests.post(f"{url}/instances", data=data, timeout=30)
        uploaded.raise_for_status()
        instance, study = uploaded.json()["ID"], uploaded.json()["ParentStudy"]
        requests.put(
            f"{url}/modalities/boneage",
            json={"AET": cfg.ae_title, "Host": "127.0.0.1", "Port": node.port},
            timeout=10,
        ).raise_for_status()
        requests.post(
            f"{url}/modalities/boneage/store",
            json={"Resources": [instance], "Synchronous": True},
            timeout=120,
        ).raise_for_status()

        found = wait_until(
            lambda: (lambda s: s if s.get("SR") and s.get("OT") else None)(_series(url, study)), 120
        )
        sr = _file(url, found["SR"][0])
        expected = predictor.predict_film(read_film(data))
        assert sr_number(sr, "37362-1") == pytest.approx(expected.months, abs=1e-3)
        assert (
            sr.StudyInstanceUID == dataset(data).StudyInstanceUID and sr.PatientID == dataset(data).PatientID
        )
        sc = _file(url, found["OT"][0])
        assert sc.BurnedInAnnotation == "YES" and sc.StudyInstanceUID == sr.StudyInstanceUID

        with Session(
            review.engine
        ) as s:  # Orthanc sends its own encoding of the film: other bytes, same film
            (film_id,) = s.scalars(select(TransferRow.film_id).where(TransferRow.status == "received")).all()
        case = review.latest(film_id)
        review.add_reading(film_id, case.prediction_id, "radiologist1", 150.0, reason="the carpals say older")

        def amended():
            srs = [_file(url, i) for i in _series(url, study).get("SR", [])]
            return [d for d in srs if d.VerificationFlag == "VERIFIED"]

        (verified,) = wait_until(amended, 120, step=1.0)
        assert sr_number(verified, "37362-1") == pytest.approx(150.0)
        assert sr_number(verified, "MODEL-BA") == pytest.approx(expected.months, abs=1e-3)
        pred = verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert pred.ReferencedSOPInstanceUID == sr.SOPInstanceUID
    finally:
        node.stop()
        requests.delete(f"{url}/modalities/boneage", timeout=10)
    assert not leaks(builder.identifiers, node_traces(review, cfg.spool_dir, capfd, caplog))
