"""Speed of the review app on this machine (prints figures; asserts nothing).

    .venv/bin/python benchmarks/bench_app.py [--films DIR] [--n 8]

Driven through Streamlit's AppTest (the same script runs as in the browser, minus the network):

* app start: the first page run, which loads the bone-age model, SAM and the review log once;
* first result: a full-resolution film (as a DICOM carrying the sex) uploaded on the Read page until its
  mask and estimate are on the page: reading, SAM encoder, mask selection, model, log write, page;
* re-prompt: a point added on the Masks page until the new mask is on the page (SAM decoder only, the
  film's embedding is cached in the session), and the same step in the core without the page.

Each film gets a fresh data folder's log but the models stay loaded, as in a running app.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _stats(name: str, xs: list[float]) -> None:
    print(f"{name:<44} median {statistics.median(xs):6.3f} s   max {max(xs):6.3f} s   (n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--films", type=Path, default=ROOT.parent / "shared" / "data" / "rsna-fullres")
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    os.environ["BONEAGE_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-app-")

    from dicom_fixtures import make_dicom
    from streamlit.testing.v1 import AppTest

    from boneage_core.films.read import read_film
    from boneage_core.review.accounts import Accounts
    from boneage_core.review.log import ReviewLog
    from boneage_core.settings import get_settings

    films = sorted(args.films.glob("*.jpg"))[: args.n]
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
    Accounts(ReviewLog(get_settings().review_db)).add(
        "bench", "bench-password-1", role="reader", actor="bench"
    )
    at.run()  # the sign-in screen
    at.text_input(key="login_name").set_value("bench")
    at.text_input(key="login_password").set_value("bench-password-1")
    t = time.perf_counter()
    next(b for b in at.button if b.label == "Sign in").click().run()  # the Read page: model, SAM, log load
    start = time.perf_counter() - t
    first, reprompt_page, reprompt_core = [], [], []
    log = ReviewLog(get_settings().review_db)
    for path in films:
        data = make_dicom(read_film(path).pixels, sex="F", patient_name=None, patient_id=None)
        at.switch_page("../pages/read.py").run()
        at.file_uploader[0].set_value((f"{path.stem}.dcm", data, "application/dicom"))
        t = time.perf_counter()
        at.run()
        first.append(time.perf_counter() - t)
        assert not at.exception and at.metric, at.exception
        case = log.cases()[-1]
        at.session_state["focus_film"] = case.film_id  # what the page's "Review mask" button does
        at.switch_page("../pages/masks.py").run()
        mask = log.segmentation(case.segmentation_id)["mask"]
        ys, xs = np.nonzero(mask)
        for dx in (0, 40):
            at.number_input(key="point_x").set_value(int(np.median(xs)) + dx)
            at.number_input(key="point_y").set_value(int(np.median(ys)))
            at.button(key=[b.key for b in at.button if "Add point" in b.label][0]).click()
            t = time.perf_counter()
            at.run()
            reprompt_page.append(time.perf_counter() - t)
            assert not at.exception and at.success and "decode only" in at.success[0].value, [
                s.value for s in at.success
            ]
        svc = at.session_state["_reading_service"]
        seg = log.segmentation(log.cases()[-1].segmentation_id)
        t = time.perf_counter()
        svc.refine(
            case.film_id, np.vstack([seg["points"], [[xs.mean(), ys.mean()]]]), np.append(seg["labels"], 1)
        )
        reprompt_core.append(time.perf_counter() - t)
    print(
        f"{len(films)} full-resolution films from {args.films}, torch threads {__import__('torch').get_num_threads()}"
    )
    print(f"{'app start (models and log loaded once)':<44} {start:6.3f} s")
    _stats("first result after upload (goal < 5 s)", first)
    _stats("re-prompt on the Masks page (goal < 0.5 s)", reprompt_page)
    _stats("re-prompt in the core (decode + log row)", reprompt_core)


if __name__ == "__main__":
    main()
