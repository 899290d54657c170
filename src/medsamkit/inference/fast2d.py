"""Box-prompted 2D segmentation with no torch import, on engines a torch run already built.

A CLI run on the CPU engines (``--backend auto|openvino|onnx``) spends ~1.5 s before its first
image on importing torch and building the model, although the image encoder and the box decoder
it then runs are cached ONNX/OpenVINO files. When such a run has built them, it leaves a record
(:func:`remember_engines`, ``<cache>/fastpath/<key>.json``): which files, engines, precision and
threads it used, and the SHA-256 of the weights file. The key is what the user asked for (model,
weights file path and size, device, backend, precision, threads), this medsamkit version and this
CPU. A later run asking the same finds the record (:func:`fast_segmenter`), checks that the weights
file still has that digest (~30 ms for LiteMedSAM's 39 MB) and runs those files with
OpenVINO / ONNX Runtime and numpy pre- and post-processing. Anything the record does not cover
(clicks, another model family, a changed weights file, a missing file) takes the torch path,
which writes a new record.

Same masks: the model input is made by the same numpy code as
:class:`~medsamkit.preprocessing.geometry.LiteMedSAMGeometry` (:mod:`medsamkit.preprocessing.frames`),
the engines are the same files on the same settings, and the logits go back to the original size
with cv2's bilinear resize instead of torch's (the same half-pixel formula; the masks are compared
in ``tests/inference/test_fast2d.py`` and ``tests/cli/test_cli_fast_path.py``).
``MEDSAMKIT_FAST_PATH=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import __version__
from ..errors import InputError
from ..preprocessing.frames import (Frame, litemedsam_boxes, litemedsam_logits_to_original, litemedsam_resize, minmax01,
                                   padded_chw)
from .engine_runtime import OpenVinoRunner, SplitDecoder, cpu_tag, image_side_path, ort_session
from .margin_check import FallbackTracker, MarginCheck
from .prompts import BoxPrompt
from .segment2d_io import (RgbReader, check_rgb_image, label_map_from_logits, output_labels, validate_boxes,
                           write_outputs)

log = logging.getLogger(__name__)

#: bump when what a record means changes (the files it names, how they are run)
RECORD_VERSION = 4
_OFF = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class EngineRequest:
    """What a run asked for: the CLI's model options."""

    model: str | None
    checkpoint: str | None
    device: str | None = "auto"
    backend: str = "auto"
    precision: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class EngineRecord:
    """The engines a torch run built for an :class:`EngineRequest` (file paths absolute)."""

    model: str
    encoder_backend: str
    encoder_precision: str
    encoder_path: str
    decoder_backend: str
    decoder_path: str
    threads: int
    weights_sha256: str
    input_size: int = 256


def _cpu_identity() -> str:
    """This CPU's model name and instruction-set flags (Linux), else what platform says, and any
    instruction-set limit set for oneDNN (it changes which precision is faster)."""
    limits = "|".join(os.environ.get(v, "") for v in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"))
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        first = text.split("\n\n", 1)[0]
        keep = [line for line in first.splitlines() if line.split(":")[0].strip() in ("model name", "flags")]
        return "|".join(keep or [platform.processor()]) + "|" + limits
    except OSError:
        return f"{platform.machine()}|{platform.processor()}|{limits}"


def _weights_file(request: EngineRequest) -> Path | None:
    """The weights file the torch path would load, found without loading or verifying it."""
    if request.checkpoint is not None:
        return Path(request.checkpoint)
    from ..choices import DEFAULT_MODEL
    from ..models.zoo import locate

    try:  # registry names are their weights' zoo keys; were one not, its key would match no record
        return locate(request.model or DEFAULT_MODEL)
    except Exception:  # noqa: BLE001 - an unknown name: the torch path says what is wrong
        return None


def request_key(request: EngineRequest, weights: Path) -> str | None:
    """The record key of ``request`` with ``weights`` as they are now; None when the file is gone."""
    try:
        stat = weights.resolve().stat()
    except OSError:
        return None
    parts = [RECORD_VERSION, __version__, _cpu_identity(), asdict(request), str(weights.resolve()), stat.st_size]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def record_dir(cache: Path | None = None) -> Path:
    from ..models.zoo import cache_dir

    return (cache_dir() if cache is None else cache) / "fastpath"


def remember_engines(request: EngineRequest, loaded: Any, predictor: Any, cache: Path | None = None) -> Path | None:
    """After a torch run built its engines for ``loaded`` (a :class:`~medsamkit.models.loader.LoadedModel`):
    record them for the next run asking the same.

    Only LiteMedSAM-geometry SAM models with both the image encoder and the box decoder on an
    engine (files on disk) are recorded; returns the record's path, or None."""
    engine, encoder, decoder = getattr(predictor, "engine", None), getattr(predictor, "encoder", None), \
        getattr(predictor, "box_decoder", None)
    geometry = getattr(predictor, "geometry", None)
    if engine is None or engine.backend not in ("openvino", "onnx") or engine.precision not in ("fp32", "bf16") \
            or getattr(geometry, "family", None) != "litemedsam" or getattr(predictor, "family", None) != "sam" \
            or getattr(decoder, "path", None) is None or getattr(encoder, "path", None) is None \
            or getattr(decoder, "precision", "fp32") != "fp32":
        return None
    key = request_key(request, Path(loaded.weights_path))
    if key is None:
        return None
    from ..models.zoo import sha256_file

    threads = request.threads or _torch_threads()
    record = EngineRecord(loaded.spec.name, engine.backend, engine.precision, str(Path(encoder.path).resolve()),
                          decoder.backend, str(Path(decoder.path).resolve()), int(threads),
                          sha256_file(loaded.weights_path), geometry.input_size)
    path = record_dir(cache) / f"{key}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # the record only saves time: a read-only cache costs the torch path
        log.debug("could not write the engine record %s: %s", path, exc)
        return None
    return path


def _torch_threads() -> int:
    import torch  # the torch path has it imported already

    return torch.get_num_threads()


def find_record(request: EngineRequest, cache: Path | None = None) -> EngineRecord | None:
    """The record of an earlier run that asked the same, when its files are all still there."""
    if os.environ.get("MEDSAMKIT_FAST_PATH", "").strip().lower() in _OFF:
        return None
    if request.device not in (None, "auto", "cpu") or request.backend not in ("auto", "openvino", "onnx"):
        return None
    weights = _weights_file(request)
    key = None if weights is None else request_key(request, weights)
    path = None if key is None else record_dir(cache) / f"{key}.json"
    if path is None or not path.is_file():
        return None
    try:
        record = EngineRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        log.debug("ignoring the engine record %s: %s", path, exc)
        return None
    files = (Path(record.encoder_path), Path(record.decoder_path), image_side_path(Path(record.decoder_path)))
    if not all(f.is_file() for f in files):
        return None
    from ..models.zoo import sha256_file

    if sha256_file(weights) != record.weights_sha256:  # the same file name and size, other weights
        return None
    return record


@dataclass(frozen=True)
class FastEmbedding:
    """The encoder output of one image (numpy) and where the image sits in the model input."""

    features: np.ndarray  # (1, 256, 64, 64) float32
    frame: Frame
    inputs: np.ndarray | None = None  # the model input, kept when the encoder runs bf16


class FastPredictor:
    """LiteMedSAM on the recorded engines: encode images, decode boxes, numpy in and out.

    ``mode="throughput"`` (folders): an OpenVINO encoder takes several images at once
    (:meth:`embed_async`), and ONNX Runtime's idle decoder threads sleep. ``recheck``: with a bf16
    encoder chosen by ``auto``, masks too close to call are decoded from fp32 (as the torch path)."""

    family = "sam"

    def __init__(self, record: EngineRecord, cache: Path | None = None, mode: str = "latency",
                 recheck: bool = True) -> None:
        from ..models.zoo import cache_dir

        openvino = (cache_dir() if cache is None else cache) / "openvino"
        blobs = openvino / cpu_tag() if "openvino" in (record.encoder_backend, record.decoder_backend) else openvino
        self.record, self.input_size = record, record.input_size
        threads = record.threads
        self._blobs, self._exact_runner = blobs, None
        # bf16 embeddings: masks too close to call are decoded again from fp32 (as the torch path)
        self.margin_check = MarginCheck() if recheck and record.encoder_precision == "bf16" else None
        self.fallback = FallbackTracker()
        if record.encoder_backend == "openvino":
            self.encoder: Any = OpenVinoRunner(Path(record.encoder_path), blobs, record.encoder_precision,
                                               threads, mode)
            self._encode = self.encoder.submit
        else:
            self.encoder = ort_session(Path(record.encoder_path), threads, quiet=True)
            self._encode = self._ort_encode
        self._decode = SplitDecoder(Path(record.decoder_path), record.decoder_backend, threads,
                                    spin=mode == "latency", blobs=blobs)
        log.info("cached engines, no torch: image encoder %s %s (%s), box decoder %s (%s), %d threads",
                 record.encoder_backend, record.encoder_precision, Path(record.encoder_path).name,
                 record.decoder_backend, Path(record.decoder_path).name, threads)

    def _ort_encode(self, x: np.ndarray) -> Callable[[], list[np.ndarray]]:
        out = self.encoder.run(None, {"image": x})
        return lambda: out

    def embed_async(self, image: np.ndarray) -> Callable[[], FastEmbedding]:
        """Start encoding ``image``; the returned function gives its embedding (in the background
        with an OpenVINO throughput encoder, else before returning)."""
        x, frame = model_input(image, self.input_size)
        if self.margin_check is not None and self.fallback.exact_only:
            features = self._exact_features(x)
            return lambda: FastEmbedding(features, frame)
        pending = self._encode(x)
        kept = x if self.margin_check is not None else None
        return lambda: FastEmbedding(pending()[0], frame, kept)

    def embed(self, image: np.ndarray) -> FastEmbedding:
        return self.embed_async(image)()

    def predict_boxes(self, embedding: FastEmbedding, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) original-pixel boxes (validated) -> (N, H, W) float32 logits at the original size."""
        frame = embedding.frame
        model_boxes = litemedsam_boxes(np.asarray(boxes, np.float64).reshape(-1, 4), frame)
        low_res = self._decode(np.ascontiguousarray(embedding.features, np.float32), model_boxes,
                               key=embedding.features)[0]
        if self.margin_check is not None and embedding.inputs is not None:
            redo = self.margin_check.uncertain(low_res[:, 0], frame)
            self.fallback.record(bool(redo.any()))
            if redo.any():
                log.info("%d of %d masks too close to call on the bf16 embedding: decoded from fp32",
                         int(redo.sum()), len(redo))
                low_res = low_res.copy()
                low_res[redo] = self._decode(self._exact_features(embedding.inputs), model_boxes[redo])[0]
        return logits_to_original(low_res[:, 0], frame)

    def _exact_features(self, inputs: np.ndarray) -> np.ndarray:
        """The fp32 embedding of a model input (the recorded encoder file compiled in fp32)."""
        if self._exact_runner is None:
            record = self.record
            self._exact_runner = OpenVinoRunner(Path(record.encoder_path), self._blobs, "fp32", record.threads)
        return np.ascontiguousarray(self._exact_runner(inputs)[0], np.float32)


def model_input(image: np.ndarray, input_size: int = 256) -> tuple[np.ndarray, Frame]:
    """H x W x 3 uint8 RGB -> ((1, 3, S, S) float32, frame), as LiteMedSAMGeometry makes it."""
    check_rgb_image(image)
    resized, frame = litemedsam_resize(image, input_size)
    return padded_chw(minmax01(resized), input_size), frame


#: (N, S, S) model-frame logits -> (N, H, W) at the original size (numpy)
logits_to_original = litemedsam_logits_to_original


@dataclass
class FastSegmenter2D(RgbReader):
    """Box-only prompts on 2D images with a :class:`FastPredictor`: the folder runner's and the
    single-image CLI's segmenter when the engines are recorded (same contract as
    :class:`~medsamkit.inference.segment2d.Segmenter2D` for boxes)."""

    predictor: FastPredictor
    modality: str | None = None
    window: str | None = None
    _last_scheme: str | None = field(default=None, init=False, repr=False)

    prefetch: ClassVar[bool] = True

    def segment_file(self, image_path: str | Path, boxes: Sequence[BoxPrompt], output: str | Path,
                     overlay: str | Path | None = None, *, rgb: np.ndarray | None = None,
                     embedding: FastEmbedding | None = None) -> np.ndarray:
        """Read, segment and write the mask (and the overlay) atomically; returns the label map."""
        prompts, source = list(boxes), str(image_path)
        if not prompts:
            raise InputError(source, "no box given for this image")
        if any(p.box is None or p.points for p in prompts):
            raise ValueError("the fast path takes boxes without clicks")
        if rgb is None:
            rgb = self.load_rgb(image_path, output, overlay)
        labels = output_labels(len(prompts), [p.label for p in prompts])
        checked = np.concatenate([validate_boxes(np.asarray(p.box), rgb.shape[:2], source) for p in prompts])
        if embedding is None:
            embedding = self.predictor.embed(rgb)
        logits = self.predictor.predict_boxes(embedding, checked)
        label_map = label_map_from_logits(list(logits), labels, rgb.shape[:2])
        write_outputs(output, label_map, overlay, rgb, [(p.box, lab) for p, lab in zip(prompts, labels)])
        return label_map


def fast_segmenter(request: EngineRequest, prompts: Sequence[BoxPrompt], modality: str | None = None,
                   window: str | None = None, mode: str = "latency",
                   cache: Path | None = None) -> FastSegmenter2D | None:
    """A torch-free segmenter when every prompt is a box without clicks and an earlier run recorded
    engines for ``request``; None otherwise (or when the engines fail to start: logged)."""
    if not prompts or any(p.box is None or p.points for p in prompts):
        return None
    record = find_record(request, cache)
    if record is None:
        return None
    try:
        predictor = FastPredictor(record, cache, mode, recheck=request.precision is None)  # as make_predictor
    except Exception as exc:  # noqa: BLE001 - e.g. an engine uninstalled since: the torch path still works
        log.warning("the recorded engines did not start (%s); loading the model instead", exc)
        return None
    return FastSegmenter2D(predictor, modality, window)
