"""The one model of a server, shared by every session.

:class:`Engine` holds the model (inside a :class:`~medsamkit.inference.predictor.Predictor`),
one lock that every encoder and decoder call takes, and the embedding cache. Each session gets
its own :class:`SessionPredictor`: the same model and geometry, its own current embedding, and
embeddings looked up in the shared :class:`~.cache.ByteLRU` under the session's id and the
image's content, so that a slice is encoded once however often it is prompted. Concurrent
requests are therefore safe (the model runs one call at a time) and a long propagation lets other
requests in between its slices.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from ..inference.predictor import ImageEmbedding, Prediction, Predictor
from .cache import ByteLRU


def embedding_bytes(embedding: ImageEmbedding) -> int:
    features = embedding.features
    return int(features.numel() * features.element_size())


def content_key(image: np.ndarray) -> tuple:
    """A key that identifies an image by its pixels (shape, dtype and a BLAKE2 digest)."""
    data = np.ascontiguousarray(image)
    return data.shape, str(data.dtype), hashlib.blake2b(data.data, digest_size=16).hexdigest()


class Engine:
    """The shared model, its lock and the embedding cache.

    Args:
        base: a predictor made the way ``medsamkit segment`` makes it (model, geometry, encoder
            backend); only its parts are used.
        cache_bytes: the embedding cache's bound over all sessions.
        name: the model's name, shown by the page.
    """

    def __init__(self, base: Predictor, cache_bytes: int, name: str = "") -> None:
        self.base = base
        self.name = name
        self.lock = threading.RLock()
        self.cache: ByteLRU[ImageEmbedding] = ByteLRU(cache_bytes, embedding_bytes)
        self.encoder_calls = 0

    def predictor(self, owner: str) -> SessionPredictor:
        """A predictor for the session ``owner`` (its own state, the shared model and cache)."""
        return SessionPredictor(self, owner)

    def forget(self, owner: str) -> None:
        """Drop the cached embeddings of a session."""
        self.cache.drop_owner(owner)


class SessionPredictor(Predictor):
    """A :class:`Predictor` whose model calls take the engine's lock and whose embeddings are cached."""

    def __init__(self, engine: Engine, owner: str) -> None:
        base = engine.base
        super().__init__(base.model, base.geometry, base.encoder, exact_encoder=base.exact_encoder)
        self._engine = engine
        self._owner = owner
        self.grow_px = base.grow_px
        self.keep_topology = base.keep_topology

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        key = (self._owner, content_key(image))
        cached = self._engine.cache.get(key)
        if cached is not None:
            return cached
        with self._engine.lock:
            cached = self._engine.cache.get(key)  # another request may have made it meanwhile
            if cached is not None:
                return cached
            embedding = super().embed(image)
            self._engine.encoder_calls += 1
        self._engine.cache.put(key, embedding)
        return embedding

    def predict(self, *args, **kwargs) -> Prediction:
        with self._engine.lock:
            return super().predict(*args, **kwargs)
