"""Throughput of the DICOM node on this machine: a burst of films C-STOREd to it, the reports back.

    .venv/bin/python benchmarks/bench_dicom_node.py [--n 50] [--associations 1] [--model PATH] [--tta]
                                                    [--segmenter classical|auto] [--no-heatmap] [--send-back sr,sc]

The script starts a node in-process (``DicomNode`` on a free port, a fresh data folder and spool, its
queue as long as the burst) and a pynetdicom Storage SCP as the PACS, then sends ``--n`` real films
(``../shared/data/rsna-train``, 299 px copies, or ``--films DIR`` of JPEG/PNG) as CR images over
``--associations`` associations at once. It reports, as one JSON line:

* ``store_ms_mean`` / ``store_ms_max``: how long a C-STORE waited for the node's answer (the handler
  spools and queues; the analysis comes after);
* ``film_s_mean`` / ``film_s_max``: from a film's C-STORE answer to its SR at the PACS (queueing included);
* ``seconds_to_last_sr``: from the first C-STORE to the last SR received; ``films_per_min`` from it;
* the settings: model, TTA, segmenter, heatmap, what is sent back, CPU threads.

Defaults: the single shipped model without TTA, classical masks, SR and SC with the Grad-CAM++ heatmap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--associations", type=int, default=1)
    ap.add_argument("--films", type=Path, default=ROOT.parent / "shared" / "data" / "rsna-train" / "images")
    ap.add_argument("--model", type=Path, default=ROOT / "assets" / "models" / "boneage-lite0-224.pt")
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--segmenter", choices=["classical", "localizer", "auto", "sam"], default="classical")
    ap.add_argument("--no-heatmap", action="store_true")
    ap.add_argument("--send-back", default="sr,sc")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dicom-node-"))
    os.environ.setdefault("BONEAGE_SITE_SECRET_FILE", str(work / "site-secret"))
    os.environ["BONEAGE_DATA_DIR"] = str(work / "data")
    logging.basicConfig(level=logging.WARNING)

    import pydicom
    import torch
    from dicom_fixtures import make_dicom
    from node_helpers import Destination, free_port
    from PIL import Image
    from pynetdicom import AE

    from boneage_core.hospital.pacs.config import NodeConfig, Peer
    from boneage_core.hospital.pacs.node import DicomNode, _service
    from boneage_core.review.log import ReviewLog

    paths = sorted(p for p in args.films.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    if len(paths) < args.n:
        raise SystemExit(f"only {len(paths)} films in {args.films}")
    films = []
    for i, p in enumerate(paths):
        pixels = np.asarray(Image.open(p).convert("L"))
        films.append(
            pydicom.dcmread(_bytes(make_dicom(pixels, sex="MF"[i % 2], patient_id=f"BENCH-{i:03d}")))
        )

    dest_port = free_port()
    arrived: dict[str, float] = {}
    dest = Destination()

    def on_sr(event):
        ds = event.dataset
        if ds.Modality == "SR":
            for item in ds.ContentSequence:
                if "ReferencedSOPSequence" in item:
                    arrived[str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)] = time.perf_counter()
        return 0x0000

    dest._store = on_sr  # noqa: SLF001  (the benchmark's PACS only times the SRs)
    dest.start(dest_port)
    cfg = NodeConfig(
        port=0,
        peers=(Peer("dest", "DEST", "127.0.0.1", dest_port),),
        spool_dir=work / "spool",
        queue_size=max(args.n, 1),
        send_back=tuple(k for k in args.send_back.split(",") if k),
        segmenter=args.segmenter,
        model=args.model,
        tta=args.tta,
        send_amended=False,
    )
    t_load = time.perf_counter()
    service = _service(cfg, ReviewLog(work / "data" / "review.sqlite"), None)
    load_s = time.perf_counter() - t_load
    node = DicomNode(cfg, service, heatmap=not args.no_heatmap)
    node.start()

    stored: dict[str, float] = {}
    store_ms: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def send(chunk: list) -> None:
        ae = AE("BENCHSCU")
        ae.add_requested_context(chunk[0].SOPClassUID, chunk[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=cfg.ae_title)
        for ds in chunk:
            t = time.perf_counter()
            status = assoc.send_c_store(ds).Status
            done = time.perf_counter()
            with lock:
                store_ms.append(1000 * (done - t))
                statuses.append(status)
                stored[str(ds.SOPInstanceUID)] = done
        assoc.release()

    chunks = [films[i :: args.associations] for i in range(args.associations)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.associations) as pool:
        list(pool.map(send, [c for c in chunks if c]))
    end = time.monotonic() + args.timeout
    while len(arrived) < sum(s == 0 for s in statuses) and time.monotonic() < end:
        time.sleep(0.2)
    node.wait_idle(60)
    node.stop()
    dest.stop()
    latencies = [arrived[u] - stored[u] for u in stored if u in arrived]
    last = max(arrived.values()) - t0 if arrived else float("nan")
    print(
        json.dumps(
            {
                "films": args.n,
                "accepted": sum(s == 0 for s in statuses),
                "refused": sum(s != 0 for s in statuses),
                "srs_back": len(arrived),
                "associations": args.associations,
                "store_ms_mean": round(statistics.mean(store_ms), 1),
                "store_ms_max": round(max(store_ms), 1),
                "film_s_mean": round(statistics.mean(latencies), 2) if latencies else None,
                "film_s_max": round(max(latencies), 2) if latencies else None,
                "seconds_to_last_sr": round(last, 1),
                "films_per_min": round(60 * len(arrived) / last, 1) if arrived else 0.0,
                "model_load_s": round(load_s, 1),
                "model": args.model.name,
                "tta": service.predictor.tta,
                "segmenter": "sam"
                if service.segmenter is not None
                else ("localizer" if service.localizer else "classical"),
                "heatmap": not args.no_heatmap,
                "send_back": list(cfg.send_back),
                "film_source": str(args.films),
                "torch_threads": torch.get_num_threads(),
                "device": service.predictor.device,
            }
        )
    )


def _bytes(data: bytes):
    import io

    return io.BytesIO(data)


if __name__ == "__main__":
    main()
