"""Box plots and comparison grids: files open, sizes follow the layout."""

import numpy as np
import pytest
from PIL import Image

from medsamkit.evaluation.plots import GAP, ROW_TITLE_H, TITLE_H, GridRow, box_plot, comparison_grid, \
    display_rgb, grid_size


def test_box_plot_png(tmp_path):
    values = {"1": {"a": [0.9, 0.8, 0.95], "b": [0.5, 0.6, float("nan")]},
              "2": {"a": [0.7, 0.75], "b": [0.2, float("inf")]}}
    box_plot(values, "dsc", tmp_path / "box.png")
    with Image.open(tmp_path / "box.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] == 400
        assert np.asarray(im.convert("L")).std() > 10  # something was drawn


def rows(n_rows, shapes):
    out = []
    for i in range(n_rows):
        h, w = shapes[i % len(shapes)]
        image = np.full((h, w, 3), 60, np.uint8)
        gt = np.zeros((h, w), np.uint8)
        gt[h // 4:h // 2, w // 4:w // 2] = 1
        pred = np.roll(gt, 3, axis=1)
        out.append(GridRow(f"case{i}", image, gt, [("m1: DSC 0.900", pred), ("m2: missing", None)]))
    return out


@pytest.mark.parametrize("n_rows,panel", [(1, 64), (3, 100)])
def test_grid_size_follows_the_layout(tmp_path, n_rows, panel):
    path = tmp_path / "grid.png"
    size = comparison_grid(rows(n_rows, [(80, 120), (150, 90)]), path, panel)
    assert size == grid_size(n_rows, 2, panel)
    assert size == (n_rows * (ROW_TITLE_H + TITLE_H + panel) + (n_rows + 1) * GAP, 4 * panel + 5 * GAP)
    with Image.open(path) as im:
        assert im.size == (size[1], size[0])
        px = np.asarray(im.convert("RGB"))
    # the second column (ground truth overlay) of the first row holds the label colour
    y0, x0 = GAP + ROW_TITLE_H + TITLE_H, GAP + panel + GAP
    gt_panel = px[y0:y0 + panel, x0:x0 + panel].reshape(-1, 3)
    assert (np.abs(gt_panel.astype(int) - (60, 60, 60)).sum(axis=1) > 60).any()
    assert (px[GAP:GAP + ROW_TITLE_H] < 128).any()  # title text drawn


def test_grid_needs_rows_and_same_models(tmp_path):
    with pytest.raises(ValueError):
        comparison_grid([], tmp_path / "g.png")
    bad = rows(2, [(40, 40)])
    bad[1] = GridRow("x", bad[1].image, bad[1].gt, [("only one", None)])
    with pytest.raises(ValueError):
        comparison_grid(bad, tmp_path / "g.png")


def test_display_rgb():
    assert display_rgb(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)
    ct = np.linspace(-1000, 1000, 100).reshape(10, 10).astype(np.int16)
    shown = display_rgb(ct)
    assert shown.shape == (10, 10, 3) and shown.dtype == np.uint8 and shown.max() == 255


def test_long_panel_titles_keep_their_score():
    from PIL import ImageDraw

    from medsamkit.evaluation.plots import _fit, _font

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = _font(13)
    title = "LiteMedSAM fine-tuned on the training split (decoder only): DSC 0.962"
    short = _fit(draw, title, font, 150)
    assert short.endswith("…: DSC 0.962") and short.startswith("LiteMed")
    assert draw.textlength(short, font=font) <= 150
    assert _fit(draw, "zero-shot: DSC 0.974", font, 250) == "zero-shot: DSC 0.974"  # fits: unchanged
    plain = _fit(draw, "a title without a score that is far too long for the panel", font, 100)
    assert plain.endswith("…") and draw.textlength(plain, font=font) <= 100
