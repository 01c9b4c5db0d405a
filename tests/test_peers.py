"""Peer landmarkers (glsr.bench.peers): the MediaPipe 468 -> 68 table, box conventions, availability and skips.

Tests that run a peer import it with ``pytest.importorskip`` (CI runs without ``glsr[peers]``); the hand-checked
face needs ``../shared``.
"""
from __future__ import annotations

import numpy as np
import pytest

from glsr.bench import peers
from glsr.bench.peers import MEDIAPIPE_TO_68, PeerBox, mediapipe_to_68, parse_peers, peer_status
from glsr.paths import SHARED

HAND_CHECKED = SHARED / "data" / "300w" / "helen" / "trainset" / "103236168_2.jpg"
"""A frontal 300-W validation face (glasses, beard) whose MediaPipe -> 68 overlay was checked point by point by
eye: every row of the table lands beside the annotated landmark of the same number (the brow ends less closely,
see the test)."""


def test_table_shape():
    assert len(MEDIAPIPE_TO_68) == 68
    flat = [i for row in MEDIAPIPE_TO_68 for i in row]
    assert all(0 <= i < 468 for i in flat)
    assert all(1 <= len(row) <= 2 and len(set(row)) == len(row) for row in MEDIAPIPE_TO_68)
    singles = [row[0] for row in MEDIAPIPE_TO_68 if len(row) == 1]
    assert len(set(singles)) == len(singles)  # no two landmarks on one vertex
    # spot checks against the published table (Mediapipe_2_Dlib_Landmarks, rows numbered 1..68 there)
    published = {0: (127,), 3: (132, 58), 8: (152,), 17: (70,), 26: (300,), 27: (168, 6), 31: (75,), 35: (305,),
                 36: (33,), 45: (263,), 48: (61,), 54: (291,), 60: (78,), 67: (87,)}
    assert {i: MEDIAPIPE_TO_68[i] for i in published} == published


def test_mediapipe_to_68_averages_rows():
    pts = np.arange(478 * 3, dtype=np.float64).reshape(478, 3)
    out = mediapipe_to_68(pts)
    assert out.shape == (68, 3)
    np.testing.assert_allclose(out[0], pts[127])
    np.testing.assert_allclose(out[3], (pts[132] + pts[58]) / 2)
    assert mediapipe_to_68(np.stack([pts[:468, :2]] * 2)).shape == (2, 68, 2)
    with pytest.raises(ValueError, match="468"):
        mediapipe_to_68(np.zeros((68, 2)))


def test_peer_box():
    box = np.array([10.0, 20.0, 110.0, 220.0])
    np.testing.assert_allclose(PeerBox(1.0).apply(box), box)
    np.testing.assert_allclose(PeerBox(1.5).apply(box), [-15, -30, 135, 270])
    np.testing.assert_allclose(PeerBox(1.0, 0.1).apply(box), [10, 40, 110, 240])


def test_parse_peers():
    assert parse_peers("mediapipe,dlib") == ["mediapipe", "dlib"]
    assert parse_peers(["dlib", "dlib,mediapipe"]) == ["dlib", "mediapipe"]
    assert parse_peers("none") == [] and parse_peers(None) == []
    with pytest.raises(ValueError, match="unknown peer.*'openface'"):
        parse_peers("mediapipe,openface")


def test_missing_peer_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setattr(peers, "_module_dir", lambda name: None)
    for name in peers.PEERS:
        ok, reason = peer_status(name)
        assert not ok and "not installed" in reason and "[peers]" in reason
    with pytest.raises(ValueError, match="unavailable"):
        peers.open_peer("dlib")


def test_install_hints():
    # mediapipe's wheel goes in without its dependencies (its protobuf<5 pin breaks onnx); glsr never imports it
    assert "--no-deps mediapipe==0.10.14" in peers.PEERS["mediapipe"].install
    assert "mediapipe" not in peers.PEERS["dlib"].install
    from glsr.paths import CHECKOUT

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")

    pyproject = CHECKOUT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["peers"]
    assert not any(req.lower().startswith("mediapipe") for req in extra)
    assert any(req.startswith("ai-edge-litert") for req in extra) and "face-recognition-models==0.3.0" in extra


def test_wrong_mediapipe_version_is_skipped(monkeypatch, tmp_path):
    model = tmp_path / "face_landmark.tflite"
    model.write_bytes(b"x")
    monkeypatch.setattr(peers, "_module_dir", lambda name: tmp_path)
    monkeypatch.setattr(peers, "model_file", lambda name: model)
    monkeypatch.setattr(peers, "_dist_version", lambda dist: "0.10.21")
    ok, reason = peer_status("mediapipe")
    assert not ok and "0.10.21" in reason and "mediapipe==0.10.14" in reason
    monkeypatch.setattr(peers, "_dist_version", lambda dist: "0.10.14")
    assert peer_status("mediapipe") == (True, "available")


def test_run_faces_skips_missing_peers(monkeypatch, tmp_path):
    from glsr.bench import latency

    monkeypatch.setattr(peers, "_module_dir", lambda name: None)
    monkeypatch.setattr(latency, "peer_status", peers.peer_status)
    res = latency.run_faces(latency.FacesConfig(models=[], peers=["mediapipe", "dlib"], isolate=False,
                                                work=str(tmp_path), progress=lambda m: None))
    assert res["cases"] == [] and not res["errors"]
    assert [s["peer"] for s in res["skipped"]] == ["mediapipe", "dlib"]
    assert "skipped mediapipe" in latency.markdown(res)


def test_licences_are_stated():
    assert "research use only" in peers.PEERS["dlib"].model_licence
    assert "300-W" in peers.PEERS["dlib"].model_licence
    assert "Apache" in peers.PEERS["mediapipe"].model_licence


def _hand_checked_face():
    if not HAND_CHECKED.is_file():
        pytest.skip(f"300-W faces not found at {HAND_CHECKED.parent} (../shared is only on CI and dev machines)")
    import cv2

    from glsr import geometry as geo
    from glsr.train.datasets import read_pts

    gt = read_pts(HAND_CHECKED.with_suffix(".pts"))
    return cv2.imread(str(HAND_CHECKED)), gt, geo.tight_box(gt)


def test_mediapipe_table_on_a_hand_checked_face():
    pytest.importorskip("ai_edge_litert", reason=f"MediaPipe peer not installed ({peers.PEERS['mediapipe'].install})")
    ok, reason = peer_status("mediapipe")
    if not ok:
        pytest.skip(reason)
    image, gt, box = _hand_checked_face()
    pred = peers.open_peer("mediapipe").predict(image, box)[0]
    iod = np.linalg.norm(gt[36] - gt[45])
    err = np.linalg.norm(pred - gt, axis=1) / iod
    assert err[17:].mean() < 0.04 and err[17:].max() < 0.15, f"non-jaw point {17 + int(err[17:].argmax())} " \
        f"off by {err[17:].max():.3f}"
    assert err[:17].max() < 0.25
    # brows (but their outer ends), nose and eyes: each mapped point is nearer its own annotated landmark than any
    # other. The brow ends 17 / 26 are not: the mesh's brow corners (vertices 70 / 300) sit on the upper edge of the
    # brow, above this face's annotated ends (behind the spectacle frame), 13 % / 12 % of the eye distance away.
    nearest = np.linalg.norm(pred[:, None] - gt[None], axis=2).argmin(axis=1)
    assert [i for i in range(17, 48) if nearest[i] != i] == [17, 26]
    assert pred[36, 0] < pred[39, 0] < pred[42, 0] < pred[45, 0] and pred[48, 0] < pred[54, 0]  # image left -> right


def test_dlib_on_a_hand_checked_face():
    pytest.importorskip("dlib", reason=f"dlib peer not installed ({peers.PEERS['dlib'].install})")
    ok, reason = peer_status("dlib")
    if not ok:
        pytest.skip(reason)
    image, gt, box = _hand_checked_face()
    lm = peers.open_peer("dlib")
    pred = lm.predict(image, box)[0]
    assert pred.shape == (68, 2)
    err = np.linalg.norm(pred - gt, axis=1) / np.linalg.norm(gt[36] - gt[45])
    assert err.mean() < 0.08
    out, stages = lm.predict_timed(image, box)
    np.testing.assert_array_equal(out[0], pred)
    assert len(stages) == 3 and all(s >= 0 for s in stages)
