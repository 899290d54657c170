"""``medsamkit preprocess``: a dataset folder -> a cache of model-ready 2D samples (training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import DEFAULT_MODEL, LAYOUT_NAMES, MODEL_NAMES
from ..errors import InputError
from .common import add_intensity_options

HELP = "preprocess a dataset into a cache of model-ready 2D samples (for training)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help=HELP,
        description=HELP + ". Volumes are scaled per modality, labels cleaned (small objects "
        "removed), and every labelled slice resized into the model's input frame, one sample "
        "per (slice, label) with its box. Rerun to resume; finished cases are skipped.")
    p.add_argument("input", metavar="DATASET",
                   help="dataset folder (nnU-Net/MSD, Kvasir, images+masks, REFUGE, BTCV, MedSAM npy/npz)")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder to create or resume")
    p.add_argument("--layout", choices=list(LAYOUT_NAMES), default=None, help="dataset layout (default: detected)")
    p.add_argument("--model", choices=list(MODEL_NAMES), default=DEFAULT_MODEL,
                   help=f"model whose input frame the samples are stored in (default {DEFAULT_MODEL}, 256 px; "
                        "medsam-vit-b and sam-* use 1024 px)")
    add_intensity_options(p)
    p.add_argument("--channel", type=int, default=0, metavar="C",
                   help="channel of multi-channel cases (nnU-Net CASE_000C files) to use (default 0)")
    g = p.add_argument_group("split")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--split", type=float, default=None, metavar="FRACTION",
                     help="random train fraction (default: the layout's own train/val split, else 0.8)")
    how.add_argument("--split-file", metavar="FILE", help='JSON {"train": [ids], "val": [ids]}')
    g.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    g = p.add_argument_group("labels and slices")
    g.add_argument("--min-size-3d", type=int, default=1000, metavar="VOXELS",
                   help="remove 3D objects (26-connected) smaller than this (default 1000, MedSAM)")
    g.add_argument("--min-size-2d", type=int, default=100, metavar="PIXELS",
                   help="remove 2D objects (8-connected) smaller than this per slice (default 100, MedSAM)")
    g.add_argument("--all-slices", action="store_true",
                   help="also store the slices without labels, and cases without labels (for inference)")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1: in-process)")
    g.add_argument("--overwrite", action="store_true", help="delete the cache's samples and start again")
    g.add_argument("--export-medsam-npy", metavar="DIR",
                   help="also write MedSAM's npy training layout (imgs/, gts/ at 1024 px) into DIR")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    if not Path(args.input).exists():
        raise InputError(args.input, "dataset folder not found")
    if args.workers < 1:
        raise InputError(None, f"--workers {args.workers}: give 1 or more worker processes")
    if args.split is not None and not 0.0 < args.split <= 1.0:
        raise InputError(None, f"--split {args.split}: the train fraction must be in (0, 1]")
    for name in ("min_size_3d", "min_size_2d", "channel"):
        if getattr(args, name) < 0:
            raise InputError(None, f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 0")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from ..data.inspect import summary_lines
    from ..data.preprocess import PreprocessSettings, RunOptions, SplitSpec, preprocess_dataset

    settings = PreprocessSettings(model=args.model, layout=args.layout, modality=args.modality,
                                  window=args.window, channel=args.channel,
                                  min_size_3d=args.min_size_3d, min_size_2d=args.min_size_2d,
                                  all_slices=args.all_slices)
    split = SplitSpec(fraction=args.split, seed=args.seed,
                      file=Path(args.split_file) if args.split_file else None)
    options = RunOptions(workers=args.workers, overwrite=args.overwrite,
                         export_medsam_npy=Path(args.export_medsam_npy) if args.export_medsam_npy else None)
    summary = preprocess_dataset(args.input, args.output, settings, split, options)
    print(summary.line())
    for case_id, message in summary.failed.items():
        print(f"  failed {case_id}: {message}")
    if summary.empty:
        print(f"  empty (no sample after label cleanup): {', '.join(summary.empty)}")
    if summary.unlabelled:
        print(f"  {len(summary.unlabelled)} case(s) without a label left out (--all-slices keeps them)")
    for line in summary_lines(summary.manifest):
        print(line)
    if options.export_medsam_npy is not None:
        print(f"MedSAM npy files in {options.export_medsam_npy}")
    print(f"cache in {summary.cache} ({summary.seconds:.1f} s)")
    return 1 if summary.failed else 0
