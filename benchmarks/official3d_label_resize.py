"""Where ours with the official settings differs from the official LiteMedSAM 3D logic: the label map.

``bench_3d.py`` runs ours with the official's settings (its slice range, no clipping to the 3D
box, "last wins") and finds the official masks again for every object on ACDC and BraTS 2021,
and for the first object only on BraTS 2015 (4 labels). The explanation offered there: the
official script finds the next slice's box by resizing its label map, whose value is the object's
1-based index, with cv2 INTER_AREA, so for the k-th object a partly covered 256 px pixel counts
from about 1/(2k) covered, where our binary mask needs 1/2. This script checks it: ours with the
official settings and, for the next box only, the mask resized with the value ``k`` as the
official does, against the official masks, object by object. 0 voxels differing confirms that
this is the whole difference.

    OMP_NUM_THREADS=1 python benchmarks/official3d_label_resize.py brats2015-mr:1-2 [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_3d import VOLUMES, Recording, SharedEncoder, _case_inputs, official_range_prompt  # noqa: E402
from official_litemedsam3d import Official3D, OfficialModel, mr_to_uint8  # noqa: E402

from medsamkit.data.layouts import read_dataset  # noqa: E402
from medsamkit.inference.predictor import Predictor  # noqa: E402
from medsamkit.inference.propagate import BoxPropagator, PropagationConfig, growth  # noqa: E402
from medsamkit.inference.volume3d import VolumeOptions, segment_volume  # noqa: E402
from medsamkit.models.loader import load_model  # noqa: E402
from medsamkit.preprocessing.geometry import geometry_for  # noqa: E402
from medsamkit.preprocessing.intensity import Identity, PercentileClip  # noqa: E402


class IndexValuedBoxes(BoxPropagator):
    """The next box as the official script finds it: the object's mask with the value of its
    1-based index, INTER_AREA-resized into the 256 px frame, its bounds grown by 3."""

    def next_box(self, obj, frame) -> np.ndarray:
        if obj.last_mask is None:
            return np.asarray(obj.key_box, dtype=np.float64)
        nh, nw = frame.resized_size
        valued = (obj.last_mask > 0).astype(np.uint8) * (obj.obj_id + 1)
        ys, xs = np.nonzero(cv2.resize(valued, (nw, nh), interpolation=cv2.INTER_AREA))
        if xs.size == 0:
            return np.asarray(obj.key_box, dtype=np.float64)
        s, grow = self.predictor.geometry.input_size, growth(self.config, self.predictor)
        model = np.array([[max(int(xs.min()) - grow, 0), max(int(ys.min()) - grow, 0),
                           min(int(xs.max()) + grow, s), min(int(ys.max()) + grow, s)]], dtype=np.float64)
        return np.asarray(self.predictor.geometry.boxes_from_model(model, frame)[0], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+", help="DATASET[:FIRST-END], e.g. brats2015-mr:1-2 (0-based, end excluded)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    model = OfficialModel.load(loaded.weights_path)
    shared = SharedEncoder(model.image_encoder)  # one official encoder pass per slice, for both
    official = Official3D(model, share_embeddings=True, encoder=shared)
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing), encoder=shared)
    for spec in args.cases:
        name, _, span = spec.partition(":")
        first, _, end = span.partition("-")
        for case in read_dataset(VOLUMES / name).cases[int(first or 0): int(end) if end else None]:
            image, geometry, _, ids, boxes = _case_inputs(case)
            shared.clear()
            start = time.perf_counter()
            _, run = official(mr_to_uint8(np.asarray(image, np.float64)), boxes)
            recording = Recording(IndexValuedBoxes(predictor, PropagationConfig(clip_to_box=False)))
            prompts = [official_range_prompt(b, lab) for b, lab in zip(boxes, ids)]
            segment_volume(PercentileClip()(image), geometry, prompts, predictor, VolumeOptions(), scheme=Identity(),
                           propagator=recording)
            differing = [int((recording.masks[i] != run.object_masks[i]).sum()) for i in range(len(ids))]
            print(f"{name}/{case.case_id}: object voxels differing from the official, labels {ids}: {differing} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
