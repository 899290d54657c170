"""The engine: one lock around every model call, embeddings cached per session by content."""

from __future__ import annotations

import threading

import numpy as np
import torch

from medsamkit.inference.predictor import Predictor
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.server.engine import Engine, content_key


class TinyModel(torch.nn.Module):
    """Stands in for a Sam: encode() makes a 256 x 64 x 64 'embedding', decode() a 256 x 256 logit map."""

    image_size = 256

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.encoded = 0
        self.lock_held_in_decode = []

    def encode(self, x):
        self.encoded += 1
        return x.mean(dim=1, keepdim=True)[:, :, ::4, ::4].repeat(1, 256, 1, 1)

    def decode(self, features, boxes=None, points=None, masks=None, multimask_output=False):
        n = boxes.shape[0]
        self.lock_held_in_decode.append(ENGINE.lock._is_owned())
        return torch.zeros(n, 1, 256, 256), torch.ones(n, 1)


MODEL = TinyModel()
ENGINE = Engine(Predictor(MODEL, geometry_for("litemedsam")), cache_bytes=3 * 256 * 64 * 64 * 4, name="tiny")


def image(seed):
    return np.random.default_rng(seed).integers(0, 255, (40, 50, 3), dtype=np.uint8)


def test_an_image_is_encoded_once_per_session_and_kept_under_the_byte_bound():
    MODEL.encoded = 0
    a, b = ENGINE.predictor("a"), ENGINE.predictor("b")
    first = a.embed(image(0))
    assert a.embed(image(0).copy()) is first and MODEL.encoded == 1  # same pixels: cached
    b.embed(image(0))
    assert MODEL.encoded == 2  # another session: its own entry
    for seed in (1, 2, 3):
        a.embed(image(seed))
    assert len(ENGINE.cache) == 3 and ENGINE.cache.bytes <= ENGINE.cache.max_bytes
    ENGINE.forget("a")
    assert all(key[0] != "a" for key in ENGINE.cache._items)


def test_model_calls_hold_the_engine_lock_and_each_session_keeps_its_own_embedding():
    a, b = ENGINE.predictor("x"), ENGINE.predictor("y")
    a.set_image(image(5))
    b.set_image(image(6))
    assert a.embedding is not b.embedding
    a.predict(boxes=np.array([[1, 1, 20, 20]]))
    assert MODEL.lock_held_in_decode[-1] is True
    threads = [threading.Thread(target=p.predict, kwargs={"boxes": np.array([[2, 2, 30, 30]])}) for p in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(MODEL.lock_held_in_decode)


def test_content_keys_see_pixels_shape_and_dtype():
    img = image(7)
    assert content_key(img) == content_key(img.copy())
    assert content_key(img) != content_key(img[:, :, ::-1].copy())
    assert content_key(img) != content_key(img.reshape(50, 40, 3))
