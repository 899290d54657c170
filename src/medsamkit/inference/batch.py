"""Segment a folder of 2D images with boxes from a file: progress, resume, failures counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..errors import InputError, MedsamkitError
from ..io.image2d import SUPPORTED_2D_SUFFIXES
from .prompts import BoxPrompt, prompts_for_image
from .pipeline import Job, ahead, encoder_slots

if TYPE_CHECKING:
    from .segment2d import Segmenter2D

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What a folder run did. ``failed`` maps an image path to its one-line error."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    no_boxes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{len(self.done)} segmented, {len(self.skipped)} already done (skipped), "
            f"{len(self.failed)} failed, {len(self.no_boxes)} without boxes"
        )


def list_images(folder: Path) -> list[Path]:
    """Supported 2D image files directly inside ``folder``, sorted by name (hidden files ignored)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_2D_SUFFIXES
    )


@dataclass
class FolderPlan:
    """What a folder run has to do, worked out before any model is loaded.

    ``todo`` holds (image, its prompts) pairs whose mask is missing (or every one with ``overwrite``);
    ``unmatched`` the image names of the boxes file that match no image of the folder.
    """

    todo: list[tuple[Path, list[BoxPrompt]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    no_boxes: list[str] = field(default_factory=list)
    unmatched: set[str] = field(default_factory=set)


def plan_folder(folder: str | Path, prompts: list[BoxPrompt], out_dir: str | Path, overwrite: bool = False) -> FolderPlan:
    """Pair each image of ``folder`` with its prompts; leave out those whose mask exists.

    Raises InputError when the folder holds no image, or no image has a prompt: a run that
    would do nothing is a mistake (a wrong folder or boxes file), not a success.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    plan = FolderPlan(unmatched={p.image for p in prompts if p.image is not None})
    images = list_images(folder)
    if not images:
        raise InputError(folder, "holds no 2D image to segment (looked for "
                                 f"{', '.join(sorted(SUPPORTED_2D_SUFFIXES))} files directly inside it)")
    for path in images:
        mine = prompts_for_image(prompts, path)
        for p in mine:
            plan.unmatched.discard(p.image)
        if not mine:
            plan.no_boxes.append(str(path))
        elif (out_dir / f"{path.stem}.png").exists() and not overwrite:
            plan.skipped.append(str(path))
        else:
            plan.todo.append((path, mine))
    if not plan.todo and not plan.skipped:
        raise InputError(folder, f"none of its {len(images)} images has a box: the boxes file must name them "
                                 f"(e.g. {images[0].name})")
    return plan


def segment_folder(
    segmenter: Segmenter2D,
    folder: str | Path,
    prompts: list[BoxPrompt],
    out_dir: str | Path,
    overlay_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Segment every image of ``folder`` that has boxes in ``prompts``; write ``out_dir/STEM.png``.

    Images whose mask already exists are skipped (rerun to resume) unless ``overwrite``.
    A failing image is logged and counted; the others go on.
    """
    plan = plan_folder(folder, prompts, out_dir, overwrite)
    return run_plan(segmenter, plan, out_dir, overlay_dir, progress, folder)


def run_plan(
    segmenter: Segmenter2D,
    plan: FolderPlan,
    out_dir: str | Path,
    overlay_dir: str | Path | None = None,
    progress: bool = True,
    folder: str | Path | None = None,
) -> BatchSummary:
    """Segment the images of a :func:`plan_folder` plan (``segmenter`` may be None when it has none)."""
    out_dir = Path(out_dir)
    summary = BatchSummary(skipped=list(plan.skipped), no_boxes=list(plan.no_boxes))
    jobs = [Job(path, mine, out_dir / f"{path.stem}.png",
                 None if overlay_dir is None else Path(overlay_dir) / f"{path.stem}.png") for path, mine in plan.todo]
    depth = encoder_slots(segmenter)
    if depth > 1:
        log.info("encoding up to %d images ahead of the decoder", depth)
    bar = tqdm(ahead(segmenter, jobs, depth) if depth > 1 else jobs, total=len(jobs), desc="segment", unit="img",
               disable=not progress or not plan.todo)
    for job in bar:
        path = job.path
        try:
            if job.error is not None:
                raise job.error
            if job.embedding is not None:
                segmenter.segment_file(path, job.prompts, job.output, overlay=job.overlay, rgb=job.rgb,
                                       embedding=job.embedding)
            else:
                segmenter.segment_file(path, job.prompts, job.output, overlay=job.overlay)
        except MedsamkitError as exc:
            summary.failed[str(path)] = str(exc)
            log.error("%s", exc)
            continue
        finally:  # the image and its embedding (4 MiB) are done with: a long run holds only those ahead
            job.rgb = job.embedding = None
        summary.done.append(str(path))
        bar.set_postfix(failed=len(summary.failed))
    if plan.unmatched:
        log.warning("%d image names in the boxes file match no image in %s: %s", len(plan.unmatched),
                    folder or "the folder", ", ".join(sorted(plan.unmatched)[:5]))
    return summary
