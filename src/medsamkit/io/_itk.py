"""Small helpers around SimpleITK shared by the volume readers and writers (internal)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def itk_problem(exc: BaseException) -> str:
    """The useful part of a SimpleITK/ITK exception message, on one line."""
    text = str(exc)
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        head, sep, rest = text.partition("): ")  # drop "NiftiImageIO(0x55...): "
        text = rest if sep and "(0x" in head else text
    elif "Exception thrown in SimpleITK" in text:
        text = text.split(":", 2)[-1]
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def quiet_itk(sitk: Any) -> Iterator[None]:
    """Silence ITK's own warnings on stderr (e.g. 'No Series were found'); we log instead."""
    old = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(old)
