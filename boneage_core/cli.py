"""The ``boneage`` command line: ``boneage preprocess|contact-sheet ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _preprocess(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .preprocess import preprocess_folder

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
    )
    print(json.dumps(counts))
    print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def _contact_sheet(args: argparse.Namespace) -> int:
    from .contact_sheet import contact_sheet

    n = contact_sheet(args.manifest, args.out, columns=args.columns)
    print(f"{n} tiles -> {args.out}")
    return 0


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
    p.set_defaults(func=_preprocess)

    c = sub.add_parser("contact-sheet", help="PNG grid of mask overlays from a preprocess manifest")
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--columns", type=int, default=8)
    c.set_defaults(func=_contact_sheet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
