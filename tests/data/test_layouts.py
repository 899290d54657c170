"""Tests for medsamkit.data.layouts: every layout built in tmp_path, detected and paired."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from medsamkit.data.cases import Case, split_ending
from medsamkit.data.layouts import LAYOUTS, detect_layout, read_dataset
from medsamkit.errors import InputError


def _touch(root: Path, *names: str) -> None:
    """Create small placeholder files (layouts never read image contents)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00")


def _both(root: Path, name: str):
    """Read ``root`` by detection and by name; check both agree and return the dataset."""
    assert detect_layout(root) == name
    auto, named = read_dataset(root), read_dataset(root, layout=name)
    assert auto.layout == named.layout == name
    assert auto.cases == named.cases
    return auto


def test_split_ending_handles_double_endings() -> None:
    assert split_ending("a/ct_001.nii.gz") == ("ct_001", ".nii.gz")
    assert split_ending("CASE.NII.GZ") == ("CASE", ".nii.gz")
    assert split_ending("x.tar.gz") == ("x.tar", ".gz")
    assert split_ending("img.v2.png") == ("img.v2", ".png")
    assert split_ending("README") == ("README", "")


def test_folder_pairs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path, "images/a.png", "images/b.png", "images/c.nii.gz", "images/e.jpg",
           "images/.hidden.png", "images/notes.txt",
           "masks/a.png", "masks/c.nii.gz", "masks/e_mask.png", "masks/z.png", "masks/y.png")
    with caplog.at_level(logging.WARNING):
        ds = _both(tmp_path, "folder-pairs")
    assert ds.case_ids == ["a", "b", "c", "e"]
    by_id = {c.case_id: c for c in ds.cases}
    assert by_id["c"].images == (tmp_path / "images/c.nii.gz",)
    assert by_id["c"].label == tmp_path / "masks/c.nii.gz"
    assert by_id["e"].label == tmp_path / "masks/e_mask.png"
    assert by_id["b"].label is None and len(ds.labelled()) == 3
    assert "1 images without a label" in caplog.text and "b" in caplog.text
    assert "2 labels without an image" in caplog.text and "y, z" in caplog.text


def test_folder_pairs_labels_folder_and_duplicate_stems(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.png", "labels/a.png")
    assert read_dataset(tmp_path).cases[0].label == tmp_path / "labels/a.png"
    _touch(tmp_path, "images/a.tif")
    with pytest.raises(InputError, match="a.png and a.tif have the same name"):
        read_dataset(tmp_path)


def test_kvasir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = ["cju0a", "cju0b", "cju0c", "cju0d"]
    _touch(tmp_path, *[f"images/{i}.jpg" for i in ids], *[f"masks/{i}.jpg" for i in ids])
    assert detect_layout(tmp_path) == "kvasir"  # JPEG masks alone say kvasir
    (tmp_path / "train.txt").write_text("cju0a\ncju0b.jpg\n\n", encoding="utf-8")
    (tmp_path / "val.txt").write_text("cju0c\nghost\n", encoding="utf-8")
    (tmp_path / "gt_boxes.json").write_text(json.dumps({"cju0a": [1, 2, 30, 40]}), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = _both(tmp_path, "kvasir")
    assert [c.split for c in ds.cases] == ["train", "train", "val", None]
    assert ds.cases[0].extra["box"] == (1, 2, 30, 40) and "box" not in ds.cases[1].extra
    assert ds.cases[0].label == tmp_path / "masks/cju0a.jpg"
    assert ds.meta["mask_threshold"] == 127 and ds.meta["gt_boxes"] == tmp_path / "gt_boxes.json"
    assert "ghost" in caplog.text
    (tmp_path / "val.txt").write_text("cju0a\n", encoding="utf-8")
    with pytest.raises(InputError, match="cju0a is also listed in train.txt"):
        read_dataset(tmp_path)


def test_kvasir_recognised_by_box_file(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.png", "masks/a.png", "kavsir_bboxes.json")
    assert detect_layout(tmp_path) == "kvasir"
    (tmp_path / "kavsir_bboxes.json").unlink()
    assert detect_layout(tmp_path) == "folder-pairs"  # PNG masks, no box file


def test_nnunet_channels_labels_and_test(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path, "imagesTr/A_0001.nii.gz", "imagesTr/A_0000.nii.gz",
           "imagesTr/B_0000.nii.gz", "imagesTr/B_0001.nii.gz", "imagesTr/C_0000.nii.gz",
           "imagesTr/._A_0000.nii.gz", "labelsTr/A.nii.gz", "labelsTr/Q.nii.gz",
           "imagesTs/T_0000.nii.gz", "imagesTs/T_0001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": {"background": 0, "tumour": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = _both(tmp_path, "nnunet")
    assert ds.case_ids == ["A", "B", "T"]
    a, b, t = ds.cases
    assert a.images == (tmp_path / "imagesTr/A_0000.nii.gz", tmp_path / "imagesTr/A_0001.nii.gz")
    assert a.label == tmp_path / "labelsTr/A.nii.gz" and a.split == "train"
    assert b.label is None and b.split == "train"
    assert t.split == "test" and t.label is None and len(t.images) == 2
    assert ds.meta["channel_names"] == {"0": "FLAIR", "1": "T1c"}
    assert ds.meta["labels"] == {"background": 0, "tumour": 1}
    assert ds.meta["file_ending"] == ".nii.gz"
    text = caplog.text
    assert "without all 2 channels" in text and "C (has [0])" in text
    assert "training cases without a file in labelsTr/" in text and "Q" in text
    assert "numTraining 3" in text


def test_msd_dataset_json_and_whole_files(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/la_003.nii.gz", "imagesTr/case_0001.nii.gz",
           "labelsTr/la_003.nii.gz", "labelsTr/case_0001.nii.gz", "imagesTr/._la_003.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Heart", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "atrium"},
        "numTraining": 2, "training": [
            {"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"},
            {"image": "./imagesTr/case_0001.nii.gz", "label": "./labelsTr/case_0001.nii.gz"}]}), encoding="utf-8")
    ds = _both(tmp_path, "nnunet")
    assert ds.case_ids == ["case_0001", "la_003"]  # case_0001 is a case, not channel 1 of "case"
    assert all(c.label is not None and len(c.images) == 1 for c in ds.cases)
    assert ds.meta["labels"] == {"background": 0, "atrium": 1}
    assert ds.meta["channel_names"] == {"0": "MRI"} and ds.meta["name"] == "Heart"


def test_nnunet_without_dataset_json_infers_ending(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/x_0000.mha", "labelsTr/x.mha", "imagesTr/readme.md")
    ds = read_dataset(tmp_path)
    assert ds.layout == "nnunet" and ds.meta["file_ending"] == ".mha"
    assert ds.cases == [Case("x", (tmp_path / "imagesTr/x_0000.mha",),
                             tmp_path / "labelsTr/x.mha", "train")]


def test_refuge_medical_sam2_layout(tmp_path: Path) -> None:
    for sub, name in (("Training-400", "g0001"), ("Training-400", "n0002"), ("Test-400", "V0001")):
        _touch(tmp_path, f"{sub}/{name}/{name}.jpg",
               *[f"{sub}/{name}/{name}_seg_cup_{k}.png" for k in range(1, 8)],
               *[f"{sub}/{name}/{name}_seg_disc_{k}.png" for k in range(1, 8)])
    _touch(tmp_path, "Training-400/broken/other.jpg")
    ds = _both(tmp_path, "refuge")
    assert [(c.case_id, c.split) for c in ds.cases] == [
        ("g0001", "train"), ("n0002", "train"), ("V0001", "test")]
    g = ds.cases[0]
    assert g.images == (tmp_path / "Training-400/g0001/g0001.jpg",) and g.label is None
    cup = [f"g0001_seg_cup_{k}.png" for k in range(1, 8)]
    assert [p.name for p in g.extra["cup_raters"]] == cup
    assert len(g.extra["disc_raters"]) == 7 and ds.meta["target"] == "cup"


def test_btcv_frames_sorted_numerically(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for k in range(12):
        _touch(tmp_path, f"Training/image/img0001/{k}.jpg", f"Training/mask/img0001/{k}.npy")
    _touch(tmp_path, "Training/image/img0001/thumb.jpg")
    for k in range(3):
        _touch(tmp_path, f"Test/image/img0035/{k}.jpg")
    with caplog.at_level(logging.WARNING):
        ds = _both(tmp_path, "btcv")
    train, test = ds.cases
    assert [p.name for p in train.images] == [f"{k}.jpg" for k in range(12)]  # 2 before 10
    assert train.label == tmp_path / "Training/mask/img0001" and train.split == "train"
    assert [p.stem for p in train.extra["label_frames"]] == [str(k) for k in range(12)]
    assert train.extra["n_frames"] == 12
    assert test.split == "test" and test.label is None
    assert "thumb.jpg" in caplog.text and "img0035 has no mask frames" in caplog.text


def test_medsam_npz(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "CT").mkdir()
    img, gts = np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8)
    np.savez_compressed(tmp_path / "CT/CT_Abd_0001.npz", imgs=img, gts=gts, spacing=[1.0, 1, 1])
    np.savez_compressed(tmp_path / "test_case.npz", imgs=img, boxes=np.zeros((1, 6)))
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with caplog.at_level(logging.WARNING):
        ds = _both(tmp_path, "medsam-npz")
    assert ds.case_ids == ["CT/CT_Abd_0001", "test_case"]
    ct, test = ds.cases
    assert ct.images == (tmp_path / "CT/CT_Abd_0001.npz",) and ct.label == ct.images[0]
    assert ct.extra["label_key"] == "gts" and "spacing" in ct.extra["keys"]
    assert test.label is None and test.extra["label_key"] is None
    assert "other.npz" in caplog.text
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        read_dataset(tmp_path)


def test_medsam_npy(tmp_path: Path) -> None:
    for name in ("CT_Abd_0001-000", "CT_Abd_0001-001", "MR_x-2-010"):
        _touch(tmp_path, f"imgs/{name}.npy", f"gts/{name}.npy")
    ds = _both(tmp_path, "medsam-npy")
    assert ds.case_ids == ["CT_Abd_0001-000", "CT_Abd_0001-001", "MR_x-2-010"]
    assert ds.cases[1].extra == {"volume": "CT_Abd_0001", "slice": 1}
    assert ds.cases[2].extra == {"volume": "MR_x-2", "slice": 10}
    assert ds.cases[0].label == tmp_path / "gts/CT_Abd_0001-000.npy"


def test_unknown_folder_lists_every_layout(tmp_path: Path) -> None:
    _touch(tmp_path, "photos/a.png")
    with pytest.raises(InputError) as err:
        read_dataset(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "cannot tell the dataset layout" in message
    for name in LAYOUTS:
        assert f"{name}: " in message
    assert "nnunet: imagesTr/" in message


@pytest.mark.parametrize(("layout", "missing"), [
    ("nnunet", "missing imagesTr/"),
    ("kvasir", "missing masks/"),
    ("folder-pairs", "missing masks/"),
    ("refuge", "missing Training-400/, Test-400/"),
    ("btcv", "missing Training/image/, Training/mask/"),
    ("medsam-npy", "missing imgs/, gts/"),
    ("medsam-npz", "no .npz files"),
])
def test_named_layout_that_does_not_fit(tmp_path: Path, layout: str, missing: str) -> None:
    _touch(tmp_path, "images/a.jpg")
    with pytest.raises(InputError, match=f"not a {layout} dataset: {missing}"):
        read_dataset(tmp_path, layout=layout)


def test_bad_roots_and_layout_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dataset folder not found"):
        read_dataset(tmp_path / "nope")
    _touch(tmp_path, "file.png")
    with pytest.raises(InputError, match="is a file"):
        detect_layout(tmp_path / "file.png")
    with pytest.raises(InputError, match="unknown dataset layout 'coco'; choose one of nnunet"):
        read_dataset(tmp_path, layout="coco")


def test_case_is_frozen_hashable_and_picklable(tmp_path: Path) -> None:
    case = Case("a", [str(tmp_path / "a.png")], str(tmp_path / "m.png"), "train", {"slice": 3})
    assert case.images == (tmp_path / "a.png",) and case.label == tmp_path / "m.png"
    with pytest.raises(TypeError):
        case.extra["slice"] = 4  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.split = "val"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(case)) == case
    assert len({case, dataclasses.replace(case)}) == 1


def test_dataset_with_split(tmp_path: Path) -> None:
    _touch(tmp_path, *[f"images/{i}.png" for i in "abc"], *[f"masks/{i}.png" for i in "abc"])
    ds = read_dataset(tmp_path).with_split(["a", "c"], ["b"])
    assert [c.split for c in ds.cases] == ["train", "val", "train"]
    assert [c.case_id for c in ds.by_split("val")] == ["b"] and ds.get("c").split == "train"
    with pytest.raises(InputError, match="1 split ids name no case, e.g. zz"):
        ds.with_split(["zz"], [])
    with pytest.raises(InputError, match="no case 'q'"):
        ds.get("q")
