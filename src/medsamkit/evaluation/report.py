"""Evaluation reports on disk: per-case CSV, summary JSON and a markdown table.

A report folder holds:

* ``per_case.csv``: one row per (case, label): ``case, label, status, dsc, iou, nsd, hd95,
  pred_voxels, gt_voxels``; NaN and inf written as ``nan`` and ``inf``.
* ``summary.json``: where the predictions and ground truth came from (absolute paths, so
  ``medsamkit compare`` can draw overlays), the options, the missing and unmatched cases, and
  per label and overall ``{metric: {mean, std, median, n, n_nan, n_inf}}`` (non-finite
  statistics as null; see :class:`~medsamkit.evaluation.accumulate.Stat`).
* ``summary.md``: the same figures as a markdown table.

Every file is written atomically (a crash leaves the previous file or none).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsamkit import choices
from medsamkit.data.cases import read_json
from medsamkit.errors import InputError
from medsamkit.io.writers import atomic_output

from .accumulate import CaseLabelResult, MetricAccumulator
from .evaluate import Evaluation
from .metrics import METRICS, Scores

CSV_NAME, SUMMARY_NAME, MARKDOWN_NAME = choices.REPORT_CSV, choices.REPORT_SUMMARY, choices.REPORT_MARKDOWN
CSV_COLUMNS: tuple[str, ...] = ("case", "label", "status", *METRICS, "pred_voxels", "gt_voxels")

#: What each metric means, written into summary.json.
DEFINITIONS = {
    "dsc": "Dice 2|P∩G|/(|P|+|G|)",
    "iou": "Jaccard |P∩G|/|P∪G|",
    "nsd": "normalised surface distance at the tolerance: DeepMind surface-distance definition "
           "(surfel areas from the 2x2(x2) neighbour-code table, distances with the spacing)",
    "hd95": "robust Hausdorff distance, 95th percentile of surfel-area-weighted distances, max of "
            "both directions (DeepMind compute_robust_hausdorff)",
    "empty": "both masks empty: every metric NaN (counted in n_nan, not averaged); one empty: "
             "DSC/IoU/NSD 0 and HD95 inf (counted in n_inf, left out of HD95 mean/std)",
    "missing": "a case without a prediction is scored as an empty prediction (status missing)",
}


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; InputError naming it on failure."""
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot write the file: {exc.strerror or exc}") from exc


def _csv_text(results: list[CaseLabelResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = r.row()
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summary_dict(evaluation: Evaluation, pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                 images_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The content of ``summary.json`` (JSON-safe); ``images_dir`` is only recorded (for the
    overlays of ``medsamkit compare``)."""
    acc = evaluation.accumulator
    stats = acc.summary()
    opts = evaluation.options
    return {
        "pred_dir": str(Path(pred_dir).resolve()),
        "gt_dir": str(Path(gt_dir).resolve()),
        "images_dir": str(Path(images_dir).resolve()) if images_dir else None,
        "tolerance": opts.tolerance,
        "hd_percentile": opts.percent,
        "labels": acc.labels,
        "spacing": list(opts.spacing) if opts.spacing else "from the files (2D: 1 per pixel)",
        "gt_threshold": opts.gt_threshold,
        "pred_threshold": opts.pred_threshold,
        "n_cases": stats["n_cases"],
        "n_failed": stats["n_failed"],
        "missing_predictions": evaluation.missing,
        "unmatched_predictions": evaluation.unmatched_predictions,
        "definitions": DEFINITIONS,
        "per_label": {label: {m: s.as_dict() for m, s in per.items()}
                      for label, per in stats["per_label"].items()},  # type: ignore[union-attr]
        "overall": {m: s.as_dict() for m, s in stats["overall"].items()},  # type: ignore[union-attr]
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """A markdown summary: one row per label (and an overall row when there are several)."""
    lines = [
        f"Cases: {summary['n_cases']} ({summary['n_failed']} failed: missing prediction). "
        f"NSD tolerance {summary['tolerance']}, in the units of the spacing (mm for volumes, "
        "pixels for 2D images without spacing).",
        "",
        "| label | DSC mean ± std | DSC median | IoU mean | NSD mean ± std | HD95 median | "
        "n | NaN (both empty) | HD95 inf |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = list(summary["per_label"].items())
    if len(rows) > 1:
        rows.append(("all", summary["overall"]))
    for label, st in rows:
        d, n, h = st["dsc"], st["nsd"], st["hd95"]
        lines.append(
            f"| {label} | {_fmt(d['mean'])} ± {_fmt(d['std'])} | {_fmt(d['median'])} | "
            f"{_fmt(st['iou']['mean'])} | {_fmt(n['mean'])} ± {_fmt(n['std'])} | "
            f"{_fmt(h['median'], 2) if h['median'] is not None or h['n_inf'] == 0 else 'inf'} | "
            f"{d['n']} | {d['n_nan']} | {h['n_inf']} |")
    if summary["missing_predictions"]:
        shown = ", ".join(summary["missing_predictions"][:10])
        lines += ["", f"Missing predictions: {shown}{' ...' if len(summary['missing_predictions']) > 10 else ''}"]
    return "\n".join(lines) + "\n"


def write_report(evaluation: Evaluation, out_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                 gt_dir: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the three report files into ``out_dir``; return the summary dict."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; the report needs a folder")
    summary = summary_dict(evaluation, pred_dir, gt_dir, images_dir)
    write_text(out / CSV_NAME, _csv_text(evaluation.accumulator.results))
    write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_text(out / MARKDOWN_NAME, markdown_table(summary))
    return summary


@dataclass
class Report:
    """A report folder read back: its summary and its per-case results."""

    folder: Path
    summary: dict[str, Any]
    accumulator: MetricAccumulator


def read_report(folder: str | os.PathLike) -> Report:
    """Read a folder written by :func:`write_report` (InputError naming the file if unusable)."""
    root = Path(folder)
    summary_path, csv_path = root / SUMMARY_NAME, root / CSV_NAME
    for p in (summary_path, csv_path):
        if not p.is_file():
            raise InputError(p, "not found: is this a folder written by medsamkit evaluate?")
    summary = read_json(summary_path)
    acc = MetricAccumulator()
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                scores = Scores(*(float(row[m]) for m in METRICS), int(row["pred_voxels"]),
                                int(row["gt_voxels"]))
                acc.add(row["case"], int(row["label"]), scores, row["status"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(csv_path, f"cannot read the per-case table: {exc}") from exc
    return Report(root, summary, acc)
