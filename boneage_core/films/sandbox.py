"""Untrusted decoding in a separate worker process, with a memory and a time limit.

A decoder library can abort its process on a hostile file (GDCM on a damaged JPEG 2000 codestream:
SIGABRT, not catchable) or allocate gigabytes for a few kilobytes. So the bytes are decoded by a child
process, ``python -m boneage_core.films.sandbox``, with an address-space limit of
``settings.decode_memory`` and no core dumps; the parent waits ``settings.decode_timeout_s`` at most.
Whatever happens there (an exception of any type, a signal, running out of memory or time) becomes an
:class:`~boneage_core.errors.UnreadableFilmError` in the parent, and the next film gets a fresh worker.

The worker is started on first use and kept for the following films (about 1 s to start; a few ms per
film after that). One per process (a forked child starts its own); calls are serialised by a lock.

Protocol on the worker's stdin/stdout: request = 8-byte little-endian length + the file's bytes;
reply = 4-byte length + JSON header + (on success) ``rows * cols`` bytes of uint8 pixels, row-major.
Nothing but numbers and short strings travels back in the header, so a compromised worker cannot make
the parent unpickle anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import errors
from ..errors import UnreadableFilmError
from ..settings import Settings, get_settings
from .decode import Decoded, decode_film_bytes

#: Exceptions the worker may name in a reply (anything else arrives as UnreadableFilmError).
_KINDS = {"UnreadableFilmError", "ImageSizeError", "NotARadiographError"}


class DecoderSandbox:
    """A worker process that decodes film bytes under limits. Thread-safe; restarts itself as needed."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    def decode(self, data: bytes) -> Decoded:
        """Decode ``data`` in the worker. Raises UnreadableFilmError (or a subclass) for any failure."""
        with self._lock:
            proc, fresh = self._worker()
            try:
                header, pixels = self._exchange(proc, data, 10.0 if fresh else 0.0)
            except UnreadableFilmError:
                self._stop()
                raise
        if not header.get("ok"):
            kind = header.get("kind") if header.get("kind") in _KINDS else "UnreadableFilmError"
            raise getattr(errors, kind)(str(header.get("message", "Could not decode the file"))[:2000])
        shape = tuple(int(v) for v in header["shape"])
        array = np.frombuffer(pixels, np.uint8).reshape(shape).copy()
        identity = header.get("identity")
        return Decoded(
            pixels=array,
            fields=dict(header["fields"]),
            identity=(identity[0], identity[1]) if identity is not None else None,
        )

    def close(self) -> None:
        with self._lock:
            self._stop()

    # ------------------------------------------------------------------------------------- the worker

    def _worker(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The running worker, started now if needed, and whether it was just started."""
        if self._owner != os.getpid():  # forked: the pipes belong to the parent's worker
            self._proc, self._owner = None, os.getpid()
        if self._proc is not None and self._proc.poll() is None:
            return self._proc, False
        package_root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MALLOC_ARENA_MAX": "2",
            # The worker decodes under this sandbox's limits, whatever its own environment says.
            "BONEAGE_DECODE_MEMORY": str(self.settings.decode_memory),
            "BONEAGE_MAX_SIDE": str(self.settings.max_side),
            "BONEAGE_MIN_SIDE": str(self.settings.min_side),
            "BONEAGE_MAX_PIXELS": str(self.settings.max_pixels),
            "BONEAGE_MAX_BYTES": str(self.settings.max_bytes),
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "boneage_core.films.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        return self._proc, True

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        proc.wait()

    def _exchange(self, proc: subprocess.Popen[bytes], data: bytes, grace: float) -> tuple[dict, bytes]:
        """Send one request, read its reply; ``grace``: extra seconds for a worker that is starting."""
        deadline = time.monotonic() + self.settings.decode_timeout_s + grace
        try:
            proc.stdin.write(len(data).to_bytes(8, "little"))
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(proc) from None
        size = int.from_bytes(self._read(proc, 4, deadline), "little")
        if size > 1 << 20:
            raise UnreadableFilmError("The decoder sent an invalid reply: the file was refused")
        header = json.loads(self._read(proc, size, deadline))
        pixels = b""
        if header.get("ok"):
            rows, cols = (int(v) for v in header["shape"])
            if rows * cols > self.settings.max_pixels or rows <= 0 or cols <= 0:
                raise UnreadableFilmError("The decoder sent an invalid reply: the file was refused")
            pixels = self._read(proc, rows * cols, deadline)
        return header, pixels

    def _read(self, proc: subprocess.Popen[bytes], n: int, deadline: float) -> bytes:
        fd, chunks, got = proc.stdout.fileno(), [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise UnreadableFilmError(
                    f"Decoding took longer than {self.settings.decode_timeout_s:.0f} s: the file was refused"
                )
            chunk = os.read(fd, min(n - got, 1 << 22))
            if not chunk:
                raise self._died(proc)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _died(self, proc: subprocess.Popen[bytes]) -> UnreadableFilmError:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            how = f"was stopped by {signal.Signals(-code).name}"
        elif code == _OUT_OF_MEMORY:
            how = "ran out of its memory limit"
        else:
            how = f"stopped (exit status {code})"
        return UnreadableFilmError(
            f"The image decoder {how} on this file: it is damaged or hostile, and was refused"
        )


_OUT_OF_MEMORY = 3
_default: DecoderSandbox | None = None
_default_lock = threading.Lock()


def sandbox() -> DecoderSandbox:
    """The process's shared sandbox (made on first use, and again when the settings change: the old
    one's worker is stopped, not left running)."""
    global _default
    with _default_lock:
        if _default is None or _default.settings is not get_settings():
            old, _default = _default, DecoderSandbox()
            if old is not None:
                old.close()
        return _default


# ------------------------------------------------------------------------------------------ worker side


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    settings = get_settings()
    while True:
        head = requests.read(8)
        if len(head) < 8:
            return
        data = requests.read(int.from_bytes(head, "little"))
        try:
            decoded = decode_film_bytes(data, settings)
        except MemoryError:
            os._exit(_OUT_OF_MEMORY)
        except UnreadableFilmError as exc:
            kind = type(exc).__name__ if type(exc).__name__ in _KINDS else "UnreadableFilmError"
            _reply(replies, {"ok": False, "kind": kind, "message": str(exc)})
            continue
        except Exception as exc:  # whatever a decoder library raises: a refusal, never a traceback
            message = f"Could not decode this file ({type(exc).__name__}: {str(exc)[:300]})"
            _reply(replies, {"ok": False, "kind": "UnreadableFilmError", "message": message})
            continue
        header = {
            "ok": True,
            "shape": list(decoded.pixels.shape),
            "fields": decoded.fields,
            "identity": list(decoded.identity) if decoded.identity is not None else None,
        }
        _reply(replies, header, decoded.pixels.tobytes())


def _reply(replies: BinaryIO, header: dict, payload: bytes = b"") -> None:
    text = json.dumps(header).encode("utf-8")
    replies.write(len(text).to_bytes(4, "little") + text)
    replies.write(payload)
    replies.flush()


def _main() -> None:
    import resource

    limit = int(os.environ.get("BONEAGE_DECODE_MEMORY", get_settings().decode_memory))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The protocol has stdout to itself: anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(os.dup(0), "rb")
    _serve(requests, replies)


if __name__ == "__main__":
    _main()
