"""Dataset layouts: recognise how a folder is organised and pair its image and label files.

Only file names are looked at (plus small JSON/text side files and the key list of ``.npz``
archives); images and volumes are read later by :mod:`medsamkit.io`. Layouts, in the order
:func:`detect_layout` tries them:

- ``nnunet``: nnU-Net v2 / Medical Segmentation Decathlon: ``imagesTr/`` (``CASE_0000.ext``,
  ``CASE_0001.ext`` ... one file per channel; MSD: one ``CASE.ext`` per case),
  ``labelsTr/CASE.ext``, optional ``imagesTs/`` and ``dataset.json`` (channel_names or MSD
  "modality", labels, file_ending, numTraining).
- ``refuge``: Medical-SAM2's REFUGE (func_2d/dataset.py): ``Training-400/`` and ``Test-400/``
  (also ``Validation-400/``), one folder per case: ``NAME/NAME.jpg`` and seven rater masks
  ``NAME_seg_cup_1..7.png`` (and ``NAME_seg_disc_k.png``); the target is their majority vote.
- ``btcv``: Medical-SAM2's BTCV (func_3d/dataset/btcv.py): ``Training/`` and ``Test/``, each with
  ``image/CASE/K.jpg`` and ``mask/CASE/K.npy``, one file per slice (frame) K = 0, 1, 2 ...
- ``medsam-npy``: MedSAM's slices: ``imgs/CASE-SLICE.npy`` (1024 x 1024 x 3 in [0, 1]) and
  ``gts/CASE-SLICE.npy`` (uint8) with the same names.
- ``kvasir``: Kvasir-SEG: ``images/`` and ``masks/`` of ``.jpg`` (JPEG masks: threshold > 127),
  optional ``train.txt``/``val.txt``; recognised by ``gt_boxes.json``/``kavsir_bboxes.json``
  or by JPEG-only masks.
- ``folder-pairs``: ``images/`` and ``masks/`` (or ``labels/``) with the same file stems.
- ``medsam-npz``: MedSAM ``.npz`` archives (keys ``imgs``, ``gts``, optional ``spacing``) in a
  folder tree.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.data.cases import (
    Case,
    Dataset,
    index_by_stem,
    list_files,
    read_id_list,
    read_json,
    split_ending,
    warn_unmatched,
)
from medsamkit.data.splits import read_split_file, split_cases, write_split_file
from medsamkit.errors import InputError

__all__ = ["LAYOUTS", "Case", "Dataset", "Layout", "detect_layout", "read_dataset",
           "read_split_file", "split_cases", "write_split_file"]

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_REFUGE_SPLITS = (("Training-400", "train"), ("Validation-400", "val"), ("Test-400", "test"))
_BTCV_SPLITS = (("Training", "train"), ("Test", "test"))
_MASK_SUFFIXES = ("_mask", "_masks", "_seg", "_segmentation", "_label", "_gt")


def _require(root: Path, layout: str, *needed: str) -> None:
    """Raise InputError naming what ``root`` lacks to be ``layout`` (folders end with "/")."""
    missing = [n for n in needed
               if not ((root / n).is_dir() if n.endswith("/") else (root / n).is_file())]
    if missing:
        raise InputError(root, f"not a {layout} dataset: missing {', '.join(missing)} "
                               f"(expected {LAYOUTS[layout].expects})")


def _first_dir(root: Path, *names: str) -> Path | None:
    """The first of ``root/name`` that is a folder."""
    return next((root / n for n in names if (root / n).is_dir()), None)


# ------------------------------------------------------------------------------ folder pairs
def _pair(layout: str, image_dir: Path, label_dir: Path) -> list[Case]:
    """Pair the files of two folders by stem; images without a label keep ``label=None``."""
    images = index_by_stem(list_files(image_dir), layout)
    if not images:
        raise InputError(image_dir, f"{layout}: no image files found")
    labels = index_by_stem(list_files(label_dir), layout)
    unmatched = set(labels) - set(images)
    for stem in sorted(unmatched):  # "case_mask.png" for "case.jpg"
        for suffix in _MASK_SUFFIXES:
            if stem.lower().endswith(suffix) and stem[: -len(suffix)] in images:
                base = stem[: -len(suffix)]
                if base not in labels:
                    labels[base] = labels.pop(stem)
                break
    warn_unmatched(layout, f"images without a label in {label_dir.name}/ (kept, label None)",
                   set(images) - set(labels))
    warn_unmatched(layout, f"labels without an image in {image_dir.name}/ (ignored)",
                   set(labels) - set(images))
    return [Case(stem, (path,), labels.get(stem)) for stem, path in sorted(images.items())]


def _read_folder_pairs(root: Path) -> Dataset:
    label_dir = _first_dir(root, "masks", "labels") or root / "masks"
    _require(root, "folder-pairs", "images/", f"{label_dir.name}/")
    return Dataset(root, "folder-pairs", _pair("folder-pairs", root / "images", label_dir))


# ------------------------------------------------------------------------------------ kvasir
def _read_kvasir(root: Path) -> Dataset:
    _require(root, "kvasir", "images/", "masks/")
    cases = _pair("kvasir", root / "images", root / "masks")
    splits: dict[str, str] = {}
    for split in ("train", "val", "test"):
        if (root / f"{split}.txt").is_file():
            for case_id in read_id_list(root / f"{split}.txt"):
                if splits.setdefault(case_id, split) != split:
                    raise InputError(root / f"{split}.txt",
                                     f"{case_id} is also listed in {splits[case_id]}.txt")
    warn_unmatched("kvasir", "ids in the split files without an image",
                   set(splits) - {c.case_id for c in cases})
    boxes: dict[str, Any] = {}
    meta: dict[str, Any] = {"mask_threshold": 127, "min_box_component": 100}
    if (root / "gt_boxes.json").is_file():
        boxes = read_json(root / "gt_boxes.json")
        if not isinstance(boxes, dict):
            raise InputError(root / "gt_boxes.json", "expected {name: [x0, y0, x1, y1]}")
        meta["gt_boxes"] = root / "gt_boxes.json"
    if (root / "kavsir_bboxes.json").is_file():
        meta["kavsir_bboxes"] = root / "kavsir_bboxes.json"
    cases = [Case(c.case_id, c.images, c.label, splits.get(c.case_id),
                  {"box": tuple(boxes[c.case_id])} if c.case_id in boxes else {})
             for c in cases]
    return Dataset(root, "kvasir", cases, meta)


def _is_kvasir(root: Path) -> bool:
    if not (root / "images").is_dir():
        return False
    if (root / "gt_boxes.json").is_file() or (root / "kavsir_bboxes.json").is_file():
        return True
    if not (root / "masks").is_dir():
        return False
    endings = {split_ending(p)[1] for d in ("images", "masks") for p in list_files(root / d)}
    return bool(endings) and endings <= {".jpg", ".jpeg"}


# ------------------------------------------------------------------------------------ nnunet
def _nnunet_meta(root: Path, image_files: list[Path]) -> dict[str, Any]:
    """dataset.json normalised: channel_names {"0": name}, labels {name: value}, file_ending."""
    raw = read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    if not isinstance(raw, dict):
        raise InputError(root / "dataset.json", "dataset.json must hold a JSON object")
    channels = raw.get("channel_names", raw.get("modality", {}))  # nnU-Net v2 / MSD
    labels = raw.get("labels", {})
    if labels and all(isinstance(v, str) for v in labels.values()):  # MSD: {"0": "background"}
        labels = {name: int(value) for value, name in labels.items()}
    ending = raw.get("file_ending")
    if not ending:
        counts = Counter(split_ending(p)[1] for p in image_files)
        ending = counts.most_common(1)[0][0] if counts else ".nii.gz"
    meta = {"channel_names": {str(k): v for k, v in channels.items()}, "labels": labels,
            "file_ending": ending.lower(), "dataset_json": raw}
    for key in ("name", "numTraining", "description"):
        if key in raw:
            meta[key] = raw[key]
    return meta


def _listed_stems(raw: dict[str, Any]) -> set[str]:
    """File stems named by an MSD/nnU-Net v1 dataset.json ("training"/"test" image entries)."""
    entries = [*raw.get("training", []), *raw.get("test", [])]
    names = [e.get("image") if isinstance(e, dict) else e for e in entries]
    return {split_ending(n)[0] for n in names if isinstance(n, str)}


def _group_channels(files: list[Path], n_channels: int, folder: Path,
                    whole: set[str]) -> dict[str, tuple[Path, ...]]:
    """Group ``CASE_0000.ext``, ``CASE_0001.ext`` ... per case, in channel order.

    Files without a channel suffix, or whose stem is listed in ``whole`` (MSD's dataset.json
    names them so: all channels in one 4D file), are cases of their own. Cases missing a channel
    are skipped with a warning.
    """
    grouped: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = split_ending(path)[0]
        match = None if stem in whole else _CHANNEL.match(stem)
        case, channel = (match["case"], int(match["channel"])) if match else (stem, -1)
        grouped.setdefault(case, {})[channel] = path
    expected = n_channels or max((max(ch) + 1 for ch in grouped.values()), default=1)
    out, incomplete = {}, []
    for case, channels in sorted(grouped.items()):
        if list(channels) == [-1]:
            out[case] = (channels[-1],)
        elif sorted(channels) == list(range(expected)):
            out[case] = tuple(channels[i] for i in range(expected))
        else:
            incomplete.append(f"{case} (has {sorted(channels)})")
    warn_unmatched("nnunet", f"cases in {folder.name}/ without all {expected} channels (skipped)",
                   incomplete)
    return out


def _read_nnunet(root: Path) -> Dataset:
    _require(root, "nnunet", "imagesTr/")
    meta = _nnunet_meta(root, list_files(root / "imagesTr"))
    ending, n_channels = meta["file_ending"], len(meta["channel_names"])
    whole = _listed_stems(meta["dataset_json"])
    cases: list[Case] = []
    for images_name, labels_name, split in (("imagesTr", "labelsTr", "train"),
                                            ("imagesTs", "labelsTs", "test")):
        if not (root / images_name).is_dir():
            continue
        groups = _group_channels(list_files(root / images_name, [ending]), n_channels,
                                 root / images_name, whole)
        labels = {}
        if (root / labels_name).is_dir():
            labels = index_by_stem(list_files(root / labels_name, [ending]), "nnunet")
        if split == "train":
            warn_unmatched("nnunet", f"training cases without a file in {labels_name}/ "
                                     "(kept, label None)", set(groups) - set(labels))
        warn_unmatched("nnunet", f"files in {labels_name}/ without an image (ignored)",
                       set(labels) - set(groups))
        cases += [Case(cid, files, labels.get(cid), split) for cid, files in groups.items()]
    if not any(c.split == "train" for c in cases):
        raise InputError(root / "imagesTr", f"nnunet: no {ending} image files found")
    n_train = sum(c.split == "train" for c in cases)
    if "numTraining" in meta and meta["numTraining"] != n_train:
        logger.warning("nnunet: dataset.json says numTraining %s but imagesTr/ holds %d cases",
                       meta["numTraining"], n_train)
    return Dataset(root, "nnunet", cases, meta)


# ------------------------------------------------------------------------ refuge and btcv
def _numbered(files: list[Path], where: Path) -> list[Path]:
    """Files whose stem is an integer, sorted numerically (2 before 10); others warned."""
    numeric = [p for p in files if split_ending(p)[0].isdigit()]
    warn_unmatched("btcv", f"files in {where} not named by a frame number (ignored)",
                   {p.name for p in files} - {p.name for p in numeric})
    return sorted(numeric, key=lambda p: int(split_ending(p)[0]))


def _read_refuge(root: Path) -> Dataset:
    if not any((root / sub).is_dir() for sub, _ in _REFUGE_SPLITS):
        _require(root, "refuge", "Training-400/", "Test-400/")
    cases, no_image = [], []
    rater = re.compile(r"_seg_(cup|disc)_(\d+)$")
    for sub, split in _REFUGE_SPLITS:
        folders = sorted(p for p in (root / sub).glob("*") if p.is_dir()) \
            if (root / sub).is_dir() else []
        for folder in folders:
            name = folder.name
            image = next((folder / f"{name}{e}" for e in (".jpg", ".png", ".bmp")
                          if (folder / f"{name}{e}").is_file()), None)
            if image is None:
                no_image.append(f"{sub}/{name}")
                continue
            raters: dict[str, list[tuple[int, Path]]] = {"cup": [], "disc": []}
            for path in list_files(folder):
                match = rater.search(split_ending(path)[0])
                if match:
                    raters[match[1]].append((int(match[2]), path))
            extra = {f"{k}_raters": tuple(p for _, p in sorted(v)) for k, v in raters.items()}
            cases.append(Case(name, (image,), None, split, extra))
    warn_unmatched("refuge", "case folders without NAME/NAME.jpg (skipped)", no_image)
    meta = {"target": "cup", "label_rule": "majority vote (mean >= 0.5) of the *_raters masks"}
    return Dataset(root, "refuge", cases, meta)


def _read_btcv(root: Path) -> Dataset:
    if not any((root / sub / "image").is_dir() for sub, _ in _BTCV_SPLITS):
        _require(root, "btcv", "Training/image/", "Training/mask/")
    cases = []
    for sub, split in _BTCV_SPLITS:
        image_root, mask_root = root / sub / "image", root / sub / "mask"
        if not image_root.is_dir():
            continue
        for folder in sorted(p for p in image_root.iterdir() if p.is_dir()):
            frames = _numbered(list_files(folder, [".jpg", ".jpeg", ".png"]), folder)
            mask_dir = mask_root / folder.name
            mask_frames = _numbered(list_files(mask_dir, [".npy"]), mask_dir) \
                if mask_dir.is_dir() else []
            if not mask_frames:
                logger.warning("btcv: %s has no mask frames in %s", folder.name, mask_dir)
            elif len(mask_frames) != len(frames):
                logger.warning("btcv: %s has %d image frames but %d mask frames",
                               folder.name, len(frames), len(mask_frames))
            extra = {"label_frames": tuple(mask_frames), "n_frames": len(frames)}
            cases.append(Case(folder.name, tuple(frames), mask_dir if mask_frames else None,
                              split, extra))
    return Dataset(root, "btcv", cases, {"frame_axis": "z", "label_format": "one .npy per frame"})


# -------------------------------------------------------------------------------- medsam
def _read_medsam_npy(root: Path) -> Dataset:
    _require(root, "medsam-npy", "imgs/", "gts/")
    cases = []
    for case in _pair("medsam-npy", root / "imgs", root / "gts"):
        volume, _, index = case.case_id.rpartition("-")
        extra = {"volume": volume, "slice": int(index)} if volume and index.isdigit() else {}
        cases.append(Case(case.case_id, case.images, case.label, None, extra))
    meta = {"image_format": "1024 x 1024 x 3 float in [0, 1]", "label_format": "uint8 label map"}
    return Dataset(root, "medsam-npy", cases, meta)


def _npz_keys(path: Path) -> tuple[str, ...]:
    """Array names of an ``.npz`` archive (reads only the zip directory)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return tuple(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"cannot open the .npz archive: {exc}") from exc


def _npz_files(root: Path) -> list[Path]:
    """``.npz`` files under ``root`` (any depth), hidden files and folders skipped."""
    found = (p for p in root.rglob("*.npz") if p.is_file())
    return sorted(p for p in found
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def _read_medsam_npz(root: Path) -> Dataset:
    files = _npz_files(root)
    if not files:
        raise InputError(root, f"not a medsam-npz dataset: no .npz files "
                               f"(expected {LAYOUTS['medsam-npz'].expects})")
    cases, no_imgs = [], []
    for path in files:
        keys = _npz_keys(path)
        if "imgs" not in keys:
            no_imgs.append(path.name)
            continue
        case_id = path.relative_to(root).as_posix()[: -len(".npz")]
        extra = {"image_key": "imgs", "label_key": "gts" if "gts" in keys else None, "keys": keys}
        cases.append(Case(case_id, (path,), path if "gts" in keys else None, None, extra))
    warn_unmatched("medsam-npz", "archives without an 'imgs' array (skipped)", no_imgs)
    if not cases:
        raise InputError(root, "not a medsam-npz dataset: no .npz archive holds an 'imgs' array")
    return Dataset(root, "medsam-npz", cases, {"spacing_key": "spacing"})


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Layout:
    """How to recognise and read one layout; ``expects`` is shown in error messages."""

    read: Callable[[Path], Dataset]
    matches: Callable[[Path], bool]
    expects: str


#: Known layouts, in the order :func:`detect_layout` tries them.
LAYOUTS: dict[str, Layout] = {
    "nnunet": Layout(_read_nnunet, lambda r: (r / "imagesTr").is_dir(),
                     "imagesTr/ (CASE_0000.ext), labelsTr/, optional imagesTs/ and dataset.json"),
    "refuge": Layout(_read_refuge,
                     lambda r: any((r / s).is_dir() for s, _ in _REFUGE_SPLITS),
                     "Training-400/ or Test-400/ with NAME/NAME.jpg and NAME_seg_cup_K.png"),
    "btcv": Layout(_read_btcv, lambda r: any((r / s / "image").is_dir() for s, _ in _BTCV_SPLITS),
                   "Training/ or Test/ with image/CASE/K.jpg and mask/CASE/K.npy"),
    "medsam-npy": Layout(_read_medsam_npy, lambda r: (r / "imgs").is_dir() and (r / "gts").is_dir(),
                         "imgs/ and gts/ with the same CASE-SLICE.npy names"),
    "kvasir": Layout(_read_kvasir, _is_kvasir,
                     "images/ and masks/ of .jpg, optional train.txt/val.txt, gt_boxes.json"),
    "folder-pairs": Layout(_read_folder_pairs,
                           lambda r: (r / "images").is_dir() and _first_dir(r, "masks", "labels")
                           is not None, "images/ and masks/ (or labels/) with the same file stems"),
    "medsam-npz": Layout(_read_medsam_npz, lambda r: any(True for _ in r.rglob("*.npz")),
                         ".npz files with 'imgs' and 'gts' arrays (optional 'spacing')"),
}


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.exists():
        raise InputError(path, "dataset folder not found")
    if not path.is_dir():
        raise InputError(path, "is a file; a dataset is a folder")
    return path


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the first layout in :data:`LAYOUTS` that ``root`` looks like.

    Raises :class:`InputError` listing every layout and what it expects when none fits.
    """
    path = _check_root(root)
    for name, layout in LAYOUTS.items():
        if layout.matches(path):
            logger.debug("%s looks like a %s dataset", path, name)
            return name
    known = "; ".join(f"{name}: {layout.expects}" for name, layout in LAYOUTS.items())
    raise InputError(path, f"cannot tell the dataset layout. Known layouts: {known}")


def read_dataset(root: str | os.PathLike, layout: str | None = None) -> Dataset:
    """Find and pair the files of the dataset in ``root``.

    Args:
        root: the dataset folder.
        layout: a key of :data:`LAYOUTS`; detected with :func:`detect_layout` when None.

    Raises:
        InputError: unknown layout name, a folder that fits no layout, or a named layout that
            does not fit (the message says what is missing).
    """
    path = _check_root(root)
    if layout is None:
        layout = detect_layout(path)
    elif layout not in LAYOUTS:
        raise InputError(None, f"unknown dataset layout {layout!r}; "
                               f"choose one of {', '.join(LAYOUTS)}")
    dataset = LAYOUTS[layout].read(path)
    logger.info("%s: %s dataset with %d cases (%d labelled)", path, layout, len(dataset),
                len(dataset.labelled()))
    return dataset
