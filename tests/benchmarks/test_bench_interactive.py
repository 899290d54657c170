"""``benchmarks/interactive.py --overlap``: the rule reaches every ``Session3D`` the benchmark makes,
changes the label map where objects overlap, and is recorded in the JSON and the tables.

A synthetic two-label volume (no real data) and the flood-fill stub predictor of
tests/inference: label 1's box holds label 2, both bright, so the stub's label-1 object also
claims label 2's voxels; ``last`` gives them to label 2 (added later), ``logit`` (equal logits,
the first object wins the tie) to label 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_helpers import fake_volumes, import_benchmark

import medsamkit
from medsamkit.choices import DEFAULT_OVERLAP, OVERLAP_RULES
from medsamkit.evaluation.interactive import protocol_prompt
from medsamkit.inference.session3d import Session3D

bench, StubPredictor = import_benchmark("interactive")


def nested() -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) image and labels: a bright block (label 1) around a bright core (label 2)."""
    image = np.full((6, 40, 48), 30.0, np.float32)
    truth = np.zeros(image.shape, np.int16)
    truth[1:5, 8:32, 8:40] = 1
    truth[1:5, 16:24, 18:30] = 2
    image[truth > 0] = 200.0
    return image, truth


def test_the_rule_reaches_the_session_and_changes_the_label_map_where_objects_overlap():
    image, truth = nested()
    vol8 = np.where(image > 100, 255, 0).astype(np.uint8)
    prompts = [protocol_prompt(truth == lab, lab) for lab in (1, 2)]
    maps = {}
    for rule in OVERLAP_RULES:
        session = bench.make_session(vol8, StubPredictor(), None, rule)
        assert isinstance(session, Session3D) and session.overlap == rule
        session.add_objects(prompts)
        maps[rule] = session.label_map()
    core = truth == 2
    assert (maps["last"][core] == 2).all() and (maps["smallest"][core] == 2).all()
    assert (maps["logit"][core] == 1).all() and not (maps["logit"] == 2).any()
    # only voxels both objects claim change hands: the union of the objects is the same
    np.testing.assert_array_equal(maps["last"] > 0, maps["logit"] > 0)
    assert set(np.unique(maps["last"][maps["last"] != maps["logit"]])) == {2}
    # what medsamkit.Session(..., volume=True, modality="rgb") makes (the benchmark's sessions before
    # --overlap), with the rule set
    public = medsamkit.Session(vol8, StubPredictor(), volume=True, modality="rgb")
    public.add_objects(prompts)
    np.testing.assert_array_equal(public.label_map(), maps[DEFAULT_OVERLAP])
    session = bench.make_session(vol8, StubPredictor(), bench.MODES["clicks+carry"], DEFAULT_OVERLAP)
    assert session.config.carry_mask and not session.config.mask_prompt
    # and the protocol's DSC follows: label 2 is lost with logit here (its propagated boxes grow, so
    # with last it also takes some of label 1 on the slices around the key slice)
    dsc = {rule: bench.run_case(lambda config, r=rule: bench.make_session(vol8, StubPredictor(), config, r),
                                truth, (1.0, 1.0, 1.0), [1, 2], "box")["labels"]["2"]["final_dsc"]
           for rule in ("last", "logit")}
    assert dsc["logit"] == 0.0 and dsc["last"] > 0.5


def test_the_option_defaults_to_the_library_rule_and_rejects_others():
    assert bench.parser().parse_args([]).overlap == DEFAULT_OVERLAP == "last"
    assert bench.parser().parse_args(["--overlap", "logit"]).overlap == "logit"
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--overlap", "first"])


@pytest.fixture
def acdc_like(tmp_path, monkeypatch):
    """A one-case acdc-mr folder (nnU-Net layout, no dataset.json) and a stub in place of the model."""
    image, truth = nested()
    fake_volumes(monkeypatch, bench, tmp_path / "volumes", image, truth, stub=StubPredictor)
    return tmp_path


def test_runs_record_the_rule_per_model_and_entry_and_refuse_to_mix_rules(acdc_like, capsys):
    pytest.importorskip("nibabel")
    out = acdc_like / "res.json"
    base = ["--datasets", "acdc-mr", "--modes", "box", "--out", str(out)]
    assert bench.main(base + ["--model", "a=litemedsam", "--overlap", "logit"]) == 0
    assert bench.main(base + ["--model", "b=litemedsam"]) == 0
    results = json.loads(out.read_text())
    assert results["models"] == {"a": {"source": "litemedsam", "overlap": "logit", "grow": 3, "topology": False},
                                 "b": {"source": "litemedsam", "overlap": "last", "grow": 3, "topology": False}}
    a = results["runs"]["a"]["box"]["acdc-mr/patient999_frame01"]
    b = results["runs"]["b"]["box"]["acdc-mr/patient999_frame01"]
    assert (a["overlap"], b["overlap"]) == ("logit", "last")
    assert a["labels"]["2"]["final_dsc"] == 0.0 < 0.5 < b["labels"]["2"]["final_dsc"]
    capsys.readouterr()
    assert bench.main(["--table", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### a, acdc-mr, overlap logit, grow 3, keep topology False" in printed
    assert "### b, acdc-mr, overlap last, grow 3, keep topology False" in printed
    assert "| box | logit | 2 | 1 |" in printed and "| box | last | 2 | 1 |" in printed
    with pytest.raises(SystemExit, match="overlap last, not logit"):  # no resume under another rule
        bench.main(base + ["--model", "b=litemedsam", "--overlap", "logit"])


def test_grow_reaches_the_session_is_recorded_and_not_mixed(acdc_like, monkeypatch):
    """``--grow`` (default: the predictor's ``grow_px``) sets the sessions' propagation growth."""
    pytest.importorskip("nibabel")
    image, _ = nested()
    vol8 = image.astype(np.uint8)
    assert bench.make_session(vol8, StubPredictor(), None, DEFAULT_OVERLAP).refiner.propagation.grow_px is None
    assert bench.make_session(vol8, StubPredictor(), None, DEFAULT_OVERLAP, 1).refiner.propagation.grow_px == 1
    out = acdc_like / "grow.json"
    base = ["--datasets", "acdc-mr", "--modes", "box", "--out", str(out), "--model", "a=litemedsam"]
    assert bench.main(base + ["--grow", "1"]) == 0
    results = json.loads(out.read_text())
    assert results["models"]["a"]["grow"] == 1 == results["runs"]["a"]["box"]["acdc-mr/patient999_frame01"]["grow"]
    with pytest.raises(SystemExit, match="grow 1, not 3"):  # the predictor's default (3) is another growth
        bench.main(base)


def test_keep_topology_reaches_the_session_is_recorded_and_not_mixed(acdc_like):
    """``--keep-topology`` (default: the predictor's, off for litemedsam) sets the sessions'
    ``PropagationConfig.keep_topology``; a file holding the other setting is not resumed into."""
    pytest.importorskip("nibabel")
    image, _ = nested()
    vol8 = image.astype(np.uint8)
    assert bench.make_session(vol8, StubPredictor(), None, DEFAULT_OVERLAP).refiner.propagation.keep_topology is None
    session = bench.make_session(vol8, StubPredictor(), None, DEFAULT_OVERLAP, None, True)
    assert session.refiner.propagation.keep_topology is True
    out = acdc_like / "topology.json"
    base = ["--datasets", "acdc-mr", "--modes", "box", "--out", str(out), "--model", "a=litemedsam"]
    assert bench.main(base + ["--keep-topology"]) == 0
    results = json.loads(out.read_text())
    entry = results["runs"]["a"]["box"]["acdc-mr/patient999_frame01"]
    assert results["models"]["a"]["topology"] is True is entry["topology"]
    with pytest.raises(SystemExit, match="topology True, not False"):  # litemedsam's default is off
        bench.main(base)
