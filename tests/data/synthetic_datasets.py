"""Tiny synthetic datasets in every layout medsamkit reads, with real pixel content.

Shared by the preprocess tests (tests/data/test_preprocess.py, test_cache.py and
tests/cli/test_cli_preprocess.py, which loads this file by path). Every builder writes into a
fresh folder and returns it; objects are large enough to survive MedSAM's label cleanup
(3D >= 1000 voxels, 2D >= 100 pixels) unless a test asks otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume

#: geometry of the synthetic volumes: anisotropic spacing, an origin and a flipped direction
VOLUME_GEOMETRY = Geometry(spacing=(2.5, 0.75, 0.625), origin=(-10.0, 20.5, 3.0),
                           direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def _rgb_with_ellipse(h: int, w: int, centre: tuple[int, int], axes: tuple[int, int],
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 textured image with a bright ellipse, its 0/1 mask)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.normal(60, 15, (h, w, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    image[mask > 0] = (210, 150, 120)
    return image, mask


def folder_pairs(root: Path, n: int = 3) -> Path:
    """images/*.png RGB and masks/*.png: 0/255 masks, and one label map with ids 1 and 2."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = _rgb_with_ellipse(60 + 7 * i, 80, (30 + i, 28), (14, 10), seed=i)
        if i == n - 1:  # a label map with two objects
            mask[5:20, 55:75] = 2
            cv2.imwrite(str(root / "masks" / f"img{i}.png"), mask)
        else:
            cv2.imwrite(str(root / "masks" / f"img{i}.png"), mask * 255)
        cv2.imwrite(str(root / "images" / f"img{i}.png"), image[:, :, ::-1])
    return root


def kvasir(root: Path, n: int = 3) -> Path:
    """Kvasir-SEG style: JPEG images and RGB JPEG masks (noisy grey levels, a stray pixel at
    (0, 0) that label cleanup must remove) and gt_boxes.json."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    boxes = {}
    for i in range(n):
        image, mask = _rgb_with_ellipse(90, 120 + 10 * i, (60, 45), (30, 20), seed=10 + i)
        name = f"cju{i:03d}"
        ys, xs = np.nonzero(mask)
        boxes[name] = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        mask255 = mask * 255
        mask255[0, 0] = 255  # the isolated pixel of the real dataset
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), image[:, :, ::-1])
        cv2.imwrite(str(root / "masks" / f"{name}.jpg"), np.repeat(mask255[:, :, None], 3, axis=2))
    (root / "gt_boxes.json").write_text(json.dumps(boxes), encoding="utf-8")
    return root


def ct_volume(shape: tuple[int, int, int] = (8, 40, 48), seed: int = 0,
              small_label: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU volume, uint8 label map): a big label-1 ellipsoid over slices 1..6 and, with
    ``small_label``, a label-2 blob of 2 x 6 x 6 = 72 voxels (below the 3D minimum of 1000)."""
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    rng = np.random.default_rng(seed)
    image = rng.normal(-100, 30, shape)
    organ = ((z - 3.5) / 3.0) ** 2 + ((y - 20) / 12.0) ** 2 + ((x - 22) / 14.0) ** 2 <= 1.0
    image[organ] = 80 + rng.normal(0, 10, int(organ.sum()))
    label = organ.astype(np.uint8)
    if small_label:
        label[2:4, 2:8, 38:44] = 2
        image[2:4, 2:8, 38:44] = 200
    return image.astype(np.int16), label


def nnunet(root: Path, n: int = 3, channel_name: str = "CT", two_channels: bool = False) -> Path:
    """Dataset001: imagesTr/CASE_0000.nii.gz (int16 HU) + labelsTr, dataset.json naming the
    channel ``channel_name``; with ``two_channels`` a second channel holds the image negated."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    channels = {"0": channel_name, **({"1": "other"} if two_channels else {})}
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": channels, "labels": {"background": 0, "liver": 1, "spot": 2},
        "numTraining": n, "file_ending": ".nii.gz"}), encoding="utf-8")
    for i in range(n):
        image, label = ct_volume(seed=i)
        write_volume(root / "imagesTr" / f"case{i}_0000.nii.gz", image, VOLUME_GEOMETRY)
        if two_channels:
            write_volume(root / "imagesTr" / f"case{i}_0001.nii.gz", -image, VOLUME_GEOMETRY)
        write_volume(root / "labelsTr" / f"case{i}.nii.gz", label, VOLUME_GEOMETRY, mask=True)
    return root


def refuge(root: Path) -> Path:
    """Training-400/g0001 and Test-400/V0001: a fundus-like RGB image and 7 cup rater masks
    (4 agree on one disc, 3 on a shifted one: the majority vote is the first)."""
    for sub, name, seed in (("Training-400", "g0001", 1), ("Test-400", "V0001", 2)):
        folder = root / sub / name
        folder.mkdir(parents=True)
        image, mask = _rgb_with_ellipse(64, 72, (36, 32), (12, 12), seed)
        cv2.imwrite(str(folder / f"{name}.jpg"), image[:, :, ::-1])
        shifted = np.zeros_like(mask)
        cv2.circle(shifted, (20, 20), 10, 1, -1)
        for k in range(1, 8):
            rater = mask if k <= 4 else shifted
            cv2.imwrite(str(folder / f"{name}_seg_cup_{k}.png"), rater * 255)
            cv2.imwrite(str(folder / f"{name}_seg_disc_{k}.png"), rater * 255)
    return root


def btcv(root: Path, frames: int = 6) -> Path:
    """Training/image/img0001/K.jpg grey frames and Training/mask/img0001/K.npy label frames."""
    image_dir, mask_dir = root / "Training/image/img0001", root / "Training/mask/img0001"
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for k in range(frames):
        rng = np.random.default_rng(k)
        grey = cv2.GaussianBlur(rng.normal(50, 10, (48, 56)).clip(0, 255).astype(np.uint8), (5, 5), 0)
        label = np.zeros((48, 56), np.uint8)
        if 1 <= k <= 4:
            cv2.circle(label, (28, 24), 12, 1, -1)  # ~450 px x 4 slices: survives 3D cleanup
            label[2:14, 2:14][label[2:14, 2:14] == 0] = 3  # 144 px x 4 = 576 voxels: removed
        grey[label == 1] = 200
        cv2.imwrite(str(image_dir / f"{k}.jpg"), grey)
        np.save(mask_dir / f"{k}.npy", label)
    return root


def medsam_npy(root: Path) -> Path:
    """imgs/CASE-ZZZ.npy float (64, 64, 3) in [0, 1] and gts/CASE-ZZZ.npy uint8."""
    (root / "imgs").mkdir(parents=True)
    (root / "gts").mkdir()
    for z in (3, 4):
        image, mask = _rgb_with_ellipse(64, 64, (30, 34), (14, 11), seed=z)
        np.save(root / "imgs" / f"MR_vol1-{z:03d}.npy", image.astype(np.float64) / 255.0)
        np.save(root / "gts" / f"MR_vol1-{z:03d}.npy", (mask * 5).astype(np.uint8))
    return root


def medsam_npz(root: Path) -> Path:
    """CT/CT_a.npz: imgs (z, y, x) uint8, gts and spacing (x, y, z); 2D/photo.npz: (H, W, 3)."""
    (root / "CT").mkdir(parents=True)
    (root / "2D").mkdir()
    image, label = ct_volume(seed=5, small_label=False)
    image8 = np.clip((image.astype(np.float64) + 160) / 400 * 255, 0, 255).astype(np.uint8)
    np.savez_compressed(root / "CT/CT_a.npz", imgs=image8, gts=label, spacing=[0.625, 0.75, 2.5])
    rgb, mask = _rgb_with_ellipse(50, 60, (30, 25), (12, 9), seed=7)
    np.savez_compressed(root / "2D/photo.npz", imgs=rgb, gts=mask)
    return root


#: layout name -> builder
BUILDERS = {"folder-pairs": folder_pairs, "kvasir": kvasir, "nnunet": nnunet, "refuge": refuge,
            "btcv": btcv, "medsam-npy": medsam_npy, "medsam-npz": medsam_npz}
