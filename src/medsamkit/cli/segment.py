"""``medsamkit segment``: box-prompted segmentation of one image, a folder of images or a volume.

Volumes (volume file endings, DICOM series folders) go to :mod:`medsamkit.cli.segment3d`.
Everything a user can get wrong (paths, boxes, outputs over inputs, a folder already done) is
checked before a model is loaded; the heavy modules are imported only then.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..inference.clicks import parse_point
from ..inference.prompts import BoxPrompt, parse_box, prompts_for_image, read_boxes_file
from . import segment3d
from .common import (add_intensity_options, add_model_options, check_model_options, check_readable, engine_request,
                     make_2d_predictor)
from .prompt_args import OrderedAppend, add_point_option, group_points

if TYPE_CHECKING:
    from ..inference.batch import FolderPlan
    from ..inference.fast2d import FastSegmenter2D
    from ..inference.segment2d import Segmenter2D

HELP = "segment an image, a folder of images or a 3D volume from box and click prompts"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help=HELP, description=HELP + ". Boxes are pixels of the original image: "
        "X0,Y0,X1,Y1 with x to the right and y down. One box gives a 0/255 mask, several a label map 1..N. "
        "Clicks (--point X,Y,LABEL) refine the box before them, in order, as in an interactive session. "
        "Without a box, a --checkpoint fine-tuned in automatic mode (medsamkit fit) segments each image's target. "
        "A --checkpoint of a baseline exported by medsamkit fit (unet: no box; prompted-resnet: boxes) runs the same way.",
    )
    p.add_argument("input", metavar="IMAGE", help="2D image (PNG, JPEG, BMP, TIFF, NPY, NPZ, DICOM slice), a folder "
                   "of images, or a volume (NIfTI, MHA, NRRD, DICOM series folder: see '3D volumes')")
    p.add_argument("--box", action=OrderedAppend, default=[], metavar="X0,Y0,X1,Y1", help="a box prompt (repeat for more)")
    add_point_option(p)
    p.add_argument("--label", action="append", type=int, default=None, metavar="ID",
                   help="label id of each object (--box, or the point-only object first), in order (default 1..N)")
    p.add_argument("--boxes-file", metavar="FILE", help="JSON or CSV list of boxes (columns image,x0,y0,x1,y1[,label]); "
                   "JSON entries may carry clicks: {\"box\": [...], \"points\": [[x, y, 1], [x, y, 0]]}")
    p.add_argument("-o", "--output", required=True, metavar="MASK", help="output mask: .png (or .tif/.bmp; lossy JPEG "
                   "is refused), a folder for folder input")
    p.add_argument("--overlay", metavar="PNG", help="also write the image with masks and boxes drawn (a folder for folder input)")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo images whose mask exists")
    add_model_options(p)
    add_intensity_options(p)
    segment3d.add_volume_options(p)
    p.set_defaults(run=run)


def _cli_prompts(args: argparse.Namespace) -> list[BoxPrompt]:
    """The objects of --box/--point/--label on a 2D image (a point-only object first)."""
    groups = group_points(args)
    objects: list[tuple[tuple | None, tuple]] = []
    if groups.leading:
        objects.append((None, tuple(parse_point(t, 2) for t in groups.leading)))
    for i, text in enumerate(args.box):
        objects.append((parse_box(text), tuple(parse_point(t, 2) for t in groups.by_box.get(i, []))))
    labels = args.label or []
    if labels and len(labels) != len(objects):
        raise InputError(None, f"{len(labels)} --label values for {len(args.box)} --box prompts"
                               f"{' and a point-only object' if groups.leading else ''}: give one per object")
    for lab in labels:
        if not 1 <= lab <= 65535:
            raise InputError(None, f"--label {lab} must be between 1 and 65535")
    return [BoxPrompt(box, label=labels[i] if labels else None, points=points)  # type: ignore[arg-type]
            for i, (box, points) in enumerate(objects)]


def run(args: argparse.Namespace) -> int:
    source = check_readable(args.input)
    check_model_options(args)
    if segment3d.wants_volume(args, source):
        return segment3d.run(args)
    if segment3d.has_volume_options(args):
        raise InputError(source, "3D options (--slice, --z-range, --recist, --boxes-from-labels, ...) need a volume: "
                                 "a NIfTI/MHA/NRRD file or a DICOM series folder")
    prompts = _cli_prompts(args)
    if args.boxes_file:
        prompts += read_boxes_file(check_readable(args.boxes_file, "boxes file not found"))
    if prompts and _automatic_checkpoint(args) and _baseline_checkpoint(args):
        raise InputError(args.checkpoint, "is a baseline that segments without a box (unet): "
                                          "leave out --box and --boxes-file")
    if not prompts:
        if _automatic_checkpoint(args):
            return _run_automatic(args, source)
        raise InputError(None, "no box given: use --box X0,Y0,X1,Y1 or --boxes-file FILE")

    if source.is_dir():
        return _run_folder(args, source, prompts)

    mine = [p for p in prompts if p.image is None] + prompts_for_image(prompts, source)
    if not mine:
        raise InputError(args.boxes_file, f"no box in the file is for {source.name}")
    _check_file_outputs(args, source)
    import numpy as np

    segmenter = _segmenter(args, mine, "latency")
    label_map = segmenter.segment_file(source, mine, args.output, overlay=args.overlay)
    n = len(np.unique(label_map)) - (1 if (label_map == 0).any() else 0)
    clicks = sum(len(p.points) for p in mine)
    if clicks:
        what = f"{len(mine)} object{'s' if len(mine) > 1 else ''}, {clicks} click{'s' if clicks != 1 else ''}"
    else:
        what = f"{len(mine)} box{'es' if len(mine) > 1 else ''}"
    print(f"wrote {args.output} ({what}, {n} non-empty object{'s' if n != 1 else ''})")
    if args.overlay:
        print(f"wrote {args.overlay}")
    return 0


def _check_file_outputs(args: argparse.Namespace, source: Path) -> None:
    """A single image's mask and overlay: neither over the input, nor over each other."""
    from ..io.writers import check_not_input, image_format

    for out, kind in ((args.output, "mask"), (args.overlay, "picture")):
        if out is not None:
            if Path(out).is_dir():
                raise InputError(out, "is a folder; a single image needs an output file path")
            check_not_input(out, [source, args.boxes_file, args.checkpoint])
            image_format(out, kind)  # the format its name says; masks lossless
    if args.overlay is not None and Path(args.overlay).resolve() == Path(args.output).resolve():
        raise InputError(args.overlay, "the overlay would replace the mask: give the overlay another path")


def _baseline_checkpoint(args: argparse.Namespace) -> bool:
    if args.checkpoint is None:
        return False
    from ..training.export_metadata import is_baseline_checkpoint

    return is_baseline_checkpoint(args.checkpoint)


def _automatic_checkpoint(args: argparse.Namespace) -> bool:
    """Whether --checkpoint was exported by an automatic-mode fine-tuning (its .json sidecar says so)."""
    if args.checkpoint is None:
        return False
    from ..training.export_metadata import is_automatic

    return is_automatic(args.checkpoint)


def _run_automatic(args: argparse.Namespace, source: Path) -> int:
    """No box and an automatic-mode checkpoint: segment each image's single target with no prompt."""
    from ..inference.automatic import AutomaticSegmenter, automatic_prompts

    plan = None
    if source.is_dir():
        plan = _plan_folder(args, source, automatic_prompts(source))
        if not plan.todo:
            return _finish_folder(args, None, plan)
    else:
        _check_file_outputs(args, source)
    predictor = make_2d_predictor(args)
    segmenter = AutomaticSegmenter(predictor, args.modality, args.window)
    if plan is not None:
        return _finish_folder(args, segmenter, plan)
    segmenter.segment_file(source, None, args.output, None, args.overlay)
    print(f"wrote {args.output} (automatic mode: no prompt)")
    if args.overlay:
        print(f"wrote {args.overlay}")
    return 0


def _run_folder(args: argparse.Namespace, folder: Path, prompts: list[BoxPrompt]) -> int:
    if not args.boxes_file or any(p.image is None for p in prompts):
        raise InputError(args.boxes_file or folder, "folder input needs a --boxes-file that names the image of every box")
    plan = _plan_folder(args, folder, prompts)
    if not plan.todo:  # every mask exists (or no image has boxes): no model to load
        return _finish_folder(args, None, plan)
    # several images: the encoder may take them two at a time (OpenVINO streams), read ahead
    todo = [p for _, mine in plan.todo for p in mine]
    return _finish_folder(args, _segmenter(args, todo, "throughput" if len(plan.todo) > 1 else "latency"), plan)


def _segmenter(args: argparse.Namespace, prompts: list[BoxPrompt], mode: str) -> Segmenter2D | FastSegmenter2D:
    """Boxes only, with engines an earlier run recorded: the torch-free fast path
    (:mod:`medsamkit.inference.fast2d`); otherwise the model is loaded."""
    from ..inference.fast2d import fast_segmenter

    if not _baseline_checkpoint(args):
        fast = fast_segmenter(engine_request(args), prompts, args.modality, args.window, mode)
        if fast is not None:
            return fast
    from ..inference.segment2d import Segmenter2D
    from ..inference.session import RefineConfig

    return Segmenter2D(make_2d_predictor(args, mode), args.modality, args.window,
                       RefineConfig(local_clicks=args.local_clicks))


def _plan_folder(args: argparse.Namespace, folder: Path, prompts: list[BoxPrompt]) -> FolderPlan:
    """Check the output folders against the input, then list the images left to segment."""
    from ..inference.batch import plan_folder

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "folder input needs an output folder, and this is a file")
    for target in (out, args.overlay):
        if target is not None and Path(target).resolve() == folder.resolve():
            raise InputError(target, "is the input folder: STEM.png outputs would replace or pass for its images; "
                                     "choose another folder")
    if args.overlay is not None and Path(args.overlay).resolve() == out.resolve():
        raise InputError(args.overlay, "is the mask folder: the overlays would replace the masks; choose another folder")
    return plan_folder(folder, prompts, out, overwrite=args.overwrite)


def _finish_folder(args: argparse.Namespace, segmenter: Segmenter2D | None, plan: FolderPlan) -> int:
    from ..inference.batch import run_plan

    out = Path(args.output)
    summary = run_plan(segmenter, plan, out, args.overlay, progress=not args.quiet, folder=args.input)
    print(summary.line())
    for path, err in summary.failed.items():
        print(f"  failed: {err}")
    print(f"masks in {out}")
    return 1 if summary.failed else 0
