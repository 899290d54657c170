"""Segment a folder of 2D images with boxes from a file: progress, resume, failures counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import MedsamkitError
from ..io.image2d import SUPPORTED_2D_SUFFIXES
from .prompts import BoxPrompt, prompts_for_image
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
    folder, out_dir = Path(folder), Path(out_dir)
    images = list_images(folder)
    summary = BatchSummary()
    unmatched = {p.image for p in prompts if p.image is not None}
    bar = tqdm(images, desc="segment", unit="img", disable=not progress)
    for path in bar:
        mine = prompts_for_image(prompts, path)
        for p in mine:
            unmatched.discard(p.image)
        if not mine:
            summary.no_boxes.append(str(path))
            continue
        output = out_dir / f"{path.stem}.png"
        if output.exists() and not overwrite:
            summary.skipped.append(str(path))
            continue
        overlay = None if overlay_dir is None else Path(overlay_dir) / f"{path.stem}.png"
        try:
            segmenter.segment_file(path, mine, output, overlay=overlay)
        except MedsamkitError as exc:
            summary.failed[str(path)] = str(exc)
            log.error("%s", exc)
            continue
        summary.done.append(str(path))
        bar.set_postfix(failed=len(summary.failed))
    if unmatched:
        log.warning("%d image names in the boxes file match no image in %s: %s", len(unmatched), folder,
                    ", ".join(sorted(unmatched)[:5]))
    return summary
