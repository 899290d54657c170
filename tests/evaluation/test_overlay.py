"""The overlay picture of ``segment --overlay``: small images enlarged, distinct colours for the
mask, its outline and the box, and a legend."""

from __future__ import annotations

import numpy as np

from medsamkit.evaluation.overlay import (BOX_COLOUR, OUTLINE_COLOUR, colour_for, display_scale, draw_overlay,
                                          overlay_picture)


def _scene():
    image = np.full((128, 96, 3), 50, np.uint8)
    labels = np.zeros((128, 96), np.uint8)
    labels[40:80, 30:60] = 255  # one object, as a 0/255 mask
    return image, labels, [(20, 30, 70, 90)]


def test_display_scale_brings_the_longest_side_to_512():
    assert display_scale((128, 96)) == 4
    assert display_scale((200, 260)) == 2
    assert display_scale((512, 100)) == 1 and display_scale((1024, 2048)) == 1


def test_small_images_are_enlarged_pixel_for_pixel_with_a_legend_below():
    image, labels, boxes = _scene()
    picture = overlay_picture(image, labels, boxes, [255])
    assert picture.shape[1:] == (96 * 4, 3) and picture.shape[0] > 128 * 4
    top = picture[:512]
    # pixel (y, x) covers a 4 x 4 block: far from the drawings the image is unchanged
    assert (top[:100, :60] == 50).all()
    # the mask's inside is tinted with the first colour (a single 0/255 object)
    fill = top[60 * 4 + 1, 45 * 4 + 1].astype(int)
    expected = np.round(0.55 * 50 + 0.45 * np.array(colour_for(1))).astype(int)
    assert np.abs(fill - expected).max() <= 1
    legend = picture[512:]
    assert np.median(legend) == 32 and (legend > 200).any()  # dark strip with light text


def test_mask_outline_and_box_have_distinct_colours():
    image, labels, boxes = _scene()
    top = overlay_picture(image, labels, boxes, [255])[:512]
    colours = {tuple(int(v) for v in px) for px in top.reshape(-1, 3)}
    assert OUTLINE_COLOUR in colours and BOX_COLOUR in colours
    # the box's left edge at x0 * 4, between its top and bottom
    assert tuple(top[60 * 4, 20 * 4]) == BOX_COLOUR
    # the mask's outline on its top-left corner pixel's block
    assert tuple(top[40 * 4, 45 * 4]) == OUTLINE_COLOUR
    fill = tuple(int(v) for v in top[60 * 4 + 1, 45 * 4 + 1])
    assert len({fill, OUTLINE_COLOUR, BOX_COLOUR}) == 3


def test_large_images_keep_their_size_and_several_objects_get_their_own_colours():
    image = np.full((600, 700, 3), 50, np.uint8)
    labels = np.zeros((600, 700), np.uint8)
    labels[100:200, 100:200], labels[300:400, 300:400] = 1, 2
    picture = overlay_picture(image, labels, [(90, 90, 210, 210), (290, 290, 410, 410)], [1, 2],
                              clicks=[(150, 150, 1), (350, 350, 0)])
    assert picture.shape[1:] == (700, 3) and 600 < picture.shape[0] < 700
    a, b = tuple(picture[120, 120]), tuple(picture[320, 320])
    assert a != b


def test_draw_overlay_keeps_the_image_size():
    image, labels, boxes = _scene()
    assert draw_overlay(image, labels, boxes).shape == image.shape
