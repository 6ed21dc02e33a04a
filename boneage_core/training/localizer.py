"""Distil SAM's hand masks into the hand localizer (:mod:`boneage_core.model.localizer`), and run it.

``boneage train-localizer --manifest M --out RUN [--export PT]``:

* the films and masks are those of a ``boneage preprocess --segmenter sam`` manifest (rows ``ok``; its
  ``source`` column names the film, ``mask_path`` the mask at film size);
* a fixed share of the films (:data:`HELDOUT_PERCENT`, chosen by a hash of the film id, so the split
  does not depend on the manifest's order or length) is held out: the Dice figures are measured on them
  and no training step sees them;
* training: AdamW, cosine schedule, binary cross-entropy plus soft Dice on the stride-2 logits, random
  rotation, scale, shift, flip and contrast on whole batches; ``RUN/last.pt`` is written every
  ``--checkpoint-every`` steps and at each epoch's end, so an interrupted run resumes mid-epoch;
* after each epoch the held-out Dice (the thresholded probability at 299 px against SAM's mask) is
  measured; the best epoch is exported in half precision with its figures in the checkpoint's meta.

``boneage localize --images DIR --labels CSV --out CSV [--masks NPZ]``: the hand box (canonical 299 px
coordinates, XYXY exclusive) of every film, and optionally the masks at :data:`MASK_SIDE` px as packed
bits (``np.packbits`` along the last axis) in a compressed ``.npz`` keyed by film id, and with
``--crops DIR`` the hand crops (:func:`boneage_core.model.localizer.hand_view`) a ``view: hand`` member
trains on, and with ``--carpal-crops DIR`` the carpal squares (``carpal_view``) of a ``view: carpal``
member: the predictor makes the same crops with the same functions at inference.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: Films whose id hashes below this percentage are held out.
HELDOUT_PERCENT = 15
#: Side of the masks ``boneage localize --masks`` stores.
MASK_SIDE = 64


def is_heldout(film_id: str) -> bool:
    return int(hashlib.sha256(film_id.encode()).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT


def read_pairs(manifest: Path) -> list[tuple[str, Path, Path]]:
    """``(id, film, mask)`` for every ``ok`` row of a preprocess manifest (mask paths relative to it)."""
    out = []
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok" and row["mask_path"]:
                out.append((row["id"], Path(row["source"]), manifest.parent / row["mask_path"]))
    return out


def load_arrays(pairs: list[tuple[str, Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical films ``(N, 299, 299) uint8`` and masks ``(N, 299, 299) uint8`` (0/1)."""
    from PIL import Image

    from ..films.read import read_film
    from ..model.transforms import canonical_film

    films, masks = [], []
    for _, film, mask in pairs:
        films.append(canonical_film(read_film(film.read_bytes(), name=film.name).pixels))
        m = Image.open(mask).convert("L").resize((299, 299), Image.Resampling.NEAREST)
        masks.append((np.asarray(m) > 127).astype(np.uint8))
    return np.stack(films), np.stack(masks)


def augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (rotation +-20 deg, scale 0.85-1.15, shift +-8 %, flip) of films ``(N,1,S,S)`` and
    masks alike, then contrast, brightness and gamma on the films (values in 0..1)."""
    n = x.shape[0]
    r = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    angle = r(-20, 20) * math.pi / 180
    scale = r(0.85, 1.15)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, r(-0.08, 0.08)], 1),
            torch.stack([sin * flip, cos, r(-0.08, 0.08)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast, bright, gamma = r(0.8, 1.25), r(-0.08, 0.08), r(0.75, 1.35)
    x = ((x - 0.5) * contrast.view(n, 1, 1, 1) + 0.5 + bright.view(n, 1, 1, 1)).clamp(0, 1)
    return x.pow(gamma.view(n, 1, 1, 1)), m


def _normalise(x01: torch.Tensor) -> torch.Tensor:
    from ..model.localizer import INPUT_SIDE
    from ..model.transforms import GREY_MEAN, GREY_STD

    x = F.interpolate(
        x01, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False, antialias=True
    )
    return (x - GREY_MEAN) / GREY_STD


def loss_fn(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    target = F.interpolate(m, size=logits.shape[-2:], mode="area")
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of one shape (1.0 when both are empty)."""
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


@torch.inference_mode()
def heldout_dice(net, films: np.ndarray, masks: np.ndarray, batch: int = 32) -> dict:
    """Dice of the localizer's thresholded probability against SAM's masks, 299 px, per film summarised."""
    from ..model.localizer import canonical_to_input

    net.eval()
    scores = []
    for i in range(0, len(films), batch):
        logits = net(canonical_to_input(torch.from_numpy(films[i : i + batch])))
        prob = torch.sigmoid(F.interpolate(logits, size=(299, 299), mode="bilinear", align_corners=False))
        for p, m in zip(prob[:, 0].numpy(), masks[i : i + batch], strict=True):
            scores.append(dice(p > 0.5, m > 0))
    s = np.array(scores)
    return {
        "heldout_n": len(s),
        "heldout_dice_mean": round(float(s.mean()), 4),
        "heldout_dice_median": round(float(np.median(s)), 4),
        "heldout_dice_p10": round(float(np.percentile(s, 10)), 4),
        "heldout_share_ge_095": round(float((s >= 0.95).mean()), 4),
    }


def train_localizer(args: argparse.Namespace) -> dict:
    from ..model.localizer import LocalizerNet, save_localizer

    torch.manual_seed(0)
    pairs = read_pairs(args.manifest)
    train = [p for p in pairs if not is_heldout(p[0])]
    held = [p for p in pairs if is_heldout(p[0])]
    if not train or not held:
        raise SystemExit(f"{args.manifest}: {len(train)} training and {len(held)} held-out films; need both")
    tf, tm = load_arrays(train)
    hf, hm = load_arrays(held)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = LocalizerNet(pretrained=not args.no_pretrained).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    spe = math.ceil(len(tf) / args.batch)
    total = spe * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    step, best, history = 0, None, []
    last = out / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, best, history = state["step"], state["best"], state["history"]
        print(f"resumed {last} at step {step} of {total}", flush=True)

    def save() -> None:
        tmp = last.with_suffix(".tmp")
        torch.save(
            {
                "net": net.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "step": step,
                "best": best,
                "history": history,
            },
            tmp,
        )
        tmp.replace(last)

    t0 = time.time()
    while step < total:
        epoch, within = divmod(step, spe)
        order = torch.randperm(len(tf), generator=torch.Generator().manual_seed(epoch))
        net.train()
        for b in range(within, spe):
            idx = order[b * args.batch : (b + 1) * args.batch]
            gen = torch.Generator().manual_seed(step)
            x = torch.from_numpy(tf[idx.numpy()]).unsqueeze(1).float() / 255
            m = torch.from_numpy(tm[idx.numpy()]).unsqueeze(1).float()
            x, m = augment(x, m, gen)
            loss = loss_fn(net(_normalise(x).contiguous(memory_format=torch.channels_last)), m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0:
                print(
                    f"step {step}/{total} epoch {epoch + 1} loss {loss.item():.4f} {time.time() - t0:.0f}s",
                    flush=True,
                )
            if step % args.checkpoint_every == 0:
                save()
        figures = {"epoch": epoch + 1, "step": step, **heldout_dice(net, hf, hm)}
        history.append(figures)
        print(json.dumps(figures), flush=True)
        if best is None or figures["heldout_dice_mean"] > best["heldout_dice_mean"]:
            best = figures
            meta = {
                "trained_on": f"SAM (MobileSAM) masks of {len(train)} RSNA 2017 training films",
                "manifest": str(args.manifest),
                "n_train": len(train),
                "heldout_percent": HELDOUT_PERCENT,
                "epochs": args.epochs,
                **figures,
            }
            sha = save_localizer(out / "best.pt", net, meta)
            best = {**figures, "weights_sha256": sha}
        save()
    if args.export:
        Path(args.export).parent.mkdir(parents=True, exist_ok=True)
        Path(args.export).write_bytes((out / "best.pt").read_bytes())
    summary = {"best": best, "history": history, "seconds": round(time.time() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


BOX_FIELDS = ["id", "x0", "y0", "x1", "y1", "area_fraction"]


def localize_folder(args: argparse.Namespace) -> int:
    """``boneage localize`` (see the module docstring). Resumable: every batch of films is appended to
    ``<out>.partial.csv`` (with the packed mask, in hex, and the localizer's hash) before the next one
    starts; a second run skips the films found there, and the last writes the outputs and removes it."""
    from ..films.read import read_film
    from ..model.localizer import carpal_view, hand_view, load_localizer
    from ..segment.batch import save_png
    from ..segment.postprocess import crop_box

    loc = load_localizer(args.localizer)
    for folder in (args.crops, args.carpal_crops):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    with open(args.labels, newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial.csv")
    fields = [*BOX_FIELDS, "mask64_hex", "localizer"]
    done: dict[str, dict] = {}
    if partial.is_file():
        with open(partial, newline="") as f:
            for row in csv.DictReader(f):
                if row["localizer"] != loc.weights_sha256:
                    raise SystemExit(f"{partial} was made by another localizer: remove it to start again")
                done[row["id"]] = row
        print(f"resuming: {len(done)} films done in {partial}", flush=True)
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        probs = loc.probabilities([b[1] for b in batch])
        new_rows = []
        for (i, pixels), p in zip(batch, probs, strict=True):
            m = p > 0.5
            box = crop_box(m, margin=0.0) if m.any() else (0, 0, 299, 299)
            small = F.interpolate(torch.from_numpy(p)[None, None], size=(MASK_SIDE, MASK_SIDE), mode="area")
            packed = np.packbits(small[0, 0].numpy() > 0.5, axis=-1)
            if args.crops:  # what a `view: hand` model reads, made by the predictor's own function
                save_png(args.crops / f"{i}.png", hand_view(pixels, loc, prob=p))
            if args.carpal_crops:  # and a `view: carpal` model
                save_png(args.carpal_crops / f"{i}.png", carpal_view(pixels, loc, prob=p))
            row = dict(zip(BOX_FIELDS, [i, *box, round(float(m.mean()), 4)], strict=True))
            new_rows.append({**row, "mask64_hex": packed.tobytes().hex(), "localizer": loc.weights_sha256})
        new_file = not partial.is_file()
        with open(partial, "a", newline="") as f:  # after the crops: a film listed here is complete
            w = csv.DictWriter(f, fieldnames=fields)
            if new_file:
                w.writeheader()
            w.writerows(new_rows)
        done.update({r["id"]: r for r in new_rows})
        batch.clear()

    t0 = time.time()
    for n, i in enumerate(ids, 1):
        if i in done:
            continue
        path = next(
            (
                args.images / f"{i}{e}"
                for e in (".jpg", ".png", ".dcm")
                if (args.images / f"{i}{e}").is_file()
            ),
            None,
        )
        if path is None:
            continue
        batch.append((i, read_film(path.read_bytes(), name=path.name).pixels))
        if len(batch) == 32:
            flush()
        if n % 500 == 0:
            print(f"{n}/{len(ids)} films, {time.time() - t0:.0f}s", flush=True)
    if batch:
        flush()
    rows = [done[i] for i in ids if i in done]
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=BOX_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if args.masks:
        shape = (MASK_SIDE, MASK_SIDE // 8)
        masks = {
            r["id"]: np.frombuffer(bytes.fromhex(r["mask64_hex"]), np.uint8).reshape(shape) for r in rows
        }
        np.savez_compressed(args.masks, **masks, __localizer__=np.array(loc.weights_sha256))
    partial.unlink(missing_ok=True)
    print(f"{len(rows)} films localized with {loc.name} in {time.time() - t0:.0f}s -> {args.out}")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train-localizer", help="distil SAM's hand masks into the fast hand localizer")
    t.add_argument(
        "--manifest", type=Path, required=True, help="a `boneage preprocess --segmenter sam` manifest"
    )
    t.add_argument("--out", type=Path, required=True, help="run folder (resumed when it holds last.pt)")
    t.add_argument(
        "--export", type=Path, help="copy the best checkpoint here, e.g. assets/models/hand-localizer.pt"
    )
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--checkpoint-every", type=int, default=50, help="steps between resumable checkpoints")
    t.add_argument("--no-pretrained", action="store_true", help="random encoder (tests only)")
    t.set_defaults(func=lambda a: print(json.dumps(train_localizer(a)["best"])) or 0)

    lo = sub.add_parser("localize", help="hand box (and mask) of every film of a folder, with the localizer")
    lo.add_argument("--images", type=Path, required=True)
    lo.add_argument("--labels", type=Path, required=True, help="CSV with an id column")
    lo.add_argument("--localizer", type=Path, default=Path("assets/models/hand-localizer.pt"))
    lo.add_argument("--out", type=Path, required=True, help="boxes CSV")
    lo.add_argument("--masks", type=Path, help="masks at 64 px, packed bits, compressed .npz")
    lo.add_argument(
        "--crops", type=Path, help="folder for the hand crops a `view: hand` model trains on (<id>.png)"
    )
    lo.add_argument(
        "--carpal-crops", type=Path, help="folder for the carpal squares a `view: carpal` model trains on"
    )
    lo.set_defaults(func=localize_folder)
