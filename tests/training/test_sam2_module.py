"""SAM2-family fine-tuning on synthetic volumes with the tiny random SAM2 (``build_test_model``):
clips from consecutive slices, the loss goes down, the frozen encoder's features are computed
once, checkpoints hold only the trained weights, an interrupted run resumes, and the export is
the official ``{"model": state_dict}`` that loads strictly."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from medsamkit.data.samples import Sample
from medsamkit.errors import InputError
from medsamkit.models.checkpoint import load_state_dict_strict, read_checkpoint
from medsamkit.models.sam2.config import build_test_model
from medsamkit.preprocessing.geometry import SAM2Geometry
from medsamkit.training.clips import ClipDataset, ClipIndex, ClipSettings, FrameEncoder
from medsamkit.training.config import load_config
from medsamkit.training.datamodule import DataSources
from medsamkit.training.export import read_export_metadata
from medsamkit.training.fit import fit
from medsamkit.training.losses import Sam2FrameLoss
from medsamkit.training.sam2_module import Sam2Module, Sam2Net

SIZE = 64


def volume_samples(case: str, depth: int, seed: int) -> list[Sample]:
    """Slices 0..depth-1 of a volume with a bright ellipsoid (label 1) present on slices
    1..depth-2, shifting a little from slice to slice; one sample per slice where it is."""
    rng = np.random.default_rng(seed)
    cx, cy = int(rng.integers(24, 40)), int(rng.integers(24, 40))
    out = []
    for z in range(1, depth - 1):
        image = rng.normal(60, 15, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        r = 6 + min(z, depth - 1 - z)
        cv2.ellipse(mask, (cx + z, cy), (r, r - 2), 0, 0, 360, 1, -1)
        image[mask > 0] = np.clip(image[mask > 0].astype(int) + 120, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        out.append(Sample(image, mask, (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
                          (SIZE, SIZE), case, label=1, slice_index=z))
    return out


@pytest.fixture(scope="module")
def data():
    train = volume_samples("a", 8, 0) + volume_samples("b", 7, 1)
    return DataSources(train, volume_samples("c", 6, 2))


def quick(out, *overrides):
    return load_config([], ["--model.name", "sam2.1-hiera-tiny", "--model.pretrained", "false",
                            "--output.dir", str(out), "--data.batch_size", "2", "--data.clip_length", "4",
                            "--output.progress_bar", "false", "--output.tensorboard", "false",
                            "--optim.lr", "2e-3", "--optim.scheduler", "none", "--trainer.max_epochs", "3",
                            "--trainer.log_every_n_steps", "1", *overrides])


def test_clip_index_and_items(data):
    index = ClipIndex.of(data.train)
    assert index.frames(0, 4, reverse=False) == [(0, True), (1, True), (2, True), (3, True)]
    assert index.frames(5, 4, reverse=False) == [(5, True)]  # the last slice of volume a
    assert index.frames(1, 4, reverse=True) == [(1, True), (0, True)]  # stops at the volume's bottom
    dataset = ClipDataset(data.train, SAM2Geometry(SIZE), ClipSettings(4, "box", prompt_every=2), train=False)
    item = dataset[4]  # slices 5, 6 of volume a, then padding
    assert item["image"].shape == (4, 3, SIZE, SIZE) and item["mask"].shape == (4, 1, SIZE, SIZE)
    assert item["frame_valid"].tolist() == [True, True, False, False]
    assert item["is_prompt"].tolist() == [True, False, False, False]
    assert item["prompt_labels"][0].tolist() == [2, 3]
    assert item["prompt_coords"][0].flatten().tolist() == list(data.train[4].box)
    assert torch.equal(item["mask"][1, 0], torch.from_numpy(data.train[5].mask.astype(np.float32)))
    clicks = ClipDataset(data.train, SAM2Geometry(SIZE), ClipSettings(4, "click", prompt_every=2), train=False)[0]
    assert clicks["is_prompt"].tolist() == [True, False, True, False]
    x, y = clicks["prompt_coords"][2, 0].int().tolist()
    assert clicks["prompt_labels"][2].tolist() == [1, -1] and data.train[2].mask[y, x] == 1


def test_frame_encoder_packs_what_the_model_encodes():
    torch.manual_seed(0)
    model = build_test_model(SIZE).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    encoder = FrameEncoder(model)
    with torch.no_grad():
        unpacked = encoder.unpack(encoder(images))
        direct = model.encode(images)
    assert all(torch.equal(a, b) for a, b in zip(unpacked, direct))


def test_sam2_loss_picks_the_best_output_and_ignores_absent_masks():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good = target * 20 - 10
    multimask = torch.cat([-good, good, torch.zeros_like(good)], dim=1)
    loss = Sam2FrameLoss()
    parts = loss(multimask, good, torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([[5.0]]), target)
    assert parts["focal"] < 1e-6 and parts["dice"] < 1e-3  # the right output was chosen
    assert parts["iou"] == pytest.approx((0 + 0 + 0.5) / 3)  # every output's IoU is supervised
    absent = loss(multimask, good, torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([[5.0]]), torch.zeros_like(target))
    assert absent["focal"] == 0 and absent["dice"] == 0 and absent["iou"] == 0
    assert absent["object_score"] > 4  # predicted present, absent: only the object score is wrong
    dice_bce = Sam2FrameLoss("dice-bce")(multimask, good, torch.ones(1, 3), torch.tensor([[5.0]]), target)
    assert set(dice_bce) == {"dice", "bce", "object_score", "loss"} and dice_bce["bce"] < 1e-3


def _clip_loss(net, data) -> float:
    dataset = ClipDataset(data.train, SAM2Geometry(SIZE), ClipSettings(4), train=False)
    module = Sam2Module(net, Sam2FrameLoss(), load_config([], []).optim)
    batch = {k: torch.stack([dataset[i][k] for i in range(len(dataset))]) for k in dataset[0]}
    net.eval()
    with torch.no_grad():
        return module._clip_losses(batch)[0]["loss"].item()


class EncoderCalls:
    def __init__(self, model) -> None:
        self.images = 0
        model.image_encoder.register_forward_hook(lambda m, args, out: setattr(self, "images", self.images
                                                                                + args[0].shape[0]))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("sam2")
    torch.manual_seed(0)
    model = build_test_model(SIZE)
    calls = EncoderCalls(model)
    before = _clip_loss(Sam2Net(model, "decoder"), data)
    calls.images = 0
    result = fit(quick(out), data, model=model, geometry=SAM2Geometry(SIZE))
    return {"out": out, "model": model, "calls": calls, "before": before, "result": result}


def test_loss_goes_down_and_features_are_computed_once(run, data):
    assert run["calls"].images == len(data.train) + len(data.val)  # each slice once, for 3 epochs
    assert _clip_loss(Sam2Net(run["model"], "decoder"), data) < run["before"]
    rows = list(csv.DictReader(open(next((run["out"] / "csv").glob("version_*/metrics.csv")), encoding="utf-8")))
    epoch = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(epoch) == 3 and epoch[-1] < epoch[0]
    assert any(r.get("train_focal") for r in rows) and len([r for r in rows if r.get("val_dice")]) == 3


def test_checkpoints_hold_the_trained_parts_only(run):
    ckpt = torch.load(run["result"].last_checkpoint, map_location="cpu", weights_only=False)
    keys = {k.removeprefix("net.model.") for k in ckpt["state_dict"]}
    assert not any(k.startswith(("image_encoder.", "sam_mask_decoder.conv_s")) for k in keys)
    for part in ("memory_attention.", "memory_encoder.", "sam_mask_decoder.transformer.", "sam_prompt_encoder.",
                 "obj_ptr_proj.", "maskmem_tpos_enc", "no_mem_embed"):
        assert any(k.startswith(part) for k in keys), part
    assert not any(p.requires_grad for p in run["model"].image_encoder.parameters())


def test_export_is_official_and_loads_strictly(run):
    path = run["result"].export_path
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"}  # facebookresearch/sam2's build_sam2 reads ckpt["model"]
    fresh = build_test_model(SIZE)
    load_state_dict_strict(fresh, read_checkpoint(path), source=str(path), model_name="tiny")
    trained = run["model"].state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())
    meta = read_export_metadata(path)
    assert meta["mode"] == "decoder" and meta["automatic"] is False and meta["family"] == "sam2"


def test_resume_continues_without_re_encoding(run, data):
    calls = run["calls"]
    calls.images = 0
    result = fit(quick(run["out"], "--trainer.max_epochs", "4"), data, model=run["model"],
                 geometry=SAM2Geometry(SIZE))
    assert calls.images == 0 and result.epochs == 4
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 3 and ckpt["global_step"] == 24  # 6 clips of train a + 5 of b: 6 steps per epoch


def test_full_mode_trains_the_encoder_and_clicks_work(tmp_path, data):
    torch.manual_seed(0)
    model = build_test_model(SIZE)
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    fit(quick(tmp_path, "--model.mode", "full", "--trainer.max_epochs", "1", "--data.prompt", "click",
              "--data.prompt_every", "2", "--loss.kind", "dice-bce", "--trainer.precision", "bf16-mixed"),
        data, model=model, geometry=SAM2Geometry(SIZE))
    after = model.image_encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "embeddings").exists()  # nothing cached when the encoder trains


def test_bad_mode_and_loss_are_refused(tmp_path, data):
    with pytest.raises(InputError, match="decoder .*or full"):
        fit(quick(tmp_path, "--model.mode", "lora"), data, model=build_test_model(SIZE), geometry=SAM2Geometry(SIZE))
    with pytest.raises(InputError, match="data.prompt"):
        quick(tmp_path, "--data.prompt", "scribble")
