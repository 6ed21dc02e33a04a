"""Walking a hospital's export: every entry under its root, in a stable order, and what its DICOMDIRs list.

An :class:`ArchiveEntry`'s ``relative`` is its POSIX path from the root (names that are not UTF-8 keep
their bytes, see :func:`relative_bytes`). Folder and file names often name the patient
(``SMITH^JOHN_4829173/20210901_HAND/IMG0001``): callers only key them
(``keyed_hash("import-path", relative_bytes(entry))``) and never store them.

* Folders are walked depth-first without following links: nested patient / study / series folders,
  files without extensions and files of any type are listed (the type is decided later, from the bytes).
* Entries that are not regular files (symbolic links, named pipes, devices, sockets) are listed with the
  problem ``not-regular`` and are never opened: a FIFO cannot block the walk, a link cannot pull in a file
  from outside the archive (the same refusal as :func:`boneage_core.films.read.read_regular_file`).
* A folder more than :data:`MAX_DEPTH` levels down, or one met before (a bind-mount loop), is listed
  with the problem ``too-deep`` and not entered.
* A file named ``DICOMDIR`` (any case) is read, header only and bounded, with pydicom; each file its
  directory records reference (``ReferencedFileID``, resolved below the DICOMDIR's folder, case-insensitively
  as on an ISO 9660 disc) that is absent is listed with the problem ``missing`` (an incomplete copy), and a
  malformed reference (``..``, separators, empty) with ``bad-reference``. Referenced files that are
  present were found by the walk and are listed once. The DICOMDIR itself is listed; the importer skips it.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom

from ..films.codestream import check_inflation
from ..films.read import read_regular_file
from ..settings import get_settings

#: Deepest folder entered (the root is depth 0); a PACS export is some five levels deep.
MAX_DEPTH = 24


@dataclass(frozen=True)
class ArchiveEntry:
    """One entry of the archive: ``path`` to open, ``relative`` to key; ``problem`` None for a regular
    file, else ``not-regular``, ``too-deep``, ``missing`` or ``bad-reference`` (see the module docstring)."""

    path: Path
    relative: str
    problem: str | None = None


def relative_bytes(entry: ArchiveEntry) -> bytes:
    """The bytes of ``entry.relative`` as the file system holds them (what the path key is computed on)."""
    return os.fsencode(entry.relative)


def is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def walk_archive(root: Path) -> list[ArchiveEntry]:
    """Every entry under ``root``, sorted by relative path, then the DICOMDIRs' missing references."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    entries = sorted(_walk(root), key=lambda e: e.relative)
    found = {e.relative for e in entries}
    extra: dict[str, ArchiveEntry] = {}
    for entry in entries:
        if entry.problem is None and is_dicomdir(entry.path):
            for ref in dicomdir_references(entry.path, root):
                if ref.problem is not None and ref.relative not in found:
                    extra.setdefault(ref.relative, ref)
    return entries + sorted(extra.values(), key=lambda e: e.relative)


def _walk(root: Path) -> Iterator[ArchiveEntry]:
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        info = os.stat(folder, follow_symlinks=False)
        if depth > MAX_DEPTH or (info.st_dev, info.st_ino) in seen:
            yield ArchiveEntry(folder, _relative(folder, root), "too-deep")
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError:
            yield ArchiveEntry(folder, _relative(folder, root), "not-regular")
            continue
        for child in children:
            path = Path(child.path)
            try:
                mode = child.stat(follow_symlinks=False).st_mode
            except OSError:
                yield ArchiveEntry(path, _relative(path, root), "not-regular")
                continue
            if stat.S_ISDIR(mode):
                stack.append((path, depth + 1))
            elif stat.S_ISREG(mode):
                yield ArchiveEntry(path, _relative(path, root))
            else:  # a link, FIFO, device or socket: never opened
                yield ArchiveEntry(path, _relative(path, root), "not-regular")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def dicomdir_references(dicomdir: Path, root: Path) -> list[ArchiveEntry]:
    """The files ``dicomdir`` references, as entries (``missing`` when absent, ``bad-reference`` when
    malformed). A DICOMDIR that cannot be read references nothing."""
    try:
        data = read_regular_file(dicomdir, get_settings().max_bytes)
        check_inflation(data, get_settings().max_bytes)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        records = list(ds.get("DirectoryRecordSequence") or [])
    except Exception:  # a damaged or hostile DICOMDIR: the walk has found the files anyway
        return []
    base = dicomdir.parent
    out = []
    for i, record in enumerate(records):
        try:
            value = record.get("ReferencedFileID")
        except Exception:
            value = None
        if value is None:
            continue  # PATIENT, STUDY and SERIES records reference no file
        parts = [str(value)] if isinstance(value, str) else [str(v) for v in value]
        where = f"{_relative(dicomdir, root)}#{i}"
        if not parts or not all(_safe_component(p) for p in parts):
            out.append(ArchiveEntry(dicomdir, where, "bad-reference"))
            continue
        path = _resolve(base, [p.strip() for p in parts])
        if path is None:
            guess = base.joinpath(*[p.strip() for p in parts])
            out.append(ArchiveEntry(guess, _relative(guess, root), "missing"))
        else:
            out.append(ArchiveEntry(path, _relative(path, root)))
    return out


def _safe_component(part: str) -> bool:
    part = part.strip()
    return bool(part) and part not in (".", "..") and not any(c in part for c in "/\\\0:")


def _resolve(base: Path, parts: list[str]) -> Path | None:
    """``base/part/...`` as it is on disk (each component matched exactly, else ignoring case), entering
    only real folders (no links); None when a component is absent."""
    current = base
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        candidate = current / part
        if not os.path.lexists(candidate):
            try:
                with os.scandir(current) as it:
                    match = next((e.name for e in it if e.name.upper() == part.upper()), None)
            except OSError:
                return None
            if match is None:
                return None
            candidate = current / match
        if not last and not stat.S_ISDIR(os.stat(candidate, follow_symlinks=False).st_mode):
            return None
        current = candidate
    return current
