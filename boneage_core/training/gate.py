"""``boneage train-gate``: train the quality gate's network on the RSNA films, then measure its flags.

Free labels: each training film (the validation split excluded) is shown upright or mirrored and turned
0-3 quarter turns (8 orientation classes), and inverted a quarter of the time, after a small random
affine warp and contrast change. The features of the upright training films give the mean and the
(Ledoit-Wolf) covariance of the ``not_hand`` distance; its threshold is the 99.5th percentile of the
distances of the tune half's films, together with the 0.5th percentile of the orientation head's
confidence there (a picture that is not a hand has no orientation the network is sure of). :func:`measure_gate` then counts how often each flag fires on all
training films and on the report half, and how often it catches mirrored, inverted, rotated and
non-hand images built from the report half and from pictures that are not hand films.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..films.labels import read_labels
from ..model.gate import (
    GATE_SIDE,
    N_ORIENT,
    GateNet,
    QualityGate,
    flags_from,
    orient,
    to_tensor,
)


def load_films(images: Path, ids: list[str]) -> np.ndarray:
    """(N, GATE_SIDE, GATE_SIDE) uint8 of the trusted RSNA copies ``<id>.jpg`` (read with OpenCV)."""
    out = np.empty((len(ids), GATE_SIDE, GATE_SIDE), np.uint8)
    for k, i in enumerate(ids):
        img = cv2.imread(str(images / f"{i}.jpg"), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(images / f"{i}.jpg")
        out[k] = cv2.resize(img, (GATE_SIDE, GATE_SIDE), interpolation=cv2.INTER_AREA)
    return out


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small random affine warp (rotation, zoom, stretch, shift) and a contrast / gamma change."""
    s = GATE_SIDE
    angle, scale = rng.uniform(-15, 15), rng.uniform(0.9, 1.1)
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    m[0, :2] *= rng.uniform(0.85, 1.15)
    m[:, 2] += rng.uniform(-6, 6, 2)
    out = cv2.warpAffine(img, m, (s, s), borderMode=cv2.BORDER_CONSTANT, borderValue=int(np.median(img[:4])))
    x = out.astype(np.float32) / 255.0
    x = np.clip(x ** rng.uniform(0.7, 1.4) * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08), 0, 1)
    return (x * 255).astype(np.uint8)


def make_batch(
    films: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    classes = rng.integers(0, N_ORIENT, len(films))
    inverted = rng.random(len(films)) < 0.25
    out = np.empty_like(films)
    for k, (img, c, inv) in enumerate(zip(films, classes, inverted, strict=True)):
        x = orient(augment(img, rng), int(c))
        out[k] = 255 - x if inv else x
    return to_tensor(out), torch.from_numpy(classes), torch.from_numpy(inverted.astype(np.int64))


def train_gate(
    images: Path,
    labels: Path,
    exclude: Path,
    tune: Path,
    out: Path,
    *,
    epochs: int = 8,
    width: int = 16,
    batch_size: int = 128,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Train on the films of ``labels`` not in ``exclude``; threshold on ``tune``; save to ``out``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    held = set(read_labels(exclude))
    ids = [i for i in read_labels(labels) if i not in held]
    t0 = time.perf_counter()
    films = load_films(images, ids)
    log(f"{len(ids)} training films loaded in {time.perf_counter() - t0:.0f} s")
    net = GateNet(width)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(ids) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        order, correct, seen, t0 = rng.permutation(len(ids)), 0, 0, time.perf_counter()
        for start in range(0, len(ids), batch_size):
            x, c, inv = make_batch(films[order[start : start + batch_size]], rng)
            logits, inv_logits, _ = net(x)
            loss = loss_fn(logits, c) + loss_fn(inv_logits, inv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == c).sum()) + int((inv_logits.argmax(1) == inv).sum())
            seen += 2 * len(c)
        log(
            f"epoch {epoch + 1}/{epochs}: train accuracy {correct / seen:.4f} ({time.perf_counter() - t0:.0f} s)"
        )
    net.eval()
    feats = _features(net, films)
    from sklearn.covariance import LedoitWolf

    cov = LedoitWolf().fit(feats)
    meta = {
        "width": width,
        "side": GATE_SIDE,
        "epochs": epochs,
        "seed": seed,
        "n_train": len(ids),
        "labels": str(labels),
        "excluded": str(exclude),
        "feature_mean": cov.location_.tolist(),
        "feature_precision": cov.precision_.tolist(),
    }
    meta.update(not_hand_thresholds(net, meta, images, tune))
    _save(out, net, meta)
    log(
        f"-> {out} (not_hand: distance > {meta['not_hand_threshold']:.2f} or orientation confidence "
        f"< {meta['min_orientation_confidence']:.3f})"
    )
    return meta


def not_hand_thresholds(net: GateNet, meta: dict, images: Path, tune: Path) -> dict:
    """The ``not_hand`` thresholds, both from the upright films of ``tune``: the 99.5th percentile of
    the feature distance, and the 0.5th percentile of the orientation network's confidence (a picture
    that is not a hand has no orientation the network is sure of)."""
    tune_ids = list(read_labels(tune))
    films = load_films(images, tune_ids)
    mean, precision = np.asarray(meta["feature_mean"]), np.asarray(meta["feature_precision"])
    dist = _distances(net, films, mean, precision)
    with torch.no_grad():
        conf = np.concatenate(
            [
                net(to_tensor(films[i : i + 512]))[0].softmax(1).max(1).values.numpy()
                for i in range(0, len(films), 512)
            ]
        )
    return {
        "not_hand_threshold": float(np.percentile(dist, 99.5)),
        "min_orientation_confidence": float(np.percentile(conf, 0.5)),
        "not_hand_threshold_rule": (
            f"99.5th percentile of the distances and 0.5th percentile of the orientation confidence of the "
            f"{len(tune_ids)} films of {tune}"
        ),
    }


def recalibrate(gate_path: Path, images: Path, tune: Path) -> dict:
    """Recompute the ``not_hand`` thresholds of a trained gate in place (the network is unchanged)."""
    payload = torch.load(gate_path, map_location="cpu", weights_only=False)
    net = GateNet(payload["meta"]["width"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    payload["meta"].update(not_hand_thresholds(net, payload["meta"], images, tune))
    _save(gate_path, net, payload["meta"])
    return payload["meta"]


def _save(out: Path, net: GateNet, meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({"meta": meta, "state_dict": net.state_dict()}, tmp)
    tmp.replace(out)


@torch.no_grad()
def _features(net: GateNet, films: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [net(to_tensor(films[i : i + 512]))[2].double().numpy() for i in range(0, len(films), 512)]
    )


def _distances(net: GateNet, films: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = _features(net, films) - mean
    return np.sqrt(np.clip(np.einsum("ni,ij,nj->n", d, precision, d), 0, None))


# ------------------------------------------------------------------------------------------ measurement

CHALLENGES = {
    "mirrored": lambda x: orient(x, 1),
    "rotated_90": lambda x: orient(x, 2),
    "rotated_180": lambda x: orient(x, 4),
    "rotated_270": lambda x: orient(x, 6),
    "upside_down_mirrored": lambda x: orient(x, 5),
    "inverted": lambda x: 255 - x,
}
#: The flag each challenge must raise.
EXPECTED = {
    "mirrored": "mirrored",
    "rotated_90": "rotated",
    "rotated_180": "rotated",
    "rotated_270": "rotated",
    "upside_down_mirrored": "rotated",
    "inverted": "inverted",
    "not_hand": "not_hand",
}


def flag_rates(gate: QualityGate, films: list[np.ndarray]) -> dict[str, float]:
    """Share of ``films`` raising each flag of the gate's network, and raising any."""
    readings = [r for i in range(0, len(films), 256) for r in gate.read(films[i : i + 256])]
    flags = [flags_from(r, gate.thresholds, (299, 299)) for r in readings]
    names = ("not_hand", "inverted", "mirrored", "rotated")
    rates = {n: float(np.mean([n in f for f in flags])) for n in names}
    rates["any"] = float(np.mean([bool(f) for f in flags]))
    return rates


def measure_gate(
    gate: QualityGate, images: Path, labels: Path, report: Path, nonhand: dict[str, list[np.ndarray]]
) -> dict:
    """Flag rates on all films of ``labels`` and on ``report``; detection rates of each challenge set
    made from the report films, and of ``nonhand`` (pictures that are not hand films)."""

    def read_all(ids):
        return [cv2.imread(str(images / f"{i}.jpg"), cv2.IMREAD_GRAYSCALE) for i in ids]

    all_ids, report_ids = list(read_labels(labels)), list(read_labels(report))
    out = {"all_training_films": {"n": len(all_ids), **flag_rates(gate, read_all(all_ids))}}
    upright = read_all(report_ids)
    out["report_half_upright"] = {"n": len(upright), **flag_rates(gate, upright)}
    detection = {}
    for name, fn in CHALLENGES.items():
        rates = flag_rates(gate, [fn(x) for x in upright])
        detection[name] = {
            "n": len(upright),
            "flag": EXPECTED[name],
            "detected": rates[EXPECTED[name]],
            **rates,
        }
    pictures = [img for imgs in nonhand.values() for img in imgs]
    rates = flag_rates(gate, pictures)
    detection["not_hand"] = {"n": len(pictures), "flag": "not_hand", "detected": rates["not_hand"], **rates}
    for kind, imgs in nonhand.items():
        rates = flag_rates(gate, imgs)
        detection[f"not_hand:{kind}"] = {
            "n": len(imgs),
            "flag": "not_hand",
            "detected": rates["not_hand"],
            **rates,
        }
    out["detection"] = detection
    return out


# ------------------------------------------------------------------------------------------ command line


def add_parser(sub) -> None:
    """``boneage train-gate`` (registered by :mod:`boneage_core.cli`)."""
    g = sub.add_parser("train-gate", help="train the quality gate's network and measure its flags")
    g.add_argument("--images", type=Path, required=True, help="the RSNA training copies (<id>.jpg)")
    g.add_argument("--labels", type=Path, required=True, help="all training films (labels.csv)")
    g.add_argument("--exclude", type=Path, required=True, help="films not to train on (the validation split)")
    g.add_argument("--tune", type=Path, required=True, help="films choosing the not_hand threshold")
    g.add_argument("--report", type=Path, required=True, help="films for the measured rates only")
    g.add_argument("--out", type=Path, required=True, help="e.g. assets/models/boneage-gate.pt")
    g.add_argument("--metrics", type=Path, help="write the measured rates here (JSON)")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--measure-only", action="store_true", help="measure the gate at --out, do not train")
    g.add_argument(
        "--recalibrate",
        action="store_true",
        help="with --measure-only: first recompute the not_hand thresholds on --tune",
    )
    g.set_defaults(func=_command)


def _command(args) -> int:
    import json

    from .nonhand import nonhand_images

    if not args.measure_only:
        train_gate(args.images, args.labels, args.exclude, args.tune, args.out, epochs=args.epochs)
    elif args.recalibrate:
        recalibrate(args.out, args.images, args.tune)
    figures = measure_gate(QualityGate(args.out), args.images, args.labels, args.report, nonhand_images())
    text = json.dumps(figures, indent=2)
    print(text)
    if args.metrics:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(text + "\n")
    return 0
