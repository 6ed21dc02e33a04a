"""The DICOM node (``boneage dicom-node``): configuration, the encrypted spool, the SR and SC it builds,
and the node itself on a free port, driven by pynetdicom and dcmtk (``echoscu``, ``storescu``) with a
pynetdicom Storage SCP as the PACS: C-ECHO, films stored, other SOP classes and body parts refused,
hostile data survived, a peer that is down (failed, retried, sent after a restart), a full queue, the
reader's confirmation sent back as an amended SR once, and no identifier of the films anywhere but in
what goes back to the PACS.

Real films (``../shared/data/rsna-train``) with a real header's identifiers (:mod:`hospital_fixtures`),
the single shipped model without TTA, classical masks (what is tested is the node, not the model).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from node_helpers import (
    Destination,
    dataset,
    free_port,
    hand_films,
    leaks,
    log_files,
    node_traces,
    plain_spool_files,
    sr_items,
    sr_number,
    sr_text,
    wait_until,
)
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.orm import Session

from boneage_core.films.read import read_film
from boneage_core.hospital.pacs.config import (
    NodeConfig,
    NodeConfigError,
    Peer,
    from_dict,
    load_config,
    parse_peer,
)
from boneage_core.hospital.pacs.node import DicomNode
from boneage_core.hospital.pacs.objects import SC_DESCRIPTION, build_sr
from boneage_core.hospital.pacs.vault import SpoolError, Vault, return_header
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.review.schema import TransferRow
from boneage_core.review.verify import verify_log
from boneage_core.settings import REPO_ROOT

FAST_MODEL = REPO_ROOT / "assets" / "models" / "boneage-lite0-224.pt"
NOTICE = "research use, not for diagnosis"


# ------------------------------------------------------------------------------------------ configuration


def test_the_shipped_config_loads_and_the_command_line_overrides_it() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "dicom-node.yaml")
    assert (cfg.ae_title, cfg.port, cfg.send_back, cfg.refuse_flags) == (
        "BONEAGE",
        11112,
        ("sr", "sc"),
        ("not_hand",),
    )
    assert [p.address for p in cfg.targets()] == ["ORTHANC@127.0.0.1:4242"]
    over = load_config(
        REPO_ROOT / "configs" / "dicom-node.yaml", port=11113, ae_title="NODE2", send_to="PACS@10.1.2.3:104"
    )
    assert (over.port, over.ae_title, [p.address for p in over.targets()]) == (
        11113,
        "NODE2",
        ["PACS@10.1.2.3:104"],
    )
    assert load_config(None) == NodeConfig()


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"port": 0}, "port"),
        ({"port": "104"}, "port"),
        ({"ae_title": "A" * 17}, "ae_title"),
        ({"ae_title": "A\\B"}, "ae_title"),
        ({"peers": [{"name": "p", "ae_title": "P", "host": "h"}]}, r"peers\[0\]: port is missing"),
        ({"peers": [{"name": "p", "ae_title": "P", "host": "h", "port": 70000}]}, r"peers\[0\].port"),
        ({"peers": [{"name": "p", "ae_title": "P", "host": "h", "port": 1, "user": "x"}]}, "unknown key"),
        ({"send_to": ["nowhere"]}, "send_to: no peer named nowhere"),
        ({"send_back": ["pdf"]}, "send_back"),
        ({"refuse_flags": ["blurry"]}, "refuse_flags"),
        ({"queue_size": 0}, "queue_size"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"backoff_s": -1}, "backoff_s"),
        ({"retention_days": 0}, "retention_days"),
        ({"require_called_ae": "yes"}, "require_called_ae"),
        ({"segmenter": "magic"}, "segmenter"),
        ({"allowed_calling_aes": ["OK", "X" * 20]}, "allowed_calling_aes"),
        ({"colour": "red"}, "unknown setting"),
    ],
)
def test_config_errors_name_the_key(raw: dict, says: str) -> None:
    with pytest.raises(NodeConfigError, match=says):
        from_dict(raw)


def test_config_files_and_peers_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- port: 1\n")
    (tmp_path / "bad.yaml").write_text("port: [\n")
    with pytest.raises(NodeConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(NodeConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(NodeConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(NodeConfigError, match="AET@HOST:PORT"):
        parse_peer("PACS:104")
    assert parse_peer("PACS@pacs.example:104") == Peer("cli", "PACS", "pacs.example", 104)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fast_parts():
    from boneage_core.model.gate import QualityGate
    from boneage_core.model.predictor import BoneAgePredictor

    if not FAST_MODEL.is_file():
        pytest.skip(f"no {FAST_MODEL}")
    return BoneAgePredictor(FAST_MODEL, tta=False), QualityGate()


@pytest.fixture(scope="module")
def films(rsna_train: Path, tmp_path_factory):
    """``(builder, [(bytes, label)])``: three real films with a real header (``builder.identifiers``)."""
    return hand_films(rsna_train, tmp_path_factory.mktemp("films"), n=3)


@pytest.fixture()
def site(tmp_path: Path, fast_parts) -> ReadingService:
    predictor, gate = fast_parts
    return ReadingService(ReviewLog(tmp_path / "data" / "review.sqlite"), predictor, None, gate=gate)


def _cfg(tmp_path: Path, dest_port: int, **kw) -> NodeConfig:
    base = NodeConfig(
        port=0,
        peers=(Peer("dest", "DEST", "127.0.0.1", dest_port),),
        spool_dir=tmp_path / "spool",
        backoff_s=0.3,
        backoff_max_s=0.6,
        max_attempts=20,
        poll_s=0.3,
        queue_size=4,
    )
    return replace(base, **kw)


def _rows(review: ReviewLog, **where) -> list[TransferRow]:
    with Session(review.engine) as s:
        q = select(TransferRow).order_by(TransferRow.id)
        for key, value in where.items():
            q = q.where(getattr(TransferRow, key) == value)
        return list(s.scalars(q))


# ------------------------------------------------------------------------------------------ the spool


def test_the_return_header_is_kept_encrypted_and_read_back(tmp_path: Path, films) -> None:
    builder, items = films
    ds = dataset(items[0][0])
    vault = Vault(tmp_path / "spool")
    header = return_header(ds)
    assert "PixelData" not in header and "InstitutionName" not in header  # the minimal subset only
    vault.put_header("ab" * 32, header, {"sop_instance_uid": str(ds.SOPInstanceUID)})
    vault.put_incoming(items[0][0])
    vault.put_job({"kind": "sr", "film_id": 1}, items[0][0])
    files = {str(p): p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file()}
    assert len(files) == 4 and not leaks(builder.identifiers, files)
    assert all((p.stat().st_mode & 0o077) == 0 for p in (tmp_path / "spool").rglob("*"))
    back, last = vault.get_header("ab" * 32)
    assert back.PatientID == ds.PatientID and back.StudyInstanceUID == ds.StudyInstanceUID
    assert last == {"sop_instance_uid": str(ds.SOPInstanceUID)}
    path = vault.header_path("ab" * 32)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(SpoolError):
        vault.get_header("ab" * 32)
    assert vault.purge(90, now=time.time() + 91 * 86400) == 1 and vault.get_header("ab" * 32) is None


# ------------------------------------------------------------------------------------------ SR and SC


def test_the_sr_and_the_sc_are_in_the_films_study(tmp_path: Path, site: ReadingService, films) -> None:
    data = films[1][1][0]
    ds = dataset(data)
    analysis = site.analyse(data, origin="dicom-node")
    expected = site.predictor.predict_film(read_film(data))
    header = return_header(ds)
    sr = dataset(build_sr(header, analysis.case, manufacturer="boneage-core").data)
    assert sr.Modality == "SR" and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert (sr.StudyInstanceUID, sr.PatientID, sr.PatientName) == (
        ds.StudyInstanceUID,
        ds.PatientID,
        ds.PatientName,
    )
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID
    assert sr_number(sr, "37362-1") == pytest.approx(expected.months, abs=1e-3)
    assert sr_items(sr)["37362-1"].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mo"
    if expected.interval_low_months is None:  # a model without an interval calibration: none invented
        assert "BA-LOW" not in sr_items(sr) and "BA-HIGH" not in sr_items(sr)
    else:
        assert sr_number(sr, "BA-LOW") == pytest.approx(expected.interval_low_months, abs=1e-3)
        assert sr_number(sr, "BA-HIGH") == pytest.approx(expected.interval_high_months, abs=1e-3)
    assert sr_number(sr, "30525-0") == pytest.approx(analysis.film.meta.chronological_age_months, abs=1e-3)
    assert {"GP-SD", "Z", "CATEGORY", "QUALITY-FLAGS"} <= set(sr_items(sr))
    assert sr_text(sr, "MODEL-VERSION") == site.predictor.version
    assert sr_text(sr, "WEIGHTS-SHA256") == site.predictor.weights_sha256
    assert sr_text(sr, "PREPROCESS").startswith(site.predictor.preprocess_tag)
    ref = sr_items(sr)["121112"].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert sr.VerificationFlag == "UNVERIFIED"
    if shutil.which("dsrdump"):  # dcmtk reads it as a valid SR document
        (tmp_path / "sr.dcm").write_bytes(build_sr(header, analysis.case, manufacturer="boneage-core").data)
        dumped = subprocess.run(
            ["dsrdump", str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=60
        )
        assert dumped.returncode == 0 and "Bone age" in dumped.stdout, dumped.stderr

    node = DicomNode(_cfg(tmp_path, 1), site, heatmap=True)
    sc = dataset(node._sc(header, analysis).data)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.BurnedInAnnotation == "YES"
    assert sc.StudyInstanceUID == ds.StudyInstanceUID and sc.PatientID == ds.PatientID
    assert sc.SeriesDescription == SC_DESCRIPTION and NOTICE in sc.SeriesDescription
    rgb = sc.pixel_array
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    assert (rgb[: rgb.shape[0] // 8] == 255).all(axis=2).any()  # the burned-in notice, white on the film


# ------------------------------------------------------------------------------------------ the node


def _store(port: int, datasets, called: str = "BONEAGE") -> list[int]:
    """C-STORE each dataset (or file path) in one association; the statuses."""
    ae = AE("TESTSCU")
    for ds in datasets:
        syntax = (
            ds.file_meta.TransferSyntaxUID
            if hasattr(ds, "file_meta")
            else pydicom.dcmread(ds).file_meta.TransferSyntaxUID
        )
        sop = (
            ds.SOPClassUID
            if hasattr(ds, "SOPClassUID")
            else pydicom.dcmread(ds, stop_before_pixels=True).SOPClassUID
        )
        ae.add_requested_context(sop, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def _dcmtk(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        pytest.skip(f"dcmtk's {args[0]} is not installed")
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_the_node_reads_films_sends_back_retries_and_amends(
    tmp_path: Path, site: ReadingService, films, caplog, capfd
) -> None:
    from dicom_fixtures import make_dicom
    from pydicom.uid import CTImageStorage

    from boneage_core.hospital.pacs.receiver import CANNOT_UNDERSTAND

    caplog.set_level("DEBUG")
    builder, items = films
    review = site.log
    dest_port = free_port()
    cfg = _cfg(tmp_path, dest_port)
    film = tmp_path / "film.dcm"
    film.write_bytes(items[0][0])
    node = DicomNode(cfg, site, heatmap=False)
    node.start()
    try:
        port = str(node.port)
        assert _dcmtk("echoscu", "-aec", "BONEAGE", "127.0.0.1", port).returncode == 0
        assert _dcmtk("echoscu", "-aec", "SOMEONE", "127.0.0.1", port).returncode != 0  # wrong called AE
        stored = _dcmtk("storescu", "-aec", "BONEAGE", "127.0.0.1", port, str(film))
        assert stored.returncode == 0, stored.stderr
        # the peer is down: the report fails, and is retried
        wait_until(lambda: len(_rows(review, kind="sr", status="failed")) >= 2, 90)

        # a CT image: its SOP class is refused at negotiation
        ct = make_dicom(dataset(items[0][0]).pixel_array, modality="CT", sop_class=CTImageStorage)
        ae = AE("TESTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="BONEAGE")
        assert not assoc.is_established  # no context accepted: pynetdicom's requestor aborts
        (tmp_path / "ct.dcm").write_bytes(ct)
        assert (
            _dcmtk("storescu", "-aec", "BONEAGE", "127.0.0.1", port, str(tmp_path / "ct.dcm")).returncode != 0
        )
        # a chest CR: refused with a status; a truncated file: accepted, then fails in the worker
        chest = dataset(make_dicom(dataset(items[0][0]).pixel_array, body_part="CHEST"))
        truncated = tmp_path / "truncated.dcm"
        truncated.write_bytes(items[2][0][: len(items[2][0]) * 2 // 3])
        assert _store(node.port, [chest, str(truncated)]) == [CANNOT_UNDERSTAND, 0x0000]
        wait_until(lambda: _rows(review, direction="received", status="failed"), 60)
        assert _dcmtk("echoscu", "-aec", "BONEAGE", "127.0.0.1", port).returncode == 0  # still up
    finally:
        node.stop()

    # a restart with the peer up: the outbox is sent, the attempts counted on
    dest = Destination().start(dest_port)
    node = DicomNode(cfg, site, heatmap=False)
    node.start()
    try:
        wait_until(lambda: dest.of("SR") and dest.of("OT"), 90)
        assert node.wait_idle(60)
        sr = dest.of("SR")[0]
        source = dataset(items[0][0])
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
        assert sr_number(sr, "37362-1") == pytest.approx(
            site.predictor.predict_film(read_film(items[0][0])).months, abs=1e-3
        )
        sent = _rows(review, kind="sr")
        assert [r.status for r in sent][-1] == "sent" and sent[-1].attempt >= 3
        assert [r.status for r in sent].count("sent") == 1 and all(r.status == "failed" for r in sent[:-1])
        assert all(r.reason.startswith("association:") or r.reason.startswith("network:") for r in sent[:-1])

        # the reader confirms: an amended, verified SR, its predecessor the first report
        (received,) = _rows(review, direction="received", status="received")
        case = review.latest(received.film_id)
        reading_id = review.add_reading(received.film_id, case.prediction_id, "alice")
        amended = wait_until(lambda: [d for d in dest.of("SR") if d.VerificationFlag == "VERIFIED"], 60)[0]
        assert amended.StudyInstanceUID == source.StudyInstanceUID
        assert sr_number(amended, "37362-1") == pytest.approx(case.predicted_months, abs=1e-3)
        assert sr_text(amended, "READER-ACTION") == "confirmed"
        assert str(amended.VerifyingObserverSequence[0].VerifyingObserverName) == "alice^"
        pred = amended.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert pred.ReferencedSOPInstanceUID == sr.SOPInstanceUID
        assert node.wait_idle(30)
        (row,) = _rows(review, kind="sr-amended")
        assert (row.status, row.reading_id) == ("sent", reading_id)
    finally:
        node.stop()
        dest.stop()

    again = DicomNode(cfg, site, heatmap=False)  # a restart sends nothing twice
    assert again.poll_readings() == 0 and not again.vault.jobs()
    skipped = _rows(review, direction="received", status="skipped")
    assert [r.reason.split(":")[0] for r in skipped] == ["not-hand-body-part"]
    assert verify_log(review.path).ok
    assert not leaks(builder.identifiers, node_traces(review, cfg.spool_dir, capfd, caplog))


def test_a_full_queue_answers_out_of_resources(tmp_path: Path, site: ReadingService, films) -> None:
    builder, items = films
    hold = threading.Event()
    analyse = site.analyse

    def slow(*args, **kw):  # the worker busy on the first film while two more arrive
        hold.wait(60)
        return analyse(*args, **kw)

    site.analyse = slow
    node = DicomNode(_cfg(tmp_path, free_port(), queue_size=1, send_back=()), site, heatmap=False)
    node.start()
    try:
        first = _store(node.port, [dataset(items[0][0])])
        wait_until(lambda: not node.inbox.qsize(), 10)
        time.sleep(0.3)
        assert first + _store(node.port, [dataset(d) for d, _ in items[1:]]) == [0x0000, 0x0000, 0xA700]
        hold.set()
        assert node.wait_idle(90)
    finally:
        hold.set()
        node.stop()
    (full,) = _rows(site.log, status="skipped")
    assert full.reason.startswith("queue-full: 0xA700")
    assert len(_rows(site.log, status="received")) == 2


def test_the_command_line_node_prints_no_identifier(tmp_path: Path, films, fast_parts) -> None:
    """``boneage dicom-node`` as a process: a film stored with dcmtk, the SR back at the destination,
    SIGTERM; nothing identifying on its stdout or stderr, nor in the log's files."""
    builder, items = films
    dest_port, port = free_port(), free_port()
    config = tmp_path / "node.yaml"
    config.write_text(
        f"port: {port}\npeers: [{{name: dest, ae_title: DEST, host: 127.0.0.1, port: {dest_port}}}]\n"
        f"send_back: [sr]\nsegmenter: classical\nmodel: {FAST_MODEL}\ntta: false\nspool_dir: {tmp_path / 'spool'}\n"
    )
    db = tmp_path / "data" / "review.sqlite"
    env = {**os.environ, "BONEAGE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BONEAGE_REVIEW_DB", None)
    dest = Destination().start(dest_port)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "boneage_core.cli",
            "dicom-node",
            "--config",
            str(config),
            "--db",
            str(db),
            "--no-heatmap",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        film = tmp_path / "film.dcm"
        film.write_bytes(items[1][0])

        def stored() -> bool:
            return _dcmtk("storescu", "-aec", "BONEAGE", "127.0.0.1", str(port), str(film)).returncode == 0

        wait_until(stored, 120, step=1.0)
        wait_until(lambda: dest.of("SR"), 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        dest.stop()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b"dicom-node: BONEAGE on" in out
    assert dest.of("SR")[0].StudyInstanceUID == dataset(items[1][0]).StudyInstanceUID
    blobs = {"stdout": out, "stderr": err, **log_files(db), **plain_spool_files(tmp_path / "spool")}
    assert not leaks(builder.identifiers, blobs)


def test_a_film_spooled_before_a_restart_is_read_after_it(
    tmp_path: Path, site: ReadingService, films
) -> None:
    """A film received (spooled) but not read when the node stopped is read by the next run."""
    builder, items = films
    dest_port = free_port()
    cfg = _cfg(tmp_path, dest_port, send_back=("sr",))
    Vault(cfg.spool_dir).put_incoming(b'{"peer": "TESTSCU@127.0.0.1:1", "sop_key": null}\n' + items[2][0])
    dest = Destination().start(dest_port)
    node = DicomNode(cfg, site, heatmap=False)
    node.start()
    try:
        sr = wait_until(lambda: dest.of("SR"), 90)[0]
        assert sr.StudyInstanceUID == dataset(items[2][0]).StudyInstanceUID
        assert node.wait_idle(30) and not node.vault.incoming()
    finally:
        node.stop()
        dest.stop()


def test_the_common_transfer_syntaxes_are_accepted_and_read(
    tmp_path: Path, site: ReadingService, films
) -> None:
    """The same film in implicit VR, deflate, JPEG baseline, JPEG lossless, JPEG-LS and JPEG 2000: each
    accepted in its own syntax (no transcoding by the sender) and read onto the worklist."""
    from dicom_fixtures import make_dicom
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
    )

    pixels = dataset(films[1][1][0]).pixel_array[:298, :298].copy()  # GDCM's baseline JPEG wants even sides
    encoded = [
        dataset(make_dicom(pixels, transfer_syntax=ts))
        for ts in (
            ImplicitVRLittleEndian,
            JPEGBaseline8Bit,
            JPEGLosslessSV1,
            JPEGLSLossless,
            JPEG2000Lossless,
        )
    ]
    deflated = dataset(make_dicom(pixels))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    deflated.save_as(buf, enforce_file_format=True)
    encoded.append(dataset(buf.getvalue()))
    node = DicomNode(_cfg(tmp_path, free_port(), send_back=(), queue_size=8), site, heatmap=False)
    node.start()
    try:
        ae = AE("TESTSCU")
        for ds in encoded:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="BONEAGE")
        syntaxes = {c.transfer_syntax[0] for c in assoc.accepted_contexts}
        assert syntaxes == {ds.file_meta.TransferSyntaxUID for ds in encoded}
        assert [assoc.send_c_store(ds).Status for ds in encoded] == [0x0000] * len(encoded)
        assoc.release()
        assert node.wait_idle(120)
    finally:
        node.stop()
    rows = _rows(site.log, direction="received")
    assert [r.status for r in rows] == ["received"] * len(encoded), [r.reason for r in rows]


def test_only_the_allowed_callers_may_associate(tmp_path: Path, site: ReadingService) -> None:
    node = DicomNode(_cfg(tmp_path, free_port(), allowed_calling_aes=("PACS",)), site, heatmap=False)
    node.start()
    try:
        port = str(node.port)
        assert _dcmtk("echoscu", "-aet", "PACS", "-aec", "BONEAGE", "127.0.0.1", port).returncode == 0
        assert _dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "BONEAGE", "127.0.0.1", port).returncode != 0
    finally:
        node.stop()


def test_a_send_that_keeps_failing_is_abandoned(tmp_path: Path, films) -> None:
    """Every attempt is a row: failed, failed, then abandoned; the job leaves the outbox."""
    from boneage_core.hospital.pacs.objects import Sent
    from boneage_core.hospital.pacs.sender import Sender

    data = films[1][0][0]
    ds = dataset(data)
    review = ReviewLog(tmp_path / "data" / "review.sqlite")
    cfg = _cfg(tmp_path, free_port(), max_attempts=2, backoff_s=0.01)
    sender = Sender(cfg, Vault(cfg.spool_dir), review)
    sent = Sent(
        data, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
    )
    sender.queue("sc", sent, cfg.peers[0], film_id=None)
    assert sender.run_due() == 1
    time.sleep(0.05)
    assert sender.run_due() == 1 and sender.run_due() == 0
    rows = _rows(review)
    assert [(r.status, r.attempt) for r in rows] == [("failed", 1), ("failed", 2), ("abandoned", 2)]
    assert rows[0].peer == cfg.peers[0].address and not sender.vault.jobs()


def test_two_app_processes_and_the_node_write_at_once_without_lost_rows(
    review_db, rsna_train: Path, tmp_path: Path, fast_parts
) -> None:
    """On each database: two other processes append films, estimates and readings (as two app processes
    would) while the node receives six films over DICOM, analyses them and sends their reports."""
    from test_review_databases import _WRITER

    predictor, gate = fast_parts
    review = ReviewLog(review_db.location)
    site = ReadingService(review, predictor, None, gate=gate)
    _, items = hand_films(rsna_train, tmp_path / "films", n=6)
    dest_port = free_port()
    dest = Destination().start(dest_port)
    node = DicomNode(_cfg(tmp_path, dest_port, send_back=("sr",), queue_size=8), site, heatmap=False)
    node.start()
    n = 10
    tests = str(Path(__file__).parent)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, review_db.location, name, tests, str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("app_a", "app_b")
    ]
    try:
        assert _store(node.port, [dataset(data) for data, _ in items]) == [0x0000] * 6
        for p in writers:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
        wait_until(lambda: len(dest.of("SR")) == 6, 300, step=0.5)
    finally:
        node.stop()
        dest.stop()
    assert len(_rows(review, direction="received", status="received")) == 6
    assert len(_rows(review, kind="sr", status="sent")) == 6
    assert len(review.cases()) == 6 + 2 * n
    assert sorted(r["reader"] for r in review.readings()) == ["app_a"] * n + ["app_b"] * n
    report = verify_log(review.target)
    assert report.ok, report.lines()
    review.close()


def test_the_same_instance_sent_twice_is_answered_once(tmp_path: Path, site: ReadingService, films) -> None:
    """A PACS re-sending an instance (the same SOPInstanceUID, even re-encoded) gets no second report."""
    _, items = films
    dest_port = free_port()
    dest = Destination().start(dest_port)
    node = DicomNode(_cfg(tmp_path, dest_port, send_back=("sr",)), site, heatmap=False)
    node.start()
    try:
        film = dataset(items[1][0])
        assert _store(node.port, [film]) == [0x0000]
        wait_until(lambda: len(dest.of("SR")) == 1, 120)
        assert _store(node.port, [film]) == [0x0000]
        wait_until(lambda: _rows(site.log, direction="received", status="skipped"), 60)
        time.sleep(1.0)
    finally:
        node.stop()
        dest.stop()
    assert len(dest.of("SR")) == 1
    (skipped,) = _rows(site.log, direction="received", status="skipped")
    assert skipped.reason.startswith("duplicate-sop") and skipped.sop_key
    assert len(_rows(site.log, direction="received", status="received")) == 1
