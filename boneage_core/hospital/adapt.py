"""``boneage adapt``: adapt the model to a hospital, with k-fold cross-validated figures before and after.

    boneage adapt --images DIR --labels CSV --out site.pt [--model BASE.pt] [--method auto] [--folds 5]
    boneage adapt --from-log [--db PATH] [--study NAME] --out site.pt

The reference is a labels table (``id,boneage,male`` or RSNA's test format) or the consensus of a study's
blinded readings in the review log (:mod:`boneage_core.hospital.cases`). The base model estimates every
film once (kept in ``<out>.adapt/base-predictions.csv``, or ``--cache``); the method follows the number
of cases (:func:`boneage_core.hospital.recalibrate.choose`: an offset per sex, a line per sex from 50 cases of
that sex, an isotonic map per sex from 100, fine-tuning from 1000 cases, :mod:`boneage_core.hospital.finetune`). Every case's
"after" estimate comes from a fit that never saw it (k folds stratified by sex); the "before" figures are
the base model's on the same cases.

The adapted model is the base checkpoint written again with a new ``model_version``
(``<base>+adapt-<method>-n<N>``), ``meta["adaptation"]`` (base version and sha256, method, cases, per-sex
parameters, cross-validated figures, date) and either the per-sex maps (``adapter.*`` tensors, which the
predictor applies: :mod:`boneage_core.model.adapter`) or the fine-tuned weights. ``predict``, ``evaluate``
and the app use it with ``--model`` / ``BONEAGE_MODEL``. Beside it, ``<out>.adapt/`` keeps each case's
base and cross-validated estimates (``cv-predictions.csv``) and the metadata (``adaptation.json``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BoneAgeError
from ..review.target import db_arg

if TYPE_CHECKING:  # the models are imported when a command runs, not when the parser is built
    import numpy as np

    from .cases import CaseSet
    from .finetune import FinetuneConfig

#: Adaptation methods of ``--method``.
METHODS = ("auto", "offset", "linear", "isotonic", "finetune")


def adapt_model(
    predictor,
    cases: CaseSet,
    out: Path,
    *,
    method: str = "auto",
    folds: int = 5,
    seed: int = 0,
    cache: Path | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> dict:
    """Adapt ``predictor``'s model (a :class:`~boneage_core.model.predictor.BoneAgePredictor` of the base
    checkpoint) to ``cases`` and write the adapted checkpoint to ``out``; returns its ``adaptation``
    metadata (the adapted ``model_version`` and ``weights_sha256`` among it) with ``out`` added."""
    import numpy as np
    import torch

    from ..model.adapter import SEXES
    from ..model.checkpoint import weights_sha256
    from .cases import base_estimates
    from .finetune import (
        FinetuneConfig,
        canonical_images,
        cross_validate_finetune,
        finetune,
        member_records,
        tuned_state,
    )
    from .recalibrate import THRESHOLDS, choose, cross_validate, figures, fit_adapter, stratified_folds

    base = predictor.model
    if base.meta.adaptation:
        raise BoneAgeError(
            f"{base.path.name} ({base.meta.version}) is already adapted: adapt its base model instead"
        )
    work = out.with_name(out.name + ".adapt")
    months, _, unreadable = base_estimates(
        predictor, cases.cases, cache or work / "base-predictions.csv", progress=progress
    )
    keep = ~np.isnan(months)
    cases.skipped += unreadable
    cases.cases = [c for c, k in zip(cases.cases, keep, strict=True) if k]
    est = months[keep]
    ref, male = cases.arrays()
    n_by_sex = cases.n_by_sex()
    resolved, kinds = choose(method, n_by_sex)
    fold = stratified_folds(male, folds, seed)
    k = len(np.unique(fold))
    log(
        f"{len(est)} cases (F {n_by_sex['F']}, M {n_by_sex['M']}; {len(cases.skipped)} left out): "
        f"{resolved}" + (f" ({', '.join(f'{s} {kinds[s]}' for s in SEXES)})" if kinds else "")
    )
    payload = torch.load(base.path, map_location="cpu", weights_only=True)
    details: dict = {}
    if resolved == "finetune":
        cfg = finetune_cfg or FinetuneConfig(seed=seed)
        pre, dev = predictor.pre, predictor.device
        images = canonical_images(cases.cases, pre, predictor.localizer)
        cv = cross_validate_finetune(
            base.net, pre, images, male, ref, fold, cfg, predictor.tta, device=dev, log=log
        )
        tuned, info = finetune(base.net, pre, images, male, ref, cfg, device=dev, log=log)
        payload["state_dict"] = tuned_state(payload["state_dict"], tuned)
        details["finetune"] = {**cfg.to_dict(), **info}
        if base.meta.arch == "ensemble":
            payload["meta"]["training"]["members"] = member_records(
                payload["meta"]["training"]["members"],
                payload["state_dict"],
                info["members_trained"],
                f"+adapt-finetune-n{len(est)}",
            )
    else:
        cv = cross_validate(est, ref, male, kinds, fold)
        adapter, details["by_sex"] = fit_adapter(est, ref, male, kinds)
        payload["state_dict"] = {**payload["state_dict"], **adapter.state_dict()}
    version = f"{base.meta.version}+adapt-{resolved}-n{len(est)}"
    adaptation = {
        "method": resolved,
        "requested": method,
        "n": len(est),
        "n_by_sex": n_by_sex,
        **details,
        "base": {
            "model_version": base.meta.version,
            "weights_sha256": base.weights_sha256,
            "file": str(base.path),
            "tta": predictor.tta,
        },
        "reference": cases.source,
        "n_left_out": len(cases.skipped),
        "cv": {
            "folds": k,
            "seed": seed,
            "stratified_by": "sex",
            "before": figures(ref, est, male),
            "after": figures(ref, cv, male),
        },
        "thresholds": THRESHOLDS,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    cv_figures = adaptation["cv"]
    cv_figures["improves"] = bool(cv_figures["after"]["mae_months"] < cv_figures["before"]["mae_months"])
    if not cv_figures["improves"]:
        log(
            "warning: in cross-validation the adapted model is no closer to the reference than the base model "
            "(MAE before {:.2f}, after {:.2f}): keep the base model, or adapt on more cases".format(
                cv_figures["before"]["mae_months"], cv_figures["after"]["mae_months"]
            )
        )
    sha = weights_sha256(payload["state_dict"])  # what its predictions will carry (the meta is not hashed)
    adaptation.update(model_version=version, weights_sha256=sha)
    payload["meta"]["version"] = version
    payload["meta"]["adaptation"] = adaptation
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    result = {**adaptation, "out": str(out)}
    _write_work(work, cases, est, cv, fold, result)
    return result


def _write_work(
    work: Path, cases: CaseSet, est: np.ndarray, cv: np.ndarray, fold: np.ndarray, result: dict
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "cv-predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sex", "reference_months", "base_months", "adapted_cv_months", "fold"])
        for c, e, a, k in zip(cases.cases, est, cv, fold, strict=True):
            w.writerow(
                [
                    c.id,
                    "M" if c.male >= 0.5 else "F",
                    c.reference,
                    round(float(e), 3),
                    round(float(a), 3),
                    int(k),
                ]
            )
    (work / "adaptation.json").write_text(json.dumps({**result, "left_out": cases.skipped}, indent=2))


def report_lines(result: dict) -> list[str]:
    """The before/after table and the fit, as printed by ``boneage adapt``."""
    from ..model.adapter import SEXES

    cv = result["cv"]
    lines = [
        f"{cv['folds']}-fold cross-validation (each case estimated by a fit that never saw it):",
        "         n   MAE before  after   bias before  after",
    ]
    for name, b, a in [("all", cv["before"], cv["after"])] + [
        (s, cv["before"]["by_sex"][s], cv["after"]["by_sex"][s]) for s in SEXES
    ]:
        if not b.get("n"):
            continue
        lines.append(
            f"  {name:<4} {b['n']:>4}   {b['mae_months']:>6.2f}   {a['mae_months']:>6.2f}   "
            f"{b['bias_months']:>+7.2f}   {a['bias_months']:>+6.2f}"
        )
    for s, p in (result.get("by_sex") or {}).items():
        if p["kind"] == "isotonic":
            lines.append(f"  {s}: isotonic map, {len(p['knots_estimate_months'])} knots ({p['n']} cases)")
        else:
            lines.append(
                f"  {s}: {p['kind']}: reference = {p['slope']:.3f} x estimate {p['intercept_months']:+.2f} months "
                f"({p['n']} cases)"
            )
    lines.append(f"-> {result['out']}  {result['model_version']}  weights sha256 {result['weights_sha256']}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..model.predictor import BoneAgePredictor
    from ..settings import get_settings
    from .cases import cases_from_labels, cases_from_log
    from .finetune import FinetuneConfig

    if args.from_log == bool(args.images or args.labels):
        raise BoneAgeError("give either --images and --labels, or --from-log")
    if not args.from_log and not (args.images and args.labels):
        raise BoneAgeError("--images and --labels go together")
    predictor = BoneAgePredictor(args.model, device=args.device)
    if args.from_log:
        cases = cases_from_log(args.db or get_settings().review_db, args.study, predictor)
    else:
        cases = cases_from_labels(args.images, args.labels)
    cfg = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        train_blocks=args.train_blocks,
        members=tuple(args.members) if args.members else None,
        seed=args.seed,
    )
    result = adapt_model(
        predictor,
        cases,
        args.out,
        method=args.method,
        folds=args.folds,
        seed=args.seed,
        cache=args.cache,
        finetune_cfg=cfg,
        progress=lambda it: tqdm(it, unit="batch", desc="base estimates", mininterval=2),
    )
    print("\n".join(report_lines(result)))
    return 0


def add_parser(sub) -> None:
    """``boneage adapt`` (registered by :func:`boneage_core.cli.build_parser`)."""
    p = sub.add_parser(
        "adapt",
        help="adapt the model to a hospital's reference (recalibration or fine-tuning), with k-fold figures",
        description=__doc__.split("\n\n")[0],
    )
    src = p.add_argument_group("reference")
    src.add_argument("--images", type=Path, help="folder of the site's films, named <id>.<ext>")
    src.add_argument(
        "--labels", type=Path, help="id,boneage,male (or 'Case ID,Sex,Ground truth bone age (months)')"
    )
    src.add_argument(
        "--from-log",
        action="store_true",
        help="the consensus of a study's blinded readings in the review log",
    )
    src.add_argument(
        "--db",
        type=db_arg,
        help="review log, a file or a postgresql:// URL (default: $BONEAGE_REVIEW_DB or data/review.sqlite)",
    )
    src.add_argument("--study", help="the study (default: the log's only one)")
    p.add_argument("--out", type=Path, required=True, help="the adapted model, e.g. models/site.pt")
    p.add_argument("--model", type=Path, help="base checkpoint (default: the shipped one, or $BONEAGE_MODEL)")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto (default): an offset per sex; a line from 50 cases of a sex, isotonic from 100; "
        "fine-tuning from 1000 cases",
    )
    p.add_argument("--folds", type=int, default=5, help="k of the k-fold cross-validation (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and of fine-tuning")
    p.add_argument(
        "--cache", type=Path, help="base estimates cache (default: <out>.adapt/base-predictions.csv)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--epochs", type=int, default=5)
    ft.add_argument("--lr", type=float, default=1e-4)
    ft.add_argument("--batch-size", type=int, default=16)
    ft.add_argument("--train-blocks", type=int, default=1, help="last backbone stages trained (default 1)")
    ft.add_argument(
        "--members", type=int, nargs="+", help="ensemble members fine-tuned, by index (default all)"
    )
    p.set_defaults(func=_run)
