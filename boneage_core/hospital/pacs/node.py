"""``boneage dicom-node``: the node itself, its worker, its readings poller, and the command.

    node = DicomNode(load_config(Path("configs/dicom-node.yaml")), service)   # a ReadingService
    node.start()          # SCP listening, worker, sender and poller threads running
    node.wait_idle(60)    # tests, benchmarks: every film analysed and every due send tried
    node.stop()

Threads (all daemons; :meth:`DicomNode.stop` ends them):

* the SCP's (pynetdicom): :class:`~.receiver.Receiver` spools each accepted film and queues it;
* one **worker**: films left in ``incoming/`` by an earlier run first, then the queue; each is read like
  the Read page (:meth:`ReadingService.analyse`, origin ``dicom-node``, sex and chronological age from the
  header, the gate's ``refuse_flags`` refused), gets a ``received`` row (or ``skipped``/``failed`` with
  its reason), its return header kept in the vault, and the objects of ``send_back`` queued for every
  target peer;
* the **sender** (:class:`~.sender.Sender`): due jobs tried, woken when one is queued;
* the **poller**: every ``poll_s`` seconds, the readings of films the node received and has a return
  header for, not yet sent as ``sr-amended`` (a row with its ``reading_id``) nor in the outbox, each
  become an amended SR whose predecessor is the film's last report. Return headers past
  ``retention_days`` are purged by the poller too.

Log messages name films by their log id and peers by AE title and address, never a header value.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import queue
import signal
import threading
import time
import warnings
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...errors import BoneAgeError, MissingSexError
from ...review.log import ReviewLog
from ...review.reading import FilmAnalysis, FlaggedFilmError, ReadingService
from ...review.schema import FilmRow, ReadingRow, TransferRow
from .config import NodeConfig, load_config
from .objects import Amendment, build_sc, build_sr
from .receiver import Receiver, make_ae
from .sender import Sender
from .vault import SpoolError, Vault, return_header

log = logging.getLogger("boneage.dicom-node")


class DicomNode:
    """The node (see the module docstring); ``heatmap=False`` leaves the SC without Grad-CAM (faster)."""

    def __init__(self, cfg: NodeConfig, service: ReadingService, *, heatmap: bool = True):
        self.cfg, self.service, self.review = cfg, service, service.log
        self.heatmap = heatmap
        self.vault = Vault(cfg.spool_dir)
        self.inbox: queue.Queue = queue.Queue(cfg.queue_size)
        self.sender = Sender(cfg, self.vault, self.review)
        self.receiver = Receiver(cfg, self.vault, self.review, self.inbox)
        self._stop = threading.Event()
        self._busy = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._purged = 0.0
        #: The port the SCP listens on (the configured one, or the one the system chose for port 0).
        self.port: int | None = None

    # ---- life
    def start(self) -> None:
        quiet_libraries()
        ae = make_ae(self.cfg)
        self._server = ae.start_server(
            (self.cfg.bind_address, self.cfg.port), block=False, evt_handlers=self.receiver.handlers()
        )
        self.port = self._server.server_address[1]
        for name, target in (("worker", self._work), ("sender", self._send), ("poller", self._poll)):
            t = threading.Thread(target=target, name=f"dicom-node-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("dicom-node: %s listening on %s:%d", self.cfg.ae_title, self.cfg.bind_address, self.port)

    def stop(self) -> None:
        self._stop.set()
        self.sender.wake.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=30)
        log.info("dicom-node: stopped")

    def wait_idle(self, timeout: float) -> bool:
        """True once the queue is empty, no film is being read and no job is due (within ``timeout`` s)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            due = self.sender.next_due()
            idle = self.inbox.empty() and not self._busy.is_set() and not self.vault.incoming()
            if idle and (due is None or due > time.time()):
                return True
            time.sleep(0.1)
        return False

    # ---- the worker
    def _work(self) -> None:
        backlog = self.vault.incoming()
        while not self._stop.is_set():
            if backlog:
                path = backlog.pop(0)
            else:
                try:
                    path = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
            self._busy.set()
            try:
                self.process(path)
            except Exception as exc:  # the node never stops on one film
                log.error("dicom-node: a received film could not be handled (%s)", type(exc).__name__)
            finally:
                Path(path).unlink(missing_ok=True)
                self._busy.clear()

    def process(self, path: Path) -> int | None:
        """Read one spooled film into the log and queue what goes back; its film id (None if refused)."""
        try:
            meta_line, _, data = self.vault.read_incoming(path).partition(b"\n")
            meta = json.loads(meta_line)
        except (SpoolError, ValueError, OSError) as exc:
            self._received(None, "unknown", None, "failed", f"spool: {type(exc).__name__}")
            return None
        peer, sop_key = meta.get("peer", "unknown"), meta.get("sop_key")
        if sop_key and self._received_before(sop_key):  # a PACS re-sending the same instance
            self._received(
                None, peer, sop_key, "skipped", "duplicate-sop: this instance was read and answered before"
            )
            return None
        try:
            analysis = self.service.analyse(data, origin="dicom-node", refuse_flags=self.cfg.refuse_flags)
        except MissingSexError:
            self._received(None, peer, sop_key, "skipped", "no-sex: the header gives no sex (M or F)")
            return None
        except FlaggedFilmError as exc:
            self._received(None, peer, sop_key, "skipped", f"flagged: {';'.join(exc.flags)}")
            return None
        except BoneAgeError as exc:
            self._received(None, peer, sop_key, "failed", f"unreadable: {type(exc).__name__}")
            return None
        film_id = analysis.film_id
        self._received(film_id, peer, sop_key, "received", "seen-before" if analysis.seen_before else "")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        header = return_header(ds)
        last = None
        kinds = self.cfg.send_back
        if "sr" in kinds:
            sr = build_sr(header, analysis.case, manufacturer=self.cfg.manufacturer)
            for peer_ in self.cfg.targets():
                self.sender.queue("sr", sr, peer_, film_id=film_id)
            last = sr.reference()
        self.vault.put_header(analysis.film.sha256, header, last)
        if "sc" in kinds:
            sc = self._sc(header, analysis)
            for peer_ in self.cfg.targets():
                self.sender.queue("sc", sc, peer_, film_id=film_id)
        log.info(
            "dicom-node: film %d read (%.1f months)", film_id, analysis.case.predicted_months or float("nan")
        )
        return film_id

    def _sc(self, header, analysis: FilmAnalysis):
        case, pixels = analysis.case, analysis.film.pixels
        heat = self.service.predictor.explain(pixels, case.sex == "M") if self.heatmap else None
        label = f"bone age {case.predicted_months:.1f} months (model)"
        return build_sc(header, pixels, analysis.mask, heat, label=label, manufacturer=self.cfg.manufacturer)

    def _received_before(self, sop_key: str) -> bool:
        """Whether an instance with this keyed SOPInstanceUID was read before (its reports queued then)."""
        with Session(self.review.engine) as s:
            q = select(TransferRow.id).where(
                TransferRow.direction == "received",
                TransferRow.status == "received",
                TransferRow.sop_key == sop_key,
            )
            return s.scalars(q.limit(1)).first() is not None

    def _received(self, film_id, peer: str, sop_key, status: str, reason: str) -> None:
        with self.review.appending() as tx:
            tx.add(
                TransferRow(
                    film_id=film_id,
                    direction="received",
                    kind="image",
                    peer=peer[:200],
                    sop_key=sop_key,
                    status=status,
                    attempt=1,
                    reason=reason,
                )
            )
        if status != "received":
            log.info("dicom-node: a received film was %s (%s)", status, reason)

    # ---- sending and polling
    def _send(self) -> None:
        while not self._stop.is_set():
            self.sender.run_due()
            due = self.sender.next_due()
            wait = 1.0 if due is None else min(max(due - time.time(), 0.05), 1.0)
            self.sender.wake.wait(wait)
            self.sender.wake.clear()

    def _poll(self) -> None:
        while not self._stop.wait(self.cfg.poll_s):
            try:
                self.poll_readings()
                if time.time() - self._purged > 3600:
                    self._purged = time.time()
                    self.vault.purge(self.cfg.retention_days)
            except Exception as exc:
                log.error("dicom-node: the readings poll failed (%s)", type(exc).__name__)

    def poll_readings(self) -> int:
        """Queue an amended SR for every new reading of a film the node received; how many."""
        if not self.cfg.send_amended or "sr" not in self.cfg.send_back:
            return 0
        with Session(self.review.engine) as s:
            films = select(TransferRow.film_id).where(
                TransferRow.direction == "received", TransferRow.status == "received"
            )
            done = select(TransferRow.reading_id).where(
                TransferRow.kind == "sr-amended", TransferRow.reading_id.is_not(None)
            )
            rows = s.execute(
                select(ReadingRow, FilmRow.sha256)
                .join(FilmRow, FilmRow.id == ReadingRow.film_id)
                .where(ReadingRow.film_id.in_(films), ReadingRow.id.not_in(done))
                .order_by(ReadingRow.id)
            ).all()
        pending = self.sender.pending_readings()
        n = 0
        for reading, sha in rows:
            if reading.id in pending:
                continue
            kept = self.vault.get_header(sha)
            if kept is None:
                continue  # purged, or received before the node kept headers: nothing to file it under
            header, last = kept
            case = self.review.latest(reading.film_id)
            amendment = Amendment(reading.reader, reading.months, reading.action, reading.created_at)
            sr = build_sr(
                header, case, manufacturer=self.cfg.manufacturer, amendment=amendment, predecessor=last
            )
            for peer in self.cfg.targets():
                self.sender.queue("sr-amended", sr, peer, film_id=reading.film_id, reading_id=reading.id)
            self.vault.put_header(sha, header, sr.reference())
            n += 1
        return n


def quiet_libraries() -> None:
    """pynetdicom's and highdicom's INFO and DEBUG lines quote UIDs and AE details, pydicom's warnings may
    quote a header value they find malformed: WARNING and above only for the first two, errors only for
    pydicom, and no UserWarning of pydicom or highdicom on stderr."""
    for name, level in (
        ("pynetdicom", logging.WARNING),
        ("highdicom", logging.WARNING),
        ("pydicom", logging.ERROR),
    ):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|highdicom)(\.|$)")


# ------------------------------------------------------------------------------------------ the command


def add_parser(sub) -> None:
    """``boneage dicom-node`` (registered by :mod:`boneage_core.cli`)."""
    p = sub.add_parser(
        "dicom-node",
        help="a DICOM node: receive hand films (C-STORE), read them, send SR and SC back to the PACS",
        description="Listens for CR, DX and Secondary Capture images, puts each hand film on the worklist, "
        "sends a structured report and an annotated secondary capture back, then an amended report once a "
        "reader has confirmed or corrected the case. Stop with Ctrl-C.",
    )
    p.add_argument("--config", type=Path, help="YAML configuration (e.g. configs/dicom-node.yaml)")
    p.add_argument("--port", type=int, help="listen on this port (overrides the configuration)")
    p.add_argument("--ae-title", help="the node's AE title (overrides the configuration)")
    p.add_argument("--send-to", metavar="AET@HOST:PORT", help="send back to this peer only")
    p.add_argument("--spool", type=Path, help="spool folder (overrides the configuration)")
    p.add_argument("--db", type=Path, help="review log (default: $BONEAGE_REVIEW_DB or data/review.sqlite)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    p.add_argument("--no-heatmap", action="store_true", help="secondary capture without the Grad-CAM++ map")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from ...settings import get_settings

    cfg = load_config(
        args.config, port=args.port, ae_title=args.ae_title, send_to=args.send_to, spool_dir=args.spool
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    review = ReviewLog(args.db or get_settings().review_db)
    node = DicomNode(cfg, _service(cfg, review, args.device), heatmap=not args.no_heatmap)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        node.start()
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise BoneAgeError(f"cannot listen on {cfg.bind_address}:{cfg.port}: {exc.strerror or exc}") from exc
    print(f"dicom-node: {cfg.ae_title} on {cfg.bind_address}:{node.port}, spool {cfg.spool_dir}", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    node.stop()
    return 0


def _service(cfg: NodeConfig, review: ReviewLog, device: str | None) -> ReadingService:
    from ..service import reading_service

    return reading_service(review, cfg.segmenter, cfg.model, device, tta=cfg.tta)
