"""End to end in a real headless Chromium: what a new user does on the first day.

``make run``-equivalent server (``streamlit run app/main.py``, bound to 127.0.0.1 by the repository's
``.streamlit/config.toml``) on a fresh data folder; Selenium drives Debian's ``chromium`` +
``chromium-driver``. The user creates the first admin account on the sign-in screen, is refused with a
wrong password, signs in, uploads a full-resolution RSNA film, answers the sex
form, sees the mask, estimate and heatmap, clicks a point on the film (SAM re-runs), accepts the mask,
corrects the age, sees the hospital dashboard change, and downloads the per-case CSV holding that case.
Screenshots of every page go to ``test-output/e2e/``.

Without a browser the test is skipped, unless ``BONEAGE_REQUIRE_BROWSER=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from boneage_core.review.log import ReviewLog

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-output" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow
PASSWORD = "e2e-password-2024"


def _require_browser() -> None:
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    msg = f"no Chromium ({CHROMIUM}) or chromedriver ({DRIVER}): apt-get install chromium chromium-driver"
    if os.environ.get("BONEAGE_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path: Path):
    """The app on a free port with its own data folder; yields (url, data folder)."""
    port = _free_port()
    data = tmp_path / "data"
    env = {**os.environ, "BONEAGE_DATA_DIR": str(data)}
    env.pop("BONEAGE_REVIEW_DB", None)
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app" / "main.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the app did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
        yield url, data
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture()
def browser(tmp_path: Path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1300",
        "--disable-gpu",
    ):
        opts.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(driver, xpath: str, timeout: float = 120):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.visibility_of_element_located((By.XPATH, xpath)))


def _button(driver, text: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    xpath = f"//button[.//p[contains(normalize-space(.), {text!r})]]"
    return WebDriverWait(driver, timeout).until(ec.element_to_be_clickable((By.XPATH, xpath)))


def _idle(driver, timeout: float = 120) -> None:
    """Wait until Streamlit has finished the current run (no 'Running...' status widget)."""
    from selenium.webdriver.common.by import By

    time.sleep(0.5)
    end = time.time() + timeout
    while time.time() < end:
        if not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'):
            return
        time.sleep(0.3)
    raise TimeoutError("the app kept running")


def _nav(driver, title: str) -> None:
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
    next(a for a in links if a.text.strip().endswith(title)).click()
    _wait(driver, f"//h1[contains(., {title!r})]" if title != "Read" else "//h1[contains(., 'Read films')]")
    _idle(driver)


def _only_on_loopback(url: str) -> None:
    """The app answers on 127.0.0.1 and on no other address: not 127.0.0.2 (which a server bound to all
    interfaces would answer on Linux), nor this machine's address on its network, when it has one."""
    port = int(url.rsplit(":", 1)[1])
    others = {"127.0.0.2"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing address
            others.add(probe.getsockname()[0])
        except OSError:
            pass
    for address in others - {"127.0.0.1", "0.0.0.0"}:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((address, port))


def _shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_new_user_reads_a_film_accepts_the_mask_corrects_the_age_and_exports_it(
    server, browser, fullres_films
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, data = server
    film = fullres_films[3]
    d = browser
    _only_on_loopback(url)
    d.get(url)
    # a fresh log: the sign-in screen offers the first admin account (the browser is on the server itself)
    _wait(d, "//h3[contains(., 'Create the first admin account')]", 180)
    _idle(d, 180)
    assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')  # nothing before sign-in
    _wait(d, "//input[@aria-label='Name']").send_keys("dr_e2e")
    _wait(d, "//input[starts-with(@aria-label, 'Password (at least')]").send_keys(PASSWORD)
    _wait(d, "//input[@aria-label='Password again']").send_keys(PASSWORD)
    _shot(d, "00-first-admin")
    _button(d, "Create the admin account").click()
    _wait(d, "//*[contains(text(), 'Admin account dr_e2e created')]")
    _idle(d)

    def sign_in(password: str) -> None:
        for label, value in (("Name", "dr_e2e"), ("Password", password)):
            box = _wait(d, f"//input[@aria-label='{label}']")
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.DELETE, value)
        _button(d, "Sign in").click()

    sign_in("not-the-password")
    _wait(d, "//*[contains(text(), 'Wrong name or password')]")
    _idle(d)
    _shot(d, "00b-sign-in-refused")
    sign_in(PASSWORD)
    _wait(d, "//h1[contains(., 'Read films')]", 180)
    _idle(d, 180)
    _wait(d, "//*[contains(., 'Signed in as') and contains(., 'dr_e2e')]")

    # the hospital dashboard before any reading
    _nav(d, "Dashboards")
    _wait(d, "//*[contains(text(), 'No cases match')]")
    _shot(d, "01-dashboards-empty")

    # Read: upload, answer the sex form, see estimate and mask; then the heatmap
    _nav(d, "Read")
    d.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(film))
    _wait(d, "//label[.//p[contains(., 'Girl (F)')]]").click()
    _button(d, "Estimate bone age").click()
    value = _wait(d, "//*[@data-testid='stMetricValue']", 180)
    _idle(d)
    assert "months" in value.text
    log = ReviewLog(data / "review.sqlite")
    case = log.cases()[0]
    assert value.text.startswith(f"{case.predicted_months:.1f}")
    _shot(d, "02-read-estimate-mask")
    d.find_element(By.XPATH, "//label[.//p[contains(., 'Grad-CAM heatmap')]]").click()
    _wait(d, "//*[contains(text(), 'Grad-CAM++ of the predicted age')]")
    _idle(d)
    _shot(d, "03-read-heatmap")

    # Masks: click an include point at the hand's centre on the film, then accept
    _button(d, "Review the mask").click()
    _wait(d, "//h1[contains(., 'Hand masks')]")
    _idle(d)
    seg = log.segmentation(case.segmentation_id)
    ys, xs = np.nonzero(seg["mask"])
    h, w = seg["mask"].shape
    target = np.array([np.median(xs), np.median(ys)])
    # the click component is an iframe that renders after the page goes idle: wait for it (slow under load)
    frame = _wait(d, "//iframe[contains(@title, 'streamlit_image_coordinates')]", 180)
    d.switch_to.frame(frame)
    img = _wait(d, "//img")
    size = img.size
    dx = target[0] / w * size["width"] - size["width"] / 2
    dy = target[1] / h * size["height"] - size["height"] / 2
    ActionChains(d).move_to_element_with_offset(img, int(dx), int(dy)).click().perform()
    d.switch_to.default_content()
    note = _wait(d, "//*[contains(text(), 'New mask in')]", 120)
    _idle(d)
    _shot(d, "04-masks-after-click")
    clicked = log.segmentation(log.cases()[0].segmentation_id)
    assert clicked["id"] != seg["id"] and clicked["labels"][-1] == 1
    assert np.abs(clicked["points"][-1] - target).max() < 2 * w / size["width"] + 2, (
        clicked["points"][-1],
        target,
    )
    assert "s" in note.text
    _button(d, "Accept mask").click()
    _wait(d, "//*[contains(text(), 'accepted by dr_e2e')]")
    _idle(d)
    _shot(d, "05-masks-accepted")
    assert log.cases()[0].mask_decision == "accepted"

    # Worklist: correct the age with a reason
    _nav(d, "Worklist")
    age = _wait(d, "//input[starts-with(@aria-label, 'Your bone age')]")
    age.send_keys("12y 6m")
    d.find_element(By.CSS_SELECTOR, 'textarea[aria-label^="Reason"]').send_keys("carpal bones look older")
    _button(d, "Save my bone age").click()
    _wait(d, "//*[contains(text(), 'Saved: case')]")
    _idle(d)
    _shot(d, "06-worklist-corrected")
    c = log.cases()[0]
    assert c.reference_months == 150.0 and c.reading_action == "corrected" and c.reader == "dr_e2e"

    # Dashboards: the hospital tab now holds that case
    _nav(d, "Dashboards")
    values = [e.text for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')]
    assert values[0] == "1" and values[1] == f"{abs(c.predicted_months - 150.0):.2f} m", values
    _shot(d, "07-dashboards-one-case")
    # a click on the case's point in the Bland-Altman plot shows it and opens it in the log
    point = d.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] g.points path.point')[0]
    ActionChains(d).move_to_element(point).click().perform()
    _wait(d, f"//h3[contains(., 'Case {c.film_id}')]")
    _idle(d)
    _shot(d, "07b-dashboards-point-clicked")
    _button(d, "Open this case in the worklist").click()
    _wait(d, "//h1[contains(., 'Worklist')]")
    _wait(d, f"//h3[contains(., 'Case {c.film_id}')]")
    _wait(d, "//*[contains(., 'corrected at 150.0 months')]")

    # Export: download the per-case CSV and read it back
    _nav(d, "Export")
    _shot(d, "08-export")
    _button(d, "Download per-case CSV").click()
    end = time.time() + 60
    while time.time() < end and not list(d.downloads.glob("boneage-cases-*.csv")):
        time.sleep(0.5)
    files = list(d.downloads.glob("boneage-cases-*.csv"))
    assert files, "no CSV downloaded"
    text = files[0].read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    row = rows[0]
    assert row["film_sha256"] == c.sha256 and row["pseudonym"] == c.pseudonym
    assert float(row["reference_months"]) == 150.0 and row["reading_action"] == "corrected"
    assert row["mask_decision"] == "accepted" and row["reader"] == "dr_e2e"
    assert row["model_version"] == c.model_version and row["weights_sha256"] == c.weights_sha256
    assert film.stem not in text
    for key in ("interval_low_months", "chronological_age_months", "z_score", "category", "quality_flags"):
        assert key in row

    # Read again: a DICOM with birth and study dates shows the interval, the chronological age, the SD,
    # the z-score and the category, and the chart against the Greulich-Pyle band
    from dicom_fixtures import make_dicom
    from PIL import Image

    label_text = (fullres_films[0].parent / "labels.csv").read_text()
    labels = {r["id"]: r for r in csv.DictReader(io.StringIO(label_text))}
    dated = next(p for p in fullres_films[5:] if labels[p.stem]["male"] == "False")
    pixels = np.asarray(Image.open(dated).convert("L"))
    birth = np.datetime64("2021-10-15") - np.timedelta64(
        round(float(labels[dated.stem]["boneage"]) * 30.4375), "D"
    )
    dicom = data.parent / "dated-hand.dcm"
    dicom.write_bytes(
        make_dicom(pixels, sex="F", birth_date=str(birth).replace("-", ""), study_date="20211015")
    )
    _nav(d, "Read")
    d.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(dicom))
    _wait(d, "//*[contains(., '90% interval')]", 180)
    _idle(d)
    page = d.find_element(By.TAG_NAME, "body").text
    ca = (np.datetime64("2021-10-15") - birth).astype(int) / 30.4375
    assert f"{ca:.1f} months" in page, page[-2000:]
    assert "BA - CA" in page and "z-score" in page and "Category" in page
    dated = next(c for c in ReviewLog(data / "review.sqlite").cases() if c.chronological_age_months)
    assert f"{dated.interval_low_months:.0f}-{dated.interval_high_months:.0f} months" in page
    assert any(cat in page for cat in ("normal", "delayed", "advanced"))
    _wait(d, "//*[@data-testid='stPlotlyChart']")
    _shot(d, "09-read-dicom-with-dates")


def _present(driver, css: str, timeout: float = 120):
    """The element at ``css`` once it is in the page, visible or not (a file input is hidden)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def _keys(driver, *chord: str) -> None:
    """Press a shortcut (e.g. ``_keys(d, "ALT", "n")``) with the focus outside any text field."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur()")  # leave any text field
    *mods, key = chord
    actions = ActionChains(driver)
    for m in mods:
        actions.key_down(getattr(Keys, m))
    actions.send_keys(key)
    for m in mods:
        actions.key_up(getattr(Keys, m))
    actions.perform()


def _open_case(driver) -> int:
    """The case number in the Worklist's case heading."""
    import re

    heading = _wait(driver, "//h3[starts-with(normalize-space(.), 'Case ')]").text
    return int(re.match(r"Case (\d+)", heading).group(1))


def _until_case(driver, film_id: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if _open_case(driver) == film_id:
                _idle(driver)
                return
        except Exception:  # the page is redrawing
            pass
        time.sleep(0.3)
    raise AssertionError(f"case {film_id} did not open (open: {_open_case(driver)})")


def test_a_reader_walks_the_worklist_by_keyboard_and_each_reading_lands_on_its_case(
    server, browser, fullres_films
):
    from selenium.webdriver.common.by import By

    from boneage_core.review.accounts import Accounts

    url, data = server
    d = browser
    log = ReviewLog(data / "review.sqlite")
    Accounts(log).add("dr_walk", PASSWORD, role="reader", actor="test")
    d.get(url)
    _wait(d, "//input[@aria-label='Name']", 180).send_keys("dr_walk")
    _wait(d, "//input[@aria-label='Password']").send_keys(PASSWORD)
    _button(d, "Sign in").click()
    _wait(d, "//h1[contains(., 'Read films')]", 180)
    _idle(d, 180)

    # three films without sex in one batch: one answer for all of them
    films = fullres_films[8:11]
    _present(d, 'input[type="file"]').send_keys("\n".join(str(p) for p in films))
    _wait(d, "//label[.//p[contains(., 'Boy (M)')]]", 120).click()
    _button(d, "Estimate bone age").click()
    end = time.time() + 300
    while time.time() < end and len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')) < 3:
        time.sleep(1)
    _idle(d, 180)
    cases = log.cases()
    assert len(cases) == 3 and {c.sex for c in cases} == {"M"}
    ids = [c.film_id for c in cases]

    # the worklist opens the first unread case; shortcuts move through it
    _nav(d, "Worklist")
    _until_case(d, ids[0])
    for width in (1280, 1920):
        d.set_window_size(width, 1100)
        _idle(d)
        _shot(d, f"10-worklist-{width}")
    _keys(d, "ALT", "n")
    _until_case(d, ids[1])
    _keys(d, "ALT", "p")
    _until_case(d, ids[0])

    # Alt+Y confirms the open case; the next unread opens
    _keys(d, "ALT", "y")
    _wait(d, f"//*[contains(text(), 'Saved: case {ids[0]} confirmed by dr_walk')]")
    _until_case(d, ids[1])

    # a typed age with "confirm" is refused; saved as the reader's own age with a reason it lands here
    age = _wait(d, "//input[starts-with(@aria-label, 'Your bone age')]")
    age.send_keys("8y 0m")
    _button(d, "Confirm the estimate").click()
    _wait(d, "//*[contains(text(), 'typed 8y 0m')]")
    _idle(d)
    assert log.latest(ids[1]).reading_action is None
    d.find_element(By.CSS_SELECTOR, 'textarea[aria-label^="Reason"]').send_keys("carpals older")
    _button(d, "Save my bone age").click()
    _wait(d, f"//*[contains(text(), 'Saved: case {ids[1]} read at 96.0 months')]")
    _until_case(d, ids[2])
    _shot(d, "11-worklist-after-correction")
    age = _wait(d, "//input[starts-with(@aria-label, 'Your bone age')]")
    assert age.get_attribute("value") == ""

    # a half-typed age on case 3 does not follow the reader to another case, nor come back with them
    age.send_keys("13y")
    d.find_element(By.CSS_SELECTOR, 'textarea[aria-label^="Reason"]').click()
    _idle(d)
    _keys(d, "ALT", "p")
    _until_case(d, ids[1])  # the cases read in this session stay in the list
    _keys(d, "ALT", "n")
    _until_case(d, ids[2])
    assert _wait(d, "//input[starts-with(@aria-label, 'Your bone age')]").get_attribute("value") == ""

    # the viewer: the film at full resolution, zoomed with the scroll wheel
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin

    plot = "document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')"
    full = d.execute_script(f"return {plot}._fullLayout.xaxis.range;")
    area = d.find_element(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .nsewdrag')
    for _ in range(3):
        ActionChains(d).scroll_from_origin(ScrollOrigin.from_element(area), 0, -200).perform()
        time.sleep(0.5)
    zoomed = d.execute_script(f"return {plot}._fullLayout.xaxis.range;")
    assert zoomed[1] - zoomed[0] < 0.75 * (full[1] - full[0]), (full, zoomed)
    _shot(d, "12-worklist-zoomed")

    # a reload keeps the reader signed in
    d.refresh()
    _wait(d, "//*[contains(., 'Signed in as') and contains(., 'dr_walk')]", 120)
    _idle(d)

    readings = {c.film_id: (c.reading_action, c.reference_months, c.reader) for c in log.cases()}
    assert readings[ids[0]] == ("confirmed", cases[0].predicted_months, "dr_walk")
    assert readings[ids[1]] == ("corrected", 96.0, "dr_walk")
    assert readings[ids[2]] == (None, None, None)


def test_twenty_cases_read_by_keyboard_alone_each_reading_on_its_own_case(server, browser, fullres_films):
    """The issue's acceptance walk: a worklist of 20 films, read with the keyboard only (Alt+Y to
    confirm; typing an age and a reason, then Alt+S, to correct), every reading landing on its case."""
    from apphelp import fixed_log
    from selenium.webdriver.common.keys import Keys

    from boneage_core.films.read import read_film
    from boneage_core.review.accounts import Accounts

    url, data = server
    d = browser
    films = [read_film(p) for p in fullres_films[:20]]
    estimates = [40.0 + 8 * i for i in range(20)]
    log = fixed_log(
        data / "review.sqlite",
        films,
        [(m, "F" if i % 2 else "M", None, None) for i, m in enumerate(estimates)],
    )
    Accounts(log).add("dr_keys", PASSWORD, role="reader", actor="test")
    ids = [c.film_id for c in log.cases()]
    d.get(url)
    _wait(d, "//input[@aria-label='Name']", 180).send_keys("dr_keys")
    _wait(d, "//input[@aria-label='Password']").send_keys(PASSWORD)
    _button(d, "Sign in").click()
    _wait(d, "//h1[contains(., 'Read films')]", 180)
    _idle(d, 180)
    _nav(d, "Worklist")
    expected = {}
    for i, fid in enumerate(ids):
        _until_case(d, fid)
        if i % 3 == 2:  # every third case corrected: age, Tab, reason, Alt+S, all from the keyboard
            months = estimates[i] + 12
            age = _wait(d, "//input[starts-with(@aria-label, 'Your bone age')]")
            age.click()
            age.send_keys(f"{months:.0f}m", Keys.TAB, "older carpals", Keys.TAB)
            _keys(d, "ALT", "s")
            expected[fid] = ("corrected", months)
        else:
            _keys(d, "ALT", "y")
            expected[fid] = ("confirmed", estimates[i])
        _wait(d, f"//*[contains(text(), 'Saved: case {fid} ')]")
    _wait(d, "//*[contains(text(), 'No unread case left in this list')]")
    got = {c.film_id: (c.reading_action, c.reference_months) for c in log.cases()}
    assert got == expected
    assert {c.reader for c in log.cases()} == {"dr_keys"}
