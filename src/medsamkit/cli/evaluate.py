"""``medsamkit evaluate``: score a folder of predicted masks against the ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from ..choices import REPORT_CSV as CSV_NAME
from ..choices import REPORT_MARKDOWN as MARKDOWN_NAME
from ..choices import REPORT_SUMMARY as SUMMARY_NAME
from ..errors import InputError

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvalOptions

HELP = "score predicted masks against ground-truth masks (DSC, IoU, NSD, HD95)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help=HELP,
        description=HELP + ". Files are paired by case name (the name without .png/.nii.gz/...). "
        "A case without a prediction counts as a failure (scored as an empty mask) unless --only-predicted. Writes "
        f"{CSV_NAME}, {SUMMARY_NAME} and {MARKDOWN_NAME} into the report folder. NSD and HD95 use "
        "the voxel spacing of the files (mm for volumes; 2D images: 1 per pixel unless DICOM or "
        "--spacing says otherwise) and follow the DeepMind surface-distance definitions.")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted masks")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth masks")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="NSD tolerance in spacing units (mm for volumes, pixels for plain 2D images; default 1)")
    p.add_argument("--labels", metavar="1,2,...", help="label ids to score (default: every id found)")
    p.add_argument("--cases", metavar="SPLITFILE[:train|val]",
                   help="only the ids of a split file (both parts unless :train or :val is given)")
    p.add_argument("--gt-threshold", default="auto", metavar="auto|none|T",
                   help="ground truth: auto (default: JPEG and grey-level 8-bit masks > 127, 0/255 -> 0/1, "
                        "label maps as stored), none (values as stored) or a number T (label 1 where value > T)")
    p.add_argument("--pred-threshold", default="auto", metavar="auto|none|T", help="the same for predictions")
    p.add_argument("--spacing", metavar="S0,S1[,S2]", help="voxel size per array axis, overriding the files'")
    p.add_argument("--images", metavar="DIR",
                   help="the images the masks belong to: only recorded in the report, for compare's overlays")
    p.add_argument("--only-predicted", action="store_true",
                   help="score only the cases that have a prediction (default: a missing prediction counts as a "
                        "failure, scored as an empty mask)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.set_defaults(run=run)


def _numbers(text: str | None, what: str, kind: type) -> tuple | None:
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(None, f"{what} {text!r} must be comma-separated numbers") from None
    if not values:
        raise InputError(None, f"{what} {text!r} is empty")
    return values


def case_ids_from(spec: str) -> list[str]:
    """The ids of ``FILE``, ``FILE:train`` or ``FILE:val`` (a split file)."""
    from ..data.splits import read_split_file

    path, _, part = spec.rpartition(":")
    if part not in ("train", "val") or not path:
        path, part = spec, ""
    train, val = read_split_file(path)
    return {"train": train, "val": val}.get(part, train + val)


def options_from(args: argparse.Namespace) -> EvalOptions:
    from ..evaluation.evaluate import EvalOptions
    from ..evaluation.masks import parse_threshold

    labels = _numbers(args.labels, "--labels", int)
    if labels is not None and any(v <= 0 for v in labels):
        raise InputError(None, f"--labels {args.labels}: label ids must be positive")
    spacing = _numbers(args.spacing, "--spacing", float)
    if spacing is not None and (len(spacing) not in (2, 3) or any(v <= 0 for v in spacing)):
        raise InputError(None, f"--spacing {args.spacing}: give 2 or 3 positive numbers")
    if not args.tolerance >= 0:
        raise InputError(None, f"--tolerance {args.tolerance} must be >= 0")
    return EvalOptions(tolerance=args.tolerance, labels=labels, spacing=spacing,
                       gt_threshold=parse_threshold(args.gt_threshold),
                       pred_threshold=parse_threshold(args.pred_threshold))


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError(None, f"--workers {args.workers}: give 1 or more worker processes")
    from ..evaluation.evaluate import evaluate_folders
    from ..evaluation.report import markdown_table, write_report

    options = options_from(args)
    for folder, what in ((args.pred, "prediction"), (args.gt, "ground-truth"), (args.images, "image")):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(folder, f"{what} folder not found")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; the report needs a folder")
    case_ids = case_ids_from(args.cases) if args.cases else None
    evaluation = evaluate_folders(args.pred, args.gt, options, case_ids, workers=args.workers,
                                  only_predicted=args.only_predicted)
    summary = write_report(evaluation, out, args.pred, args.gt, args.images)
    print(markdown_table(summary), end="")
    print(f"report in {out} ({CSV_NAME}, {SUMMARY_NAME}, {MARKDOWN_NAME})")
    return 0
