"""The ``boneage`` command line: ``boneage preprocess|contact-sheet|train|evaluate|predict|export ...``.

Several processes or GPUs: ``torchrun --nproc_per_node N -m boneage_core.cli train --config ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .review.target import db_arg, log_target


def _preprocess(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .segment.batch import preprocess_folder

    if args.device:
        import os

        os.environ["BONEAGE_DEVICE"] = args.device
    counts = preprocess_folder(
        args.images,
        args.out,
        labels=args.labels,
        segmenter=args.segmenter,
        limit=args.limit,
        progress=lambda it: tqdm(it, unit="film", desc="preprocess"),
        keep_names=args.keep_names,
    )
    print(json.dumps(counts))
    print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def _contact_sheet(args: argparse.Namespace) -> int:
    from .segment.contact_sheet import contact_sheet

    n = contact_sheet(args.manifest, args.out, columns=args.columns)
    print(f"{n} tiles -> {args.out}")
    return 0


def _parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _train(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig
    from .training.loop import train

    cfg = TrainConfig.from_yaml(args.config, _parse_set(args.set))
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _predictor(args: argparse.Namespace):
    from .model.predictor import BoneAgePredictor

    return BoneAgePredictor(args.model, device=args.device, tta=not args.no_tta)


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate.folder import evaluate_folder

    result = evaluate_folder(
        args.images,
        args.labels,
        args.out,
        _predictor(args),
        batch_size=args.batch_size,
        progress=lambda it: tqdm(it, unit="film", desc="evaluate", mininterval=2),
    )
    m = result.metrics
    if m["n"] == 0:
        print(f"no film could be evaluated ({m['n_unreadable']} unreadable, {m['n_missing']} missing)")
        return 1
    print(
        f"n={m['n']}  MAE {m['mae_months']:.2f} mo  RMSE {m['rmse_months']:.2f}  bias {m['bias_months']:+.2f}  "
        f"LoA [{m['loa_lower_months']:.1f}, {m['loa_upper_months']:.1f}]  within 6 mo {m['within_6_months']:.1%}  "
        f"within 12 mo {m['within_12_months']:.1%}  ({m['seconds']:.0f} s)"
    )
    for u in result.unreadable:
        print(f"unreadable: {u['id']}: {u['error']}", file=sys.stderr)
    if result.missing:
        print(f"{len(result.missing)} labelled ids have no film in {args.images}", file=sys.stderr)
    print(f"-> {args.out / 'metrics.json'}, {args.out / 'predictions.csv'}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate.calibrate import calibrate_model

    cal = calibrate_model(
        args.model,
        args.images,
        args.labels,
        args.out,
        level=args.level,
        outputs=args.outputs,
        device=args.device,
        progress=lambda it: tqdm(it, unit="film", desc="calibrate", mininterval=2),
    )
    print(
        f"{cal.level:.0%} interval, {cal.method}: q {cal.q:.3f} (eps {cal.eps:.2f}); on the {cal.n} calibration "
        f"films coverage {cal.tune_coverage:.1%}, mean width {cal.tune_mean_width_months:.1f} months -> {args.out}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .clinical.ages import parse_age
    from .errors import BoneAgeError
    from .films.read import read_film
    from .model.gate import QualityGate
    from .model.record import estimate_record

    predictor = _predictor(args)
    gate = QualityGate()
    given_age = parse_age(args.age) if args.age else None
    failures = 0
    if args.heatmap:
        args.heatmap.mkdir(parents=True, exist_ok=True)
    for path in args.files:
        try:
            film = read_film(path)
            pred = predictor.predict_film(film, args.sex)
        except (BoneAgeError, OSError) as e:
            failures += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": str(e)}))
            else:
                print(f"{path}: error: {e}", file=sys.stderr)
            continue
        flags = gate.flags(film.pixels, months=pred.months)
        record = {"file": str(path), **estimate_record(film, pred, given_age, flags)}
        if args.heatmap:
            from PIL import Image

            from .review.visual import heatmap_overlay

            heat = predictor.explain(film.pixels, pred.sex == "M")
            dest = args.heatmap / f"{film.sha256[:16]}_gradcam.png"  # the file name may name the patient
            Image.fromarray(heatmap_overlay(film.pixels, heat, args.opacity)).save(dest)
            record["heatmap"] = str(dest)
        if args.json:
            print(json.dumps(record))
        else:
            if pred.interval_low_months is not None:
                pm = f", {pred.interval_level:.0%} interval {pred.interval_low_months:.0f}-{pred.interval_high_months:.0f}"
            else:
                pm = f" +/- {pred.loa_halfwidth_months:.0f}" if pred.loa_halfwidth_months else ""
            z, category = record["z_score"], record["category"]
            cat = f"  z {z:+.1f} ({category})" if z is not None else f"  ({category})"
            cat += f"  flags: {', '.join(flags)} (review)" if flags else ""
            line = (
                f"{path}: {pred.years_months} ({pred.months:.1f} months{pm})  sex {pred.sex} ({pred.sex_source})"
                f"{cat}  model {pred.model_version}"
            )
            print(line + (f"  heatmap {record['heatmap']}" if args.heatmap else ""))
    return 1 if failures else 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", type=Path, help="bone-age checkpoint (default: the shipped one, or $BONEAGE_MODEL)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    p.add_argument("--no-tta", action="store_true", help="no mirrored-film test-time augmentation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boneage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="segment the hand in every film of a folder and crop it")
    p.add_argument("--images", type=Path, required=True, help="folder of films (DICOM, PNG, JPEG, TIFF)")
    p.add_argument("--out", type=Path, required=True, help="output folder (crops/, masks/, manifest.csv)")
    p.add_argument("--labels", type=Path, help="RSNA-style CSV (id,boneage,male): only these ids")
    p.add_argument(
        "--segmenter",
        choices=["auto", "sam", "classical"],
        default="auto",
        help="auto: SAM when its checkpoint is present, else classical (default)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    p.add_argument("--limit", type=int, help="stop after this many films")
    p.add_argument(
        "--keep-names",
        action="store_true",
        help="name the outputs after the files (default with --labels; otherwise ids are keyed pseudonyms "
        "of the names, which may hold patient identifiers)",
    )
    p.set_defaults(func=_preprocess)

    c = sub.add_parser("contact-sheet", help="PNG grid of mask overlays from a preprocess manifest")
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--columns", type=int, default=8)
    c.set_defaults(func=_contact_sheet)

    t = sub.add_parser("train", help="train the bone-age regressor from a YAML config")
    t.add_argument("--config", type=Path, required=True, help="e.g. configs/lite0-film-224.yaml")
    t.add_argument("--resume", action="store_true", help="continue from <out>/last.pt when it exists")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.epochs=2 (repeatable)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate", help="predict a folder of labelled films; write metrics.json, predictions.csv"
    )
    e.add_argument("--images", type=Path, required=True, help="films named <id>.<ext> (PNG, JPEG, DICOM)")
    e.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="id,boneage,male or 'Case ID,Sex,Ground truth bone age (months)'",
    )
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--batch-size", type=int, default=32)
    _add_model_args(e)
    e.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="bone age of one or more films")
    pr.add_argument("files", type=Path, nargs="+")
    pr.add_argument(
        "--sex", choices=["M", "F", "m", "f"], help="patient sex (default: from the DICOM header)"
    )
    pr.add_argument("--json", action="store_true", help="one JSON object per film")
    pr.add_argument("--heatmap", type=Path, metavar="DIR", help="write a Grad-CAM overlay PNG per film here")
    pr.add_argument("--opacity", type=float, default=0.45, help="heatmap opacity (0-1)")
    pr.add_argument(
        "--age",
        help="chronological age (months, or e.g. 10y6m); default: from the DICOM dates or PatientAge",
    )
    _add_model_args(pr)
    pr.set_defaults(func=_predict)

    ca = sub.add_parser(
        "calibrate", help="fit a model's prediction interval on held-out films (the tune half)"
    )
    ca.add_argument("--model", type=Path, help="bone-age checkpoint (default: the shipped one)")
    ca.add_argument("--images", type=Path, required=True, help="films named <id>.<ext>")
    ca.add_argument("--labels", type=Path, required=True, help="e.g. configs/splits/rsna-val-tune.csv")
    ca.add_argument("--level", type=float, default=0.9, help="coverage of the interval (default 0.9)")
    ca.add_argument("--out", type=Path, required=True, help="the calibrated copy of the model")
    ca.add_argument(
        "--outputs", type=Path, help="where the per-film predictions go (default: <out>.calibration/)"
    )
    ca.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    ca.set_defaults(func=_calibrate)

    cp = sub.add_parser(
        "compare", help="MAE of two evaluate runs on the same films, with a paired bootstrap CI"
    )
    cp.add_argument("a", type=Path, help="predictions.csv of run A")
    cp.add_argument("b", type=Path, help="predictions.csv of run B")
    cp.add_argument("--n-boot", type=int, default=5000)
    cp.set_defaults(func=_compare)

    m = sub.add_parser(
        "masks", help="put a preprocess manifest's masks in the review queue, or list usable ids"
    )
    m.add_argument(
        "action",
        choices=["import", "usable"],
        help="import: queue the manifest's masks for review; usable: print the ids not rejected",
    )
    m.add_argument("manifest", type=Path, help="manifest.csv written by `boneage preprocess`")
    m.add_argument(
        "--db",
        type=db_arg,
        help="review log, a file or a postgresql:// URL (default: $BONEAGE_REVIEW_DB or data/review.sqlite)",
    )
    m.set_defaults(func=_masks)

    from .evaluate import heat
    from .hospital import adapt, importer
    from .hospital.pacs import node
    from .review import commands, report, study_report
    from .training import export, gate, localizer

    # `boneage export`, `ensemble`, `heat-share`, `train-gate`, `train-localizer`/`localize`,
    # `study summary|list`, `report`, `import`, `dicom-node`, `adapt`: each defined beside its code
    for module in (export, heat, gate, localizer, study_report, report, importer, node, adapt):
        module.add_parser(sub)
    commands.add_commands(sub)  # `boneage users ...` (reader accounts), `boneage log verify|migrate`
    return parser


def _compare(args: argparse.Namespace) -> int:
    from .evaluate.compare import compare_predictions

    r = compare_predictions(args.a, args.b, n_boot=args.n_boot)
    print(json.dumps(r, indent=2))
    return 0


def _masks(args: argparse.Namespace) -> int:
    from .review.log import ReviewLog
    from .review.usable import usable_ids
    from .segment.manifest import read_manifest
    from .settings import get_settings

    db = args.db or get_settings().review_db
    if args.action == "import":
        n = ReviewLog(db).import_manifest(args.manifest)
        print(f"{n} new masks from {args.manifest} in the review queue of {log_target(db)}")
        return 0
    ids = usable_ids(args.manifest, db if log_target(db).exists() else None)
    print(
        f"{len(ids)} of {len(read_manifest(Path(args.manifest)))} films usable (mask ok or flagged, not rejected)",
        file=sys.stderr,
    )
    for i in ids:
        print(i)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .errors import BoneAgeError, CheckpointError
    from .films.labels import LabelFormatError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BoneAgeError, LabelFormatError, CheckpointError, FileNotFoundError, NotADirectoryError) as e:
        print(f"boneage {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
