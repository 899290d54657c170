"""Comparing several evaluation reports: a table, box plots and comparison grids.

Each model is a report folder written by ``medsamkit evaluate``. Its ``summary.json`` says where
its predictions and ground truth are (and its images when ``evaluate --images`` was given), so
grids need no extra paths unless the files have moved.

Cases for the grid are ranked by the first model's DSC (``rank="first"``: best, median and worst
by default) or by the spread between the models' DSCs (``rank="spread"``: largest spread
first), among the cases every report scored; or chosen by id.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsamkit import choices
from medsamkit.data.cases import index_by_stem, list_files
from medsamkit.errors import InputError
from medsamkit.io.image2d import read_image_2d
from medsamkit.io.volume import read_volume, volume_suffix

from .accumulate import Stat
from .masks import read_label_file
from .metrics import METRICS
from .plots import GridRow, box_plot, comparison_grid, display_rgb
from .report import Report, read_report

logger = logging.getLogger(__name__)

RANKS: tuple[str, ...] = choices.RANKS


@dataclass(frozen=True)
class Model:
    """One compared model: its name, its report, and where its predicted masks are."""

    name: str
    report: Report
    pred_dir: Path | None


def load_models(report_dirs: Sequence[str | os.PathLike], names: Sequence[str] | None = None,
                pred_dirs: Sequence[str | os.PathLike] | None = None) -> list[Model]:
    """Read the reports; names default to the folder names; prediction folders to the ones the
    reports recorded."""
    if len(report_dirs) < 1:
        raise InputError(None, "give at least one report folder")
    names = list(names) if names else [Path(d).name for d in report_dirs]
    if len(names) != len(report_dirs):
        raise InputError(None, f"{len(names)} names for {len(report_dirs)} reports: give one name per report")
    if len(set(names)) != len(names):
        raise InputError(None, f"model names must differ, got {', '.join(names)}")
    if pred_dirs is not None and len(pred_dirs) != len(report_dirs):
        raise InputError(None, f"{len(pred_dirs)} prediction folders for {len(report_dirs)} reports")
    models = []
    for i, (folder, name) in enumerate(zip(report_dirs, names)):
        report = read_report(folder)
        recorded = report.summary.get("pred_dir")
        pred = pred_dirs[i] if pred_dirs is not None else recorded
        models.append(Model(name, report, Path(pred) if pred else None))
    return models


def common_cases(models: Sequence[Model]) -> list[str]:
    """Cases every report scored (sorted); a warning when the reports' case sets differ."""
    sets = [set(m.report.accumulator.per_case_mean()) for m in models]
    common = set.intersection(*sets)
    if any(s != common for s in sets):
        logger.warning("the reports scored different cases; grids use the %d they share", len(common))
    return sorted(common)


def _groups(models: Sequence[Model]) -> list[str]:
    labels = sorted({label for m in models for label in m.report.accumulator.labels})
    return [str(v) for v in labels]


def metric_values(models: Sequence[Model], metric: str) -> dict[str, dict[str, list[float]]]:
    """``{label: {model: per-case values}}`` of ``metric`` (for box plots)."""
    out: dict[str, dict[str, list[float]]] = {}
    for group in _groups(models):
        out[group] = {m.name: [getattr(r.scores, metric) for r in m.report.accumulator.results
                               if str(r.label) == group] for m in models}
    return out


def _fmt(stat: Stat, field: str, digits: int) -> str:
    value = getattr(stat, field)
    if math.isnan(value):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def comparison_table(models: Sequence[Model]) -> str:
    """Markdown: per model (and label, when there are several) DSC mean ± std and median, NSD
    mean ± std, HD95 median and mean, n scored, n failed (missing predictions)."""
    groups = _groups(models)
    tolerance = {m.report.summary.get("tolerance") for m in models}
    lines = [
        f"NSD tolerance: {', '.join(str(t) for t in sorted(tolerance, key=str))} (spacing units); "
        "HD95 mean over finite values (inf: one mask empty, counted in the last column).",
        "",
        "| model |" + (" label |" if len(groups) > 1 else "") + " DSC mean ± std | DSC median | "
        "NSD mean ± std | HD95 median | HD95 mean | n | n failed | HD95 inf |",
        "|---|" + ("---|" if len(groups) > 1 else "") + "---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        results = m.report.accumulator.results
        n_failed = len(m.report.accumulator.failed_cases)
        for group in groups:
            rows = [r for r in results if str(r.label) == group]
            st = {metric: Stat.of(getattr(r.scores, metric) for r in rows) for metric in METRICS}
            label_cell = f" {group} |" if len(groups) > 1 else ""
            lines.append(
                f"| {m.name} |{label_cell} {_fmt(st['dsc'], 'mean', 4)} ± {_fmt(st['dsc'], 'std', 4)} | "
                f"{_fmt(st['dsc'], 'median', 4)} | {_fmt(st['nsd'], 'mean', 4)} ± {_fmt(st['nsd'], 'std', 4)} | "
                f"{_fmt(st['hd95'], 'median', 2)} | {_fmt(st['hd95'], 'mean', 2)} | {st['dsc'].n} | "
                f"{n_failed} | {st['hd95'].n_inf} |")
    return "\n".join(lines) + "\n"


def choose_cases(models: Sequence[Model], n: int = 3, rank: str = "first",
                 chosen: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(case id, why)`` for the grid: ``chosen`` ids, or ``n`` cases spread evenly over the
    ranking (best, median, worst for n = 3)."""
    means = [m.report.accumulator.per_case_mean("dsc") for m in models]
    if chosen:
        unknown = [c for c in chosen if any(c not in mean for mean in means)]
        if unknown:
            raise InputError(None, f"case(s) {', '.join(unknown)} are not in every report")
        return [(c, "chosen") for c in chosen]
    if rank not in RANKS:
        raise InputError(None, f"rank {rank!r} must be one of {', '.join(RANKS)}")
    cases = [c for c in common_cases(models) if not math.isnan(means[0][c])]
    if not cases:
        raise InputError(None, "no case with a defined DSC in every report")
    if rank == "first":
        ordered = sorted(cases, key=lambda c: (-means[0][c], c))
        names = ("best", "worst")
    else:
        spread = {c: np.nanmax([m[c] for m in means]) - np.nanmin([m[c] for m in means]) for c in cases}
        ordered = sorted(cases, key=lambda c: (-spread[c], c))
        names = ("largest spread", "smallest spread")
    n = max(1, min(n, len(ordered)))
    picks = sorted({int(i * (len(ordered) - 1) / max(1, n - 1) + 0.5) for i in range(n)})
    out = []
    for i in picks:
        why = names[0] if i == 0 else names[1] if i == len(ordered) - 1 else \
            "median" if i == (len(ordered) - 1) // 2 or i == len(ordered) // 2 else f"rank {i + 1}/{len(ordered)}"
        out.append((ordered[i], why))
    return out


@dataclass(frozen=True)
class GridSources:
    """Folders the grid reads: images (optional), ground truth, one prediction folder per model."""

    images: Path | None
    gt: Path
    preds: Sequence[Path | None]


def grid_sources(models: Sequence[Model], images: str | os.PathLike | None = None,
                 gt: str | os.PathLike | None = None) -> GridSources:
    """The folders, from the arguments or else from what the first report recorded."""
    summary = models[0].report.summary
    gt_dir = gt or summary.get("gt_dir")
    if not gt_dir or not Path(gt_dir).is_dir():
        raise InputError(gt_dir, "ground-truth folder not found; give --gt")
    image_dir = images or summary.get("images_dir")
    if image_dir and not Path(image_dir).is_dir():
        raise InputError(image_dir, "image folder not found")
    return GridSources(Path(image_dir) if image_dir else None, Path(gt_dir), [m.pred_dir for m in models])


def _find(index: dict[str, Path], case: str) -> Path | None:
    return index.get(case) or index.get(f"{case}_0000")  # nnU-Net channel suffix


def _index(folder: Path | None) -> dict[str, Path]:
    if folder is None or not folder.is_dir():
        return {}
    return index_by_stem(list_files(folder), str(folder))


def _read_picture(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    if volume_suffix(path) is not None:
        return read_volume(path)[0]
    return read_image_2d(path).pixels


def grid_rows(models: Sequence[Model], cases: Sequence[tuple[str, str]], sources: GridSources) -> list[GridRow]:
    """Read each chosen case's image, ground truth and predictions (a 3D case shows the slice
    with the largest ground-truth area)."""
    summary = models[0].report.summary
    gt_index, image_index = _index(sources.gt), _index(sources.images)
    pred_indexes = [_index(p) for p in sources.preds]
    means = [m.report.accumulator.per_case_mean("dsc") for m in models]
    rows = []
    for case, why in cases:
        gt_path = _find(gt_index, case)
        if gt_path is None:
            raise InputError(sources.gt, f"no ground-truth file for case {case}")
        gt = read_label_file(gt_path, summary.get("gt_threshold", "auto")).array
        preds = []
        for m, index in zip(models, pred_indexes):
            p = _find(index, case)
            preds.append(read_label_file(p, m.report.summary.get("pred_threshold", "auto")).array if p else None)
        image = _read_picture(_find(image_index, case))
        if gt.ndim == 3:
            z = int(np.argmax((gt > 0).sum(axis=(1, 2))))
            image = image[z] if image is not None and image.shape == gt.shape else image
            gt = gt[z]
            preds = [p[z] if p is not None else None for p in preds]
            why = f"{why}, slice {z}"
        if image is None or image.shape[:2] != gt.shape:
            image = np.full(gt.shape, 90, np.uint8)  # no (matching) image: grey background
        titles = [f"{m.name}: DSC {mean[case]:.3f}" if not math.isnan(mean[case]) else f"{m.name}: DSC –"
                  for m, mean in zip(models, means)]
        titles = [t if p is not None else f"{m.name}: missing" for t, p, m in zip(titles, preds, models)]
        rows.append(GridRow(f"{case} ({why})", display_rgb(image), gt, list(zip(titles, preds))))
    return rows


def write_box_plots(models: Sequence[Model], out_dir: Path) -> list[Path]:
    """``boxplot_<metric>.png`` for DSC, NSD and HD95; returns the paths (none, with a warning,
    when matplotlib is not installed: ``pip install "medsamkit[report]"``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning('box plots skipped: matplotlib is not installed (pip install "medsamkit[report]")')
        return []
    paths = []
    for metric in ("dsc", "nsd", "hd95"):
        path = out_dir / f"boxplot_{metric}.png"
        box_plot(metric_values(models, metric), metric, path)
        paths.append(path)
    return paths


def write_grid(models: Sequence[Model], cases: Sequence[tuple[str, str]], sources: GridSources,
               path: Path, panel: int = 256) -> tuple[int, int]:
    """The comparison grid of ``cases``; returns its (height, width)."""
    return comparison_grid(grid_rows(models, cases, sources), path, panel)
