"""The names the command line offers as option choices, in a module that imports nothing.

``medsamkit --help`` and argument errors must answer at once, so the CLI builds its parser
from these tuples instead of importing the registries (which import torch, numpy, scipy...).
Each name lives here once: the heavy modules take their tuples from this module
(:data:`MODALITIES`, :data:`OVERLAP_RULES`, :data:`RANKS`, :data:`DEFAULT_MODEL`), and the
registries that hold objects (``models.registry.MODELS``, ``data.layouts.LAYOUTS``,
``inference.engines.ENGINES``) are checked against :data:`MODEL_NAMES`, :data:`LAYOUT_NAMES`
and :data:`BACKENDS` (``auto`` + the engines) by ``tests/test_choices.py``. Adding a model, a layout or a backend
means adding its name here too.
"""

from __future__ import annotations

#: registry models (``--model``), in the order ``medsamkit models`` lists them
MODEL_NAMES: tuple[str, ...] = (
    "litemedsam", "litemedsam-clicks", "medsam-vit-b", "sam-vit-b", "sam-vit-l", "sam-vit-h",
    "medsam2",
    "sam2-hiera-tiny", "sam2-hiera-small", "sam2-hiera-base-plus", "sam2-hiera-large",
    "sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large",
)
DEFAULT_MODEL = "litemedsam"

#: ``--device``
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

#: ``--backend``: the runtime of the image encoder (and decoder) on the CPU
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
DEFAULT_BACKEND = "auto"
#: ``--precision`` of the image encoder (default: the backend's fastest that keeps the masks)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")

#: intensity schemes (``--modality``, lower case), see ``preprocessing.intensity.select_scheme``
MODALITIES: tuple[str, ...] = (
    "auto", "ct", "mr", "mri", "us", "pet", "xray", "other", "percentile", "rgb", "none", "minmax",
)

#: how a voxel claimed by several objects is labelled (``segment VOLUME --overlap``)
OVERLAP_RULES: tuple[str, ...] = ("logit", "smallest", "last")
#: the default rule: the object given last wins, as in the official LiteMedSAM 3D script; chosen
#: by measurement on ../shared/data/volumes (docs/benchmarks.md, "3D propagation")
DEFAULT_OVERLAP = "last"

#: dataset layouts of ``medsamkit preprocess --layout``, in the order detection tries them
LAYOUT_NAMES: tuple[str, ...] = (
    "nnunet", "refuge", "btcv", "medsam-npy", "kvasir", "folder-pairs", "medsam-npz",
)

#: ``medsamkit compare --rank``
RANKS: tuple[str, ...] = ("first", "spread")

#: the files ``medsamkit evaluate`` writes into its report folder
REPORT_CSV, REPORT_SUMMARY, REPORT_MARKDOWN = "per_case.csv", "summary.json", "summary.md"
