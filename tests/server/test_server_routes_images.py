"""Opening images over HTTP: every format segment reads, the --data folder, and clear 4xx errors."""

from __future__ import annotations

import io
import os
import zipfile

import cv2
import numpy as np
import pytest
import tifffile
from conftest import ball_volume, disc_image, png_bytes

from medsamkit.io import write_volume
from medsamkit.io.geometry import Geometry


def upload(client, name, data):
    return client.post("/api/images", files={"file": (name, data, "application/octet-stream")})


def test_a_16bit_tiff_gets_the_clis_scheme_and_its_values_for_display(make_client):
    client = make_client()
    grey = (disc_image()[:, :, 0].astype(np.uint16) * 40)
    buf = io.BytesIO()
    tifffile.imwrite(buf, grey)
    info = upload(client, "scan.tif", buf.getvalue()).json()
    assert info["kind"] == "grey16" and info["channels"] == 1 and info["scheme"].startswith("percentile clip")
    r = client.get(f"/api/images/{info['id']}/pixels")
    assert r.headers["x-dtype"] == "float32" and r.headers["x-shape"] == "96,128,1"
    assert np.array_equal(np.frombuffer(r.content, "<f4").reshape(96, 128), grey)
    lo, hi = info["display_window"]
    assert 0 < lo < hi <= grey.max()


def test_a_volume_and_its_planes(make_client, tmp_path):
    client = make_client()
    vol = ball_volume()
    path = tmp_path / "ball.mha"
    write_volume(path, vol, Geometry(spacing=(3.0, 0.7, 0.6), origin=(1, 2, 3)))
    info = upload(client, "ball.mha", path.read_bytes()).json()
    assert info["volume"] and info["shape"] == [5, 64, 72] and info["output"] == "ball_labels.mha"
    assert info["spacing"] == pytest.approx([3.0, 0.7, 0.6])
    sid = info["id"]
    for axis, index, plane in ((0, 2, vol[2]), (1, 32, vol[:, 32]), (2, 10, vol[:, :, 10])):
        r = client.get(f"/api/images/{sid}/pixels", params={"axis": axis, "index": index})
        h, w, _ = map(int, r.headers["x-shape"].split(","))
        assert np.array_equal(np.frombuffer(r.content, "<f4").reshape(h, w), plane)
    r = client.get(f"/api/images/{sid}/pixels", params={"axis": 0, "index": 5})
    assert r.status_code == 400 and "axial index 5 is outside 0..4" in r.json()["detail"]


def _dicom_series(folder, n=3, size=32):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series, study
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.5 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.InstanceNumber = [0.9, 0.9], k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        pixels = (np.arange(size * size).reshape(size, size) % 2000 + k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        pydicom.dcmwrite(folder / f"IM{k:04d}", ds, enforce_file_format=True)


def test_a_dicom_series_as_a_zip_is_a_ct_volume(make_client, tmp_path):
    pytest.importorskip("pydicom")
    client = make_client()
    _dicom_series(tmp_path / "series")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted((tmp_path / "series").iterdir()):
            zf.write(f, f"study/series/{f.name}")
    info = upload(client, "study.zip", buf.getvalue()).json()
    assert info["volume"] and info["shape"] == [3, 32, 32] and info["ct"] and info["modality"] == "ct"
    assert info["display_window"] == [-160.0, 240.0] and info["output"] == "study_labels.nii.gz"
    assert info["spacing"] == pytest.approx([2.5, 0.9, 0.9])


@pytest.mark.parametrize("name, data, status, problem", [
    ("notes.txt", b"hello", 400, "notes.txt: unsupported file type '.txt'"),
    ("photo.png", b"\x89PNG\r\n\x1a\nbroken", 400, "photo.png: cannot decode the image"),
    ("scan.nii.gz", b"not a nifti at all", 400, "scan.nii.gz: cannot read the volume"),
    ("series.zip", b"PK\x03\x04 truncated", 400, "series.zip: is not a readable zip"),
    ("empty.png", b"", 400, "empty.png: the uploaded file is empty"),
])
def test_bad_uploads_get_4xx_naming_the_file_and_the_server_keeps_serving(make_client, name, data, status, problem):
    client = make_client()
    r = upload(client, name, data)
    assert r.status_code == status and r.json()["detail"].startswith(problem), r.json()
    assert "/tmp" not in r.json()["detail"] and "medsamkit-upload" not in r.json()["detail"]
    assert upload(client, "ok.png", png_bytes(disc_image())).status_code == 201


def test_an_upload_over_the_limit_gets_413(make_client):
    client = make_client(max_upload_mb=0.01)
    r = upload(client, "big.png", b"\0" * 20_000)
    assert r.status_code == 413 and "limit of 0.01 MB" in r.json()["detail"]
    assert client.get("/api/config").status_code == 200


@pytest.fixture()
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "cases").mkdir(parents=True)
    cv2.imwrite(str(root / "cases" / "disc.png"), disc_image()[:, :, ::-1])
    (root / ".hidden.png").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(png_bytes(disc_image()))
    os.symlink(tmp_path / "outside.png", root / "link.png")
    return root


def test_the_data_folder_lists_and_opens_files_inside_it_only(make_client, data_dir):
    client = make_client(data_dir=data_dir)
    assert client.get("/api/config").json()["data"] is True
    top = client.get("/api/files").json()
    assert [(e["name"], e["folder"]) for e in top["entries"]] == [("cases", True)]  # no hidden files, no links out
    inner = client.get("/api/files", params={"path": "cases"}).json()
    assert [e["path"] for e in inner["entries"]] == ["cases/disc.png"]
    r = client.post("/api/images/open", json={"path": "cases/disc.png"})
    assert r.status_code == 201 and r.json()["name"] == "cases/disc.png"
    for path, problem in (("link.png", "leads outside the data folder"), ("../outside.png", "'..' is refused"),
                          (str(data_dir / "cases" / "disc.png"), "absolute paths are refused")):
        for call in (lambda: client.post("/api/images/open", json={"path": path}),
                     lambda: client.get("/api/files", params={"path": path})):
            r = call()
            assert r.status_code == 400 and problem in r.json()["detail"]


def test_without_a_data_folder_nothing_can_be_opened_by_path(make_client):
    client = make_client()
    r = client.post("/api/images/open", json={"path": "x.png"})
    assert r.status_code == 400 and "no data folder" in r.json()["detail"]
