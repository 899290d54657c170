"""Tests for medsamkit.io.geometry: validation, ITK order, index -> physical, comparisons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from medsamkit.io.geometry import Geometry


def oblique_direction(deg_x: float = 20.0, deg_y: float = 20.0) -> tuple[float, ...]:
    """A rotation about x then y (orthonormal), as 9 row-major numbers."""
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_y)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return tuple((rx @ ry).ravel())


GEOM = Geometry(spacing=(3.0, 0.8, 0.7), origin=(-12.3, 45.6, 78.9),
                direction=oblique_direction())


def test_values_are_floats_and_itk_order() -> None:
    g = Geometry(spacing=np.array([3, 2, 1]), origin=[1, 2, 3])
    assert g.spacing == (3.0, 2.0, 1.0) and all(type(v) is float for v in g.spacing)
    assert g.itk_spacing == (1.0, 2.0, 3.0)
    assert g.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert g.axis_order == "zyx"
    np.testing.assert_array_equal(g.direction_matrix, np.eye(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.spacing = (1.0, 1.0, 1.0)  # type: ignore[misc]


def test_from_itk_reverses_spacing_only() -> None:
    g = Geometry.from_itk((0.7, 0.8, 3.0), (1.0, 2.0, 3.0), oblique_direction())
    assert g.spacing == (3.0, 0.8, 0.7)
    assert g.origin == (1.0, 2.0, 3.0)
    assert g.same_as(dataclasses.replace(GEOM, origin=(1.0, 2.0, 3.0)))


@pytest.mark.parametrize("kwargs", [
    {"spacing": (1.0, 1.0)},
    {"spacing": (1.0, 0.0, 1.0)},
    {"spacing": (1.0, -2.0, 1.0)},
    {"spacing": (1.0, float("nan"), 1.0)},
    {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, float("inf"), 0.0)},
    {"spacing": (1.0, 1.0, 1.0), "direction": (1.0, 0.0, 0.0)},
    {"spacing": (1.0, 1.0, 1.0), "direction": (0.0,) * 9},
    {"spacing": (1.0, 1.0, 1.0), "axis_order": "xyz"},
    {"spacing": ("a", 1.0, 1.0)},
])
def test_invalid_values_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Geometry(**kwargs)


def test_identity() -> None:
    g = Geometry.identity((4, 5, 6))
    assert g == Geometry.identity() == Geometry.identity((5, 6))
    assert g.spacing == (1.0, 1.0, 1.0) and g.origin == (0.0, 0.0, 0.0)
    assert g.is_identity_affine()
    with pytest.raises(ValueError, match="shape"):
        Geometry.identity((2, 3, 4, 5))


def test_is_identity_affine() -> None:
    assert not GEOM.is_identity_affine()
    # A NIfTI identity affine (RAS) reads as diag(-1, -1, 1) in ITK's LPS: still "no metadata".
    lps = Geometry((1.0, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert lps.is_identity_affine()
    assert not Geometry((1.0, 1.0, 1.5)).is_identity_affine()
    assert not Geometry((1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0)).is_identity_affine()
    assert not Geometry((1.0, 1.0, 1.0), direction=oblique_direction()).is_identity_affine()


def test_index_to_physical_matches_simpleitk() -> None:
    image = sitk.Image(5, 4, 3, sitk.sitkUInt8)  # size x, y, z
    image.SetSpacing(GEOM.itk_spacing)
    image.SetOrigin(GEOM.origin)
    image.SetDirection(GEOM.direction)
    zyx = np.array([[0, 0, 0], [2, 3, 4], [1.5, 0.25, 2.0]])
    got = GEOM.index_to_physical(zyx)
    assert got.shape == (3, 3)
    for index, point in zip(zyx, got):
        want = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in index[::-1]))
        np.testing.assert_allclose(point, want, atol=1e-12)
    np.testing.assert_allclose(GEOM.index_to_physical((0, 0, 0)), GEOM.origin)
    # One step along the array's first axis (z) moves by spacing z along direction column 2.
    step = GEOM.index_to_physical((1, 0, 0)) - GEOM.index_to_physical((0, 0, 0))
    np.testing.assert_allclose(step, 3.0 * GEOM.direction_matrix[:, 2], atol=1e-12)
    with pytest.raises(ValueError):
        GEOM.index_to_physical((1, 2))


def test_same_as_tolerance() -> None:
    assert GEOM.same_as(GEOM)
    # float32 rounding, as a NIfTI round trip produces, is "the same".
    as_f32 = Geometry(tuple(np.float32(GEOM.spacing)), tuple(np.float32(GEOM.origin)),
                      GEOM.direction)
    assert GEOM.same_as(as_f32) and as_f32.same_as(GEOM)
    assert not GEOM.same_as(dataclasses.replace(GEOM, spacing=(3.0, 0.8, 0.71)))
    assert not GEOM.same_as(dataclasses.replace(GEOM, origin=(-12.3, 45.6, 79.0)))
    assert not GEOM.same_as(dataclasses.replace(GEOM, direction=oblique_direction(20.0, 21.0)))
    assert GEOM.same_as(dataclasses.replace(GEOM, origin=(-12.3, 45.6, 79.0)), tol=1e-2)
