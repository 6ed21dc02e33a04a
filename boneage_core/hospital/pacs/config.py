"""The DICOM node's configuration: ``configs/dicom-node.yaml`` read into a frozen :class:`NodeConfig`.

    cfg = load_config(Path("configs/dicom-node.yaml"), port=11112, send_to="PACS@10.0.0.5:104")
    cfg.ae_title, cfg.port, cfg.peers[0].ae_title, cfg.targets()      # "BONEAGE", 11112, ...

Every value is checked when the file is read: an unknown key, an AE title longer than 16 characters or
with a backslash, a port outside 1-65535, a ``send_to`` naming no peer, an unknown quality flag or kind
of object raises :class:`NodeConfigError` naming the key. ``spool_dir`` defaults to
``<data_dir>/dicom-spool`` (settings), outside any clone when ``BONEAGE_DATA_DIR`` points there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ...errors import BoneAgeError
from ...model.gate import QUALITY_FLAGS
from ...settings import get_settings
from ..service import SEGMENTERS

#: What the node may send back for each film: the structured report and the secondary capture.
SEND_KINDS = ("sr", "sc")
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII but the backslash


class NodeConfigError(BoneAgeError, ValueError):
    """A configuration value the node cannot run with (the message names the key)."""


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity the node sends to (a PACS, a router)."""

    name: str
    ae_title: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """``AET@host:port``: how transfers name the peer (a machine, not a person)."""
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings (see ``configs/dicom-node.yaml`` for what each means)."""

    ae_title: str = "BONEAGE"
    port: int = 11112
    bind_address: str = "127.0.0.1"
    #: Refuse associations whose called AE title is not ours.
    require_called_ae: bool = True
    #: Calling AE titles allowed to associate (empty: any).
    allowed_calling_aes: tuple[str, ...] = ()
    peers: tuple[Peer, ...] = ()
    #: Names of the peers the objects go to (empty: every peer).
    send_to: tuple[str, ...] = ()
    send_back: tuple[str, ...] = SEND_KINDS
    #: Send an amended SR when a reader confirms or corrects a case.
    send_amended: bool = True
    max_attempts: int = 5
    backoff_s: float = 5.0
    backoff_max_s: float = 300.0
    #: Films received but not yet analysed; a full queue answers C-STORE with 0xA700.
    queue_size: int = 32
    spool_dir: Path = field(default_factory=lambda: get_settings().data_dir / "dicom-spool")
    #: Quality-gate flags for which a film is not put on the worklist (nothing is sent back).
    refuse_flags: tuple[str, ...] = ("not_hand",)
    #: Days an encrypted return header is kept (then no amended SR can be sent for that film).
    retention_days: float = 90.0
    #: Seconds between two looks at the log for new readings.
    poll_s: float = 5.0
    #: "auto" (SAM when its checkpoint is present), "sam" or "classical".
    segmenter: str = "localizer"
    #: Bone-age checkpoint (None: the shipped model).
    model: Path | None = None
    tta: bool = True
    #: Manufacturer written into the objects sent back.
    manufacturer: str = "boneage-core"

    def targets(self) -> tuple[Peer, ...]:
        """The peers objects go to."""
        if not self.send_to:
            return self.peers
        by_name = {p.name: p for p in self.peers}
        return tuple(by_name[n] for n in self.send_to)


def parse_peer(text: str, name: str = "cli") -> Peer:
    """``AET@HOST:PORT`` -> :class:`Peer` (``NodeConfigError`` when malformed)."""
    m = re.fullmatch(r"([^@]+)@(.+):(\d+)", text.strip())
    if not m:
        raise NodeConfigError(f"send-to: expected AET@HOST:PORT, got {text!r}")
    return _peer({"name": name, "ae_title": m.group(1), "host": m.group(2), "port": int(m.group(3))}, 0)


def load_config(
    path: Path | None,
    *,
    port: int | None = None,
    ae_title: str | None = None,
    send_to: str | None = None,
    spool_dir: Path | None = None,
) -> NodeConfig:
    """The node's configuration from the YAML at ``path`` (None: the defaults) and the command line's
    overrides: ``send_to`` (``AET@HOST:PORT``) replaces the peers by that one."""
    import yaml

    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise NodeConfigError(f"cannot read the node's configuration {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise NodeConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise NodeConfigError(f"{path}: expected a mapping of settings")
    cfg = from_dict(raw)
    changes: dict = {}
    if port is not None:
        changes["port"] = _port(port, "port")
    if ae_title is not None:
        changes["ae_title"] = _ae(ae_title, "ae_title")
    if send_to is not None:
        changes["peers"], changes["send_to"] = (parse_peer(send_to),), ()
    if spool_dir is not None:
        changes["spool_dir"] = Path(spool_dir).expanduser()
    return replace(cfg, **changes)


def from_dict(raw: dict) -> NodeConfig:
    """A :class:`NodeConfig` from the YAML's mapping (checked; see the module docstring)."""
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise NodeConfigError(
            f"unknown setting(s): {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})"
        )
    v: dict = {}
    for key in ("ae_title", "manufacturer", "bind_address", "segmenter"):
        if key in raw:
            v[key] = _text(raw[key], key)
    if "ae_title" in v:
        v["ae_title"] = _ae(v["ae_title"], "ae_title")
    if "segmenter" in v and v["segmenter"] not in SEGMENTERS:
        raise NodeConfigError(f"segmenter: one of {', '.join(SEGMENTERS)}, got {v['segmenter']!r}")
    if "port" in raw:
        v["port"] = _port(raw["port"], "port")
    for key in ("require_called_ae", "send_amended", "tta"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise NodeConfigError(f"{key}: true or false, got {raw[key]!r}")
            v[key] = raw[key]
    for key, low in (("max_attempts", 1), ("queue_size", 1)):
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < low:
                raise NodeConfigError(f"{key}: a whole number >= {low}, got {raw[key]!r}")
            v[key] = raw[key]
    for key in ("backoff_s", "backoff_max_s", "retention_days", "poll_s"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise NodeConfigError(f"{key}: a number > 0, got {value!r}")
            v[key] = float(value)
    if "peers" in raw:
        if not isinstance(raw["peers"], list):
            raise NodeConfigError("peers: a list of {name, ae_title, host, port}")
        v["peers"] = tuple(_peer(p, i) for i, p in enumerate(raw["peers"]))
        names = [p.name for p in v["peers"]]
        if len(set(names)) != len(names):
            raise NodeConfigError("peers: two peers have the same name")
    v["send_to"] = _names(raw.get("send_to"), "send_to")
    peers = {p.name for p in v.get("peers", ())}
    missing = [n for n in v["send_to"] if n not in peers]
    if missing:
        raise NodeConfigError(f"send_to: no peer named {', '.join(missing)}")
    if "send_back" in raw:
        v["send_back"] = _names(raw["send_back"], "send_back")
        bad = [k for k in v["send_back"] if k not in SEND_KINDS]
        if bad:
            raise NodeConfigError(f"send_back: {', '.join(bad)} (known: {', '.join(SEND_KINDS)})")
    if "refuse_flags" in raw:
        v["refuse_flags"] = _names(raw["refuse_flags"], "refuse_flags")
        bad = [f for f in v["refuse_flags"] if f not in QUALITY_FLAGS]
        if bad:
            raise NodeConfigError(f"refuse_flags: {', '.join(bad)} (known: {', '.join(QUALITY_FLAGS)})")
    if "allowed_calling_aes" in raw:
        v["allowed_calling_aes"] = tuple(
            _ae(a, "allowed_calling_aes") for a in _names(raw["allowed_calling_aes"], "allowed_calling_aes")
        )
    if raw.get("spool_dir") is not None:
        v["spool_dir"] = Path(_text(raw["spool_dir"], "spool_dir")).expanduser()
    if raw.get("model") is not None:
        v["model"] = Path(_text(raw["model"], "model")).expanduser()
    return NodeConfig(**v)


def _text(value, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise NodeConfigError(f"{key}: a non-empty string, got {value!r}")
    return value.strip()


def _ae(value, key: str) -> str:
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not _AE.match(text):
        raise NodeConfigError(
            f"{key}: an AE title is 1 to 16 printable ASCII characters without '\\', got {value!r}"
        )
    return text


def _port(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise NodeConfigError(f"{key}: a port number 1-65535, got {value!r}")
    return value


def _names(value, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise NodeConfigError(f"{key}: a list of names, got {value!r}")
    return tuple(x.strip() for x in value)


def _peer(raw, i: int) -> Peer:
    where = f"peers[{i}]"
    if not isinstance(raw, dict):
        raise NodeConfigError(f"{where}: a mapping {{name, ae_title, host, port}}, got {raw!r}")
    unknown = sorted(set(raw) - {"name", "ae_title", "host", "port"})
    if unknown:
        raise NodeConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    for key in ("name", "ae_title", "host", "port"):
        if key not in raw:
            raise NodeConfigError(f"{where}: {key} is missing")
    return Peer(
        name=_text(raw["name"], f"{where}.name"),
        ae_title=_ae(raw["ae_title"], f"{where}.ae_title"),
        host=_text(raw["host"], f"{where}.host"),
        port=_port(raw["port"], f"{where}.port"),
    )
