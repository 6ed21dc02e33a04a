"""``boneage export`` and ``boneage ensemble``: training checkpoints and ensembles written as shippable models
(half precision), validated on films when asked, with the figures stored in the checkpoint.

``boneage export --member VERSION`` writes one member of an ensemble as a model of its own, so that an
ensemble is always rebuilt from its members' files (``make views-ensemble``); ``--without-output-map`` writes
an ensemble without its output map, for the map's ablation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BoneAgeError

if TYPE_CHECKING:
    from ..model.checkpoint import LoadedModel, ModelMeta
    from ..model.net import BoneAgeNet


def export_command(args: argparse.Namespace) -> int:
    from ..model.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint)
    if args.member:
        net, meta = member_model(loaded, args.member)
    elif args.without_output_map:
        net, meta = unmapped_model(loaded)
    else:
        net, meta = loaded.net, loaded.meta
    if args.tta:
        meta.preprocess["tta"] = args.tta
    return _ship(args, net, meta)


def unmapped_model(loaded: LoadedModel):
    """The ensemble ``loaded`` with its output map replaced by the identity, version ``<version>-unmapped``:
    the ablation of the map on films that did not choose it (``make views-ensemble``)."""
    from ..model.net import ENSEMBLE_ARCH, OutputMap

    if loaded.meta.arch != ENSEMBLE_ARCH or loaded.net.output_map.is_identity:
        raise BoneAgeError(f"{loaded.path.name} ({loaded.meta.version}) has no output map to take out")
    loaded.net.output_map = OutputMap()
    meta = loaded.meta
    meta.version = f"{meta.version}-unmapped"
    meta.training = {**meta.training, "output_map_removed": True}
    meta.validation = {k: v for k, v in meta.validation.items() if k != "interval"}  # it was the mapped one's
    return loaded.net, meta


def member_model(loaded: LoadedModel, version: str) -> tuple[BoneAgeNet, ModelMeta]:
    """The member of version ``version`` of the ensemble ``loaded``, as a model of its own: ``(net, ModelMeta)``
    with the member's version, architecture, preprocessing, training and validation records, so that an
    ensemble can be built again from its members' files (``boneage ensemble``)."""
    from ..model.checkpoint import ModelMeta
    from ..model.ensemble import members_of
    from ..model.net import ENSEMBLE_ARCH

    if loaded.meta.arch != ENSEMBLE_ARCH:
        raise BoneAgeError(
            f"{loaded.path.name} is not an ensemble ({loaded.meta.version}): --member needs one"
        )
    members = members_of(loaded)
    found = [m for m in members if m.version == version]
    if not found:
        names = ", ".join(m.version for m in members)
        raise BoneAgeError(f"{loaded.path.name} has no ensemble member {version!r} (its members: {names})")
    m = found[0]
    meta = ModelMeta(
        m.version,
        m.arch,
        dict(m.preprocess),
        training={
            **m.training,
            "taken_from": {"ensemble": loaded.meta.version, "weights_sha256": loaded.weights_sha256},
        },
        validation=dict(m.validation),
    )
    return m.net, meta


def ensemble_command(args: argparse.Namespace) -> int:
    from ..model.ensemble import build_ensemble

    net, meta = build_ensemble(
        args.members,
        version=args.version,
        tta=args.tta,
        weights=args.weights,
        tune_images=args.tune_images,
        tune_labels=args.tune_labels,
        output_map_knots=args.output_map_knots,
        predictions_out=args.member_predictions,
        prune_tolerance=args.prune_tolerance,
    )
    return _ship(args, net, meta)


def _ship(args: argparse.Namespace, net, meta) -> int:
    """Save ``net`` for shipping (half precision unless --fp32); with validation labels, validate the saved
    weights themselves and store the figures, by age band too, in the checkpoint: they are the uncertainty
    each prediction reports."""
    import tempfile

    from ..model.checkpoint import load_checkpoint, save_checkpoint

    sha = save_checkpoint(args.out, net, meta, half=not args.fp32)
    if args.val_labels:
        from ..evaluate.folder import evaluate_folder
        from ..model.predictor import BoneAgePredictor

        with tempfile.TemporaryDirectory() as tmp:
            result = evaluate_folder(args.val_images, args.val_labels, Path(tmp), BoneAgePredictor(args.out))
        meta.validation = {
            **meta.validation,
            "export": {
                k: v for k, v in result.metrics.items() if k not in ("unreadable", "missing", "images")
            },
        }
        exported = load_checkpoint(args.out)
        sha = save_checkpoint(args.out, exported.net, meta, half=not args.fp32)
        m = result.metrics
        print(f"validation of the exported weights: n={m['n']} MAE {m['mae_months']:.2f} months")
    print(f"{args.out}: {meta.version}  weights sha256 {sha}  ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_parser(sub) -> None:
    from ..model.transforms import TTA_VIEWS

    x = sub.add_parser("export", help="write a training checkpoint as a shippable model (half precision)")
    x.add_argument("--checkpoint", type=Path, required=True, help="e.g. runs/<name>/best.pt")
    x.add_argument("--out", type=Path, required=True, help="e.g. assets/models/boneage-lite0-224.pt")
    x.add_argument(
        "--member",
        help="from an ensemble, write only its member of this version (e.g. 0.2.0+lite0-film-299-warm)",
    )
    x.add_argument(
        "--without-output-map",
        action="store_true",
        help="from an ensemble, write it with the identity in place of its output map (its ablation)",
    )
    x.add_argument("--fp32", action="store_true", help="keep single precision")
    x.add_argument(
        "--tta", choices=sorted(TTA_VIEWS), help="test-time augmentation to validate and ship with"
    )
    x.add_argument(
        "--val-labels", type=Path, help="validate the exported weights on these films and store the figures"
    )
    x.add_argument("--val-images", type=Path, help="folder of the validation films")
    x.set_defaults(func=export_command)

    en = sub.add_parser(
        "ensemble", help="combine trained models into one shippable checkpoint (mean estimate)"
    )
    en.add_argument(
        "members",
        type=Path,
        nargs="+",
        help="checkpoints (<runs>/<name>/best.pt, exported models, or ensembles: their members)",
    )
    en.add_argument("--out", type=Path, required=True, help="e.g. assets/models/boneage-lite0-ens.pt")
    en.add_argument("--version", required=True, help="version string of the ensemble")
    en.add_argument("--fp32", action="store_true", help="keep single precision")
    en.add_argument(
        "--tta", choices=sorted(TTA_VIEWS), help="test-time augmentation to validate and ship with"
    )
    en.add_argument(
        "--weights", type=float, nargs="+", help="member weights, in the order given (default: equal)"
    )
    en.add_argument(
        "--tune-labels",
        type=Path,
        help="choose the member weights on these films (e.g. configs/splits/rsna-val-tune.csv)",
    )
    en.add_argument(
        "--tune-images",
        type=Path,
        help="folder of the tune films themselves (a hand or carpal member's view is made from each film)",
    )
    en.add_argument(
        "--output-map-knots",
        type=float,
        nargs="+",
        metavar="MONTHS",
        help="fit a monotone linear spline of the estimate with these knots on the tune films, kept when "
        "its cross-validated MAE there is lower (undoes the regression toward the mean age)",
    )
    en.add_argument(
        "--prune-tolerance",
        type=float,
        metavar="MONTHS",
        help="with --tune-labels, keep only the cheapest subset of members (fewest input pixels) whose tune MAE "
        "is within MONTHS of the best subset's (e.g. 0.01)",
    )
    en.add_argument(
        "--member-predictions",
        type=Path,
        metavar="CSV",
        help="with --tune-labels, write each member's estimate of every tune film (id,boneage,<version>...)",
    )
    en.add_argument(
        "--val-labels", type=Path, help="validate the ensemble on these films and store the figures"
    )
    en.add_argument("--val-images", type=Path, help="folder of the validation films")
    en.set_defaults(func=ensemble_command)
