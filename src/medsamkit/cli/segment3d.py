"""``medsamkit segment VOLUME``: the 3D side of the segment verb.

A volume file (``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) or a folder holding
a DICOM series is segmented by slice propagation (:func:`medsamkit.inference.volume3d.segment_volume`);
:mod:`medsamkit.cli.segment` sends such inputs here and keeps 2D images and image folders.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import DEFAULT_OVERLAP, OVERLAP_RULES
from ..errors import InputError
from ..inference.clicks import parse_point
from ..inference.prompts import read_boxes_file
from .common import check_readable, make_predictor
from .prompt_args import OrderedAppend, group_points

if TYPE_CHECKING:
    from ..inference.prompts3d import PromptSpec, VolumePrompt

#: Options that only make sense for volumes (their argparse dest names).
VOLUME_ONLY = ("slice", "z_range", "recist", "boxes_from_labels", "labels", "stop_when_empty",
               "unbounded", "keep_largest", "fill_holes", "series")


def add_volume_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "3D volumes", "VOLUME is a NIfTI/MHA/NRRD file or a DICOM series folder; boxes are voxel indices "
        "(x column, y row, z slice, 0-based): --box X0,Y0,Z0,X1,Y1,Z1 segments the middle slice and "
        "propagates up to Z1 and down to Z0; --point X,Y,Z,LABEL clicks refine it. -o must end in a volume "
        "ending (e.g. .nii.gz).")
    g.add_argument("--slice", action="append", type=float, default=None, metavar="Z",
                   help="key slice of each 4-number --box X0,Y0,X1,Y1 (give one for all, or one per box)")
    g.add_argument("--z-range", action="append", default=None, metavar="Z0,Z1",
                   help="slices to propagate over for 4-number boxes and --recist lines (one for all, or one "
                        "per prompt); default: the key slice +- half the box's (line's) size in mm")
    g.add_argument("--recist", action=OrderedAppend, default=[], metavar="X0,Y0,X1,Y1,Z",
                   help="a lesion's longest diameter on slice Z: a square box 1.1 x the line's length "
                        "around its midpoint (--label values go to --box prompts first, then these)")
    g.add_argument("--boxes-from-labels", metavar="LABELS",
                   help="evaluation: one box per label of this label volume (key slice = largest area, "
                        "z range = the label's extent); the output keeps the label ids")
    g.add_argument("--labels", metavar="ID,ID,...", help="with --boxes-from-labels: only these label ids")
    g.add_argument("--grow", type=int, default=None, metavar="PX",
                   help="next slice's box = previous mask's bounding box grown by PX pixels of the model's input "
                        "frame, clipped to it (LiteMedSAM: its 256 px frame, as the official 3D script; 3 px there "
                        "are about 6 px of a 512 px slice; MedSAM/SAM: 1024 px) (default: the model's, 3; "
                        "litemedsam-clicks 1)")
    g.add_argument("--keep-topology", action=argparse.BooleanOptionalAction, default=None,
                   help="decode a propagated slice again when its mask turned from solid into a ring or back from "
                        "the slice before (a decoder that tells a ring from the disc inside it by the box's margin) "
                        "(default: the model's: on for litemedsam-clicks, off for the others)")
    g.add_argument("--unbounded", action="store_true",
                   help="do not clip the boxes propagated from a 3D box to its x, y extent (default: clip, since a "
                        "3D box bounds its object on every slice; the official LiteMedSAM script does not)")
    g.add_argument("--stop-when-empty", action="store_true",
                   help="stop an object's propagation at its first empty slice (default: go on to the "
                        "end of its z range with the key box, as LiteMedSAM does)")
    g.add_argument("--overlap", choices=list(OVERLAP_RULES), default=DEFAULT_OVERLAP,
                   help="a voxel two objects claim goes to the object given last (default, as the official "
                        "LiteMedSAM script: give an inner object after the one around it), to the highest logit, "
                        "or to the object with the smaller mask on that slice; chosen by measurement on ACDC "
                        "cardiac MR (docs/benchmarks.md: LV Dice 0.97 last, 0.38 logit)")
    g.add_argument("--keep-largest", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each label's largest 3D connected component (default: on for SAM2-family "
                        "models, as MedSAM2 does; off for LiteMedSAM/MedSAM/SAM)")
    g.add_argument("--fill-holes", action="store_true", help="fill enclosed holes of each label in 3D")
    g.add_argument("--series", metavar="UID|INDEX", help="DICOM folders with several series: which one")


def has_volume_options(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) not in (None, False, []) for name in VOLUME_ONLY)


def _names_images(boxes_file: str | None) -> bool:
    """True when a 2D boxes file names the image of every box (the folder mode's file)."""
    if not boxes_file:
        return False
    try:
        return all(p.image is not None for p in read_boxes_file(boxes_file))
    except InputError:
        return False


def wants_volume(args: argparse.Namespace, source: Path) -> bool:
    """Whether ``medsamkit segment`` should treat ``source`` as a volume.

    Volume file endings: yes. A folder: yes when 3D options or a 6-number --box are given, or when
    it holds a DICOM series and no other images and the boxes file does not name images (a
    folder of 2D images with per-image boxes stays the 2D folder mode).
    """
    from ..inference.batch import list_images
    from ..io.dicom_series import list_dicom_series
    from ..io.volume import volume_suffix

    if volume_suffix(source) is not None:
        return True
    if not source.is_dir():
        return False
    if has_volume_options(args) or any(len([v for v in b.split(",") if v.strip()]) == 6 for b in args.box):
        return True
    if any(p.suffix.lower() not in (".dcm", ".dicom") for p in list_images(source)):
        return False
    return bool(list_dicom_series(source)) and not _names_images(args.boxes_file)


def _one_each(values: list, n: int, option: str) -> list:
    """``values`` given once (for all n prompts) or n times; [None] * n when not given."""
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise InputError(None, f"{len(values)} {option} values for {n} prompts that take one: give one for all, "
                               "or one per prompt")
    return values


def _cli_specs(args: argparse.Namespace) -> list[PromptSpec]:
    """PromptSpecs from --box/--recist/--point with --label/--slice/--z-range, then from --boxes-file.

    Objects in order: a point-only object (points before any box), the --box prompts, the
    --recist lines; each takes the --point values given just after it.
    """
    from ..inference.prompts3d import PromptSpec, box_spec, parse_pair, read_boxes3d_file, recist_spec

    groups = group_points(args)
    lead = 1 if groups.leading else 0
    n_boxes = len(args.box)
    n_objects = lead + n_boxes + len(args.recist)
    labels = args.label or []
    if labels and len(labels) != n_objects:
        raise InputError(None, f"{len(labels)} --label values for {n_objects - lead} --box/--recist prompts"
                               f"{' and a point-only object' if lead else ''}: give one per prompt")
    for lab in labels:
        if not 1 <= lab <= 65535:
            raise InputError(None, f"--label {lab} must be between 1 and 65535")
    labels = labels or [None] * n_objects
    lead_label, labels = (labels[0] if lead else None), labels[lead:]
    flat = [len([v for v in b.split(",") if v.strip()]) != 6 for b in args.box]
    n_flat = sum(flat)
    if args.slice and not n_flat:
        raise InputError(None, "--slice is the key slice of a 4-number --box X0,Y0,X1,Y1; no such box given")
    slices = iter(_one_each(args.slice or [], n_flat, "--slice"))
    ranges_given = [parse_pair(r, "--z-range") for r in (args.z_range or [])]
    if ranges_given and not (n_flat + len(args.recist)):
        raise InputError(None, "--z-range is for 4-number --box prompts and --recist lines; none given")
    ranges = iter(_one_each(ranges_given, n_flat + len(args.recist), "--z-range"))
    specs = []
    if lead:
        clicks = tuple(parse_point(t, 3) for t in groups.leading)
        specs.append(PromptSpec("points", (), lead_label, origin=f"--point {groups.leading[0]}", points=clicks))
    for i, (text, label, is_flat) in enumerate(zip(args.box, labels, flat)):
        spec = box_spec(text, label, next(slices), next(ranges)) if is_flat else box_spec(text, label)
        specs.append(replace(spec, points=tuple(parse_point(t, 3) for t in groups.by_box.get(i, []))))
    for j, (text, label) in enumerate(zip(args.recist, labels[n_boxes:])):
        spec = recist_spec(text, label, next(ranges))
        specs.append(replace(spec, points=tuple(parse_point(t, 3) for t in groups.by_recist.get(j, []))))
    if args.boxes_file:
        specs += read_boxes3d_file(args.boxes_file)
    return specs


def _label_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        ids = []
    if not ids or any(v < 1 for v in ids):
        raise InputError(None, f"--labels {text!r} is not a list of label ids >= 1 such as 1,2,3")
    return ids


def _check_outputs(args: argparse.Namespace, source: Path) -> Path:
    from ..io.volume import VOLUME_SUFFIXES, volume_suffix
    from ..io.writers import check_not_input

    output = Path(args.output)
    if volume_suffix(output) is None:
        raise InputError(output, f"a volume's segmentation is a volume: end the output in one of "
                                 f"{', '.join(VOLUME_SUFFIXES)}")
    if args.overlay is not None:
        raise InputError(args.overlay, "--overlay is for 2D images; open the input and the output volume "
                                       "together in a viewer (ITK-SNAP, 3D Slicer)")
    check_not_input(output, [source, args.boxes_from_labels, args.boxes_file, args.checkpoint])
    if args.boxes_file is not None:
        check_readable(args.boxes_file, "boxes file not found")
    if args.boxes_from_labels is not None:
        check_readable(args.boxes_from_labels, "label volume not found")
    return output


def _prompts(args: argparse.Namespace, source: Path, shape: tuple[int, ...], geometry) -> list[VolumePrompt]:
    from ..inference.volume3d import read_label_prompts

    if args.labels and not args.boxes_from_labels:
        raise InputError(None, "--labels selects labels of --boxes-from-labels; give that option too")
    if args.boxes_from_labels:
        if args.box or args.recist or args.boxes_file or getattr(args, "point", None):
            raise InputError(None, "give either --boxes-from-labels or prompts (--box, --recist, --point, "
                                   "--boxes-file), not both")
        return read_label_prompts(args.boxes_from_labels, shape, _label_ids(args.labels))
    specs = _cli_specs(args)
    if not specs:
        raise InputError(None, "no box given: use --box X0,Y0,Z0,X1,Y1,Z1, --recist, --point X,Y,Z,1, "
                               "--boxes-file FILE or --boxes-from-labels LABELS")
    return [spec.resolve(shape, geometry, source) for spec in specs]


def run(args: argparse.Namespace) -> int:
    """Segment one volume: read, resolve the prompts, propagate, write with the input's geometry."""
    from ..training.export_metadata import is_baseline_checkpoint
    from ..inference.propagate import PropagationConfig
    from ..inference.session import RefineConfig
    from ..inference.volume3d import Cleanup, VolumeOptions, is_dicom_ct, segment_volume
    from ..io.image2d import check_pixel_values
    from ..io.volume import read_volume, write_volume

    source = Path(args.input)
    output = _check_outputs(args, source)
    if args.checkpoint is not None and is_baseline_checkpoint(args.checkpoint):
        raise InputError(args.checkpoint, "is a 2D baseline (unet/prompted-resnet); 3D propagation needs a "
                                          "SAM-family model (LiteMedSAM, MedSAM, SAM or one fine-tuned from them)")
    if args.grow is not None and args.grow < 0:
        raise InputError(None, f"--grow {args.grow} must be >= 0 pixels")
    series = args.series
    if series is not None and series.isdigit():
        series = int(series)
    array, geometry = read_volume(source, series=series)
    check_pixel_values(array, source, noun="volume", unit="voxel")  # before the model loads
    prompts = _prompts(args, source, array.shape, geometry)

    modality = args.modality
    if modality is None and args.window is None and is_dicom_ct(source):
        modality = "ct"  # DICOM CT in Hounsfield units: abdomen window, as for 2D DICOM CT slices
    options = VolumeOptions(
        modality=modality, window=args.window,
        propagation=PropagationConfig(grow_px=args.grow, stop_when_empty=args.stop_when_empty,
                                      clip_to_box=not args.unbounded, keep_topology=args.keep_topology),
        cleanup=Cleanup(keep_largest=args.keep_largest, fill_holes=args.fill_holes),
        overlap=args.overlap, progress=not args.quiet, refine=RefineConfig(local_clicks=args.local_clicks),
    )
    # box-only prompts stream through the planned slices: an OpenVINO encoder in throughput mode
    # encodes the next ones while a slice is decoded (clicks go through a session, one at a time)
    streamed = all(p.box is not None and not p.points for p in prompts)
    predictor, _ = make_predictor(args, "throughput" if streamed else "latency")
    result = segment_volume(array, geometry, prompts, predictor, options, source=source)
    write_volume(output, result.labels, result.geometry, mask=True)
    present = [lab for lab in dict.fromkeys(result.label_ids) if (result.labels == lab).any()]
    n = len(prompts)
    clicks = sum(len(p.points) for p in prompts)
    n_text = f"{n} object{'s' if n != 1 else ''}" + (f", {clicks} click{'s' if clicks != 1 else ''}" if clicks else "")
    print(f"wrote {output} ({n_text}, {len(present)} non-empty: labels "
          f"{','.join(map(str, present)) or 'none'}; {result.slices_visited} slices, "
          f"{result.encoder_calls} encoder calls)")
    return 0
