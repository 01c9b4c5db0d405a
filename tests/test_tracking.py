"""Refinement, the quality score and tracking: their control flow with an oracle model (the true landmarks of each
frame, mirrored in the mirror half of the batch), the One-Euro filter on hand-checked numbers, Predictor.track on
a procedural video, and (with ../shared) a real 300-W face filmed by a moving window."""
import numpy as np
import pytest

from glsr import geometry as geo
from glsr.metadata import ArtifactMetadata
from glsr.runtime.detectors import FaceDetector
from glsr.runtime.processing import uncrop
from glsr.runtime.refine import (LOST_QUALITY, NO_REFINE, RefineConfig, box_shift, clip_boxes, refine_faces,
                                 quality_from_disagreement)
from glsr.runtime.tracking import OneEuroConfig, OneEuroFilter, TrackConfig, Tracker
from glsr.schemes import get_scheme

S = 64
FLIP = list(get_scheme("68").flip)


def face_points(centre, size: float) -> np.ndarray:
    """A 68-point face-like layout (the 300-W mean shape is not needed: any points with a tight box do)."""
    rng = np.random.default_rng(1)
    unit = rng.uniform(-0.5, 0.5, (68, 2))
    unit[0], unit[16], unit[8], unit[19] = (-0.5, -0.1), (0.5, -0.1), (0.0, 0.5), (0.0, -0.5)
    return np.asarray(centre, float) + size * unit


class Oracle:
    """Stands in for a Predictor: its 'network' returns the true landmarks of the current frame in each crop that
    overlaps the face (IoU >= 0.3 with their tight box), their mirror image in the batch's mirror half, and
    scattered points elsewhere."""

    def __init__(self, detector=None, convention="tight"):
        self.metadata = ArtifactMetadata("small", "68", 68, S, 1.5, 1.0, box_convention=convention)
        self.num_points = 68
        self.host_warp = False
        self.detector = detector
        self.gt = None
        self.runs = []
        self._m = None
        self._rng = np.random.default_rng(0)

    def crop(self, image, boxes):
        b = np.asarray(boxes, float).reshape(-1, 4)
        self._m = np.stack([geo.crop_from_image(x, S, self.metadata.crop_enlarge) for x in b])
        self._boxes = b
        return np.zeros((len(b), 3, S, S), np.float32), self._m, b

    def run(self, x):
        f = len(self._m)
        self.runs.append(len(x))
        out = []
        for i in range(len(x)):
            m, box = self._m[i % f], self._boxes[i % f]
            on_face = self.gt is not None and _iou(geo.tight_box(self.gt), box) >= 0.3
            pts = geo.apply_affine(m, self.gt) if on_face else self._rng.uniform(0, S, (68, 2))
            if i >= f:
                pts = np.stack([S - 1 - pts[:, 0], pts[:, 1]], axis=1)[FLIP]
            out.append(pts)
        return np.stack(out)

    def uncrop(self, pts, m, boxes):
        return uncrop(pts, m)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


class LooseDetector(FaceDetector):
    """Finds the oracle's face as a box 1.3x its tight box, moved right by 10 %; counts its calls."""

    name = "loose"

    def __init__(self, oracle):
        super().__init__()
        self.oracle, self.calls = oracle, 0

    def _detect(self, image, path):
        self.calls += 1
        if self.oracle.gt is None:
            return np.zeros((0, 4))
        t = geo.tight_box(self.oracle.gt)
        b = geo.enlarge_box(t, 1.3)
        return (b + np.array([0.1, 0, 0.1, 0]) * (t[2] - t[0]))[None]


IMAGE = np.zeros((240, 320, 3), np.uint8)


# ------------------------------------------------------------------------------------------ refinement / quality


def test_refinement_recrops_from_the_landmarks_tight_box_and_scores_agreement():
    o = Oracle()
    o.gt = face_points((150, 120), 80)
    loose = LooseDetector(o).detect(IMAGE)
    one = refine_faces(o, IMAGE, loose, RefineConfig(passes=1))
    np.testing.assert_allclose(one.boxes[0], geo.tight_box(o.gt), atol=1e-6)  # the second crop: the tight box
    np.testing.assert_allclose(one.landmarks[0], o.gt, atol=1e-6)
    assert one.passes == 2 and o.runs == [1, 2]  # first pass alone, the last with its mirror in one call
    np.testing.assert_allclose(one.disagreement, [0.0], atol=1e-9)
    np.testing.assert_allclose(one.quality, [1.0])
    o.runs.clear()
    none = refine_faces(o, IMAGE, loose, NO_REFINE)
    assert none.passes == 1 and o.runs == [2] and np.allclose(none.boxes, loose)
    o.runs.clear()
    settle = refine_faces(o, IMAGE, loose, RefineConfig(passes=5, tolerance=0.01))
    assert settle.passes == 3  # detector box -> tight box -> the same box again (settled; scored)
    o.runs.clear()
    quiet = refine_faces(o, IMAGE, loose, RefineConfig(passes=5, tolerance=0.01, quality=False))
    assert quiet.passes == 2 and o.runs == [1, 1] and np.isnan(quiet.quality).all()


def test_mirror_average_returns_the_mean_of_both_views():
    """With ``mirror_average`` the landmarks are the mean of the face's and its mirror view's (flipped back); the
    disagreement (quality) is the same as without it."""

    class Biased(Oracle):  # the mirror view's points 2 crop px to the right in the mirrored crop
        def run(self, x):
            out = super().run(x)
            out[len(self._m):, :, 0] += 2.0
            return out

    o = Biased()
    o.gt = face_points((150, 120), 80)
    t = geo.tight_box(o.gt)[None]
    plain = refine_faces(o, IMAGE, t, NO_REFINE)
    mean = refine_faces(o, IMAGE, t, RefineConfig(passes=0, mirror_average=True))
    px = 2.0 / geo.crop_from_image(t[0], S, o.metadata.crop_enlarge)[0, 0]   # 2 crop px in image px
    np.testing.assert_allclose(plain.landmarks[0], o.gt, atol=1e-6)
    np.testing.assert_allclose(mean.landmarks[0] - plain.landmarks[0], np.tile([-px / 2, 0], (68, 1)), atol=1e-6)
    np.testing.assert_allclose(mean.disagreement, plain.disagreement)
    with pytest.raises(ValueError, match="mirror_average needs the mirror view"):
        RefineConfig(quality=False, mirror_average=True)


def test_procedural_convention_recrops_with_its_own_box():
    o = Oracle(convention="procedural")
    o.gt = face_points((150, 120), 80)
    res = refine_faces(o, IMAGE, LooseDetector(o).detect(IMAGE), RefineConfig(passes=1))
    t = geo.tight_box(o.gt)
    w, h = t[2] - t[0], t[3] - t[1]
    c = (t[:2] + t[2:]) / 2 + [0, 0.06 * h]
    np.testing.assert_allclose(res.boxes[0], [c[0] - 0.525 * w, c[1] - 0.525 * h, c[0] + 0.525 * w,
                                              c[1] + 0.525 * h], atol=1e-6)


def test_quality_falls_off_the_face():
    o = Oracle()
    o.gt = face_points((150, 120), 80)
    t = geo.tight_box(o.gt)
    away = t + np.array([150, 0, 150, 0])
    res = refine_faces(o, IMAGE, np.stack([t, away]), NO_REFINE)
    assert res.quality[0] == pytest.approx(1.0) and res.quality[1] < LOST_QUALITY
    assert quality_from_disagreement(0.05) == pytest.approx(np.exp(-1))


def test_refine_config_and_box_helpers():
    with pytest.raises(ValueError, match="passes"):
        RefineConfig(passes=-1)
    with pytest.raises(ValueError, match="tolerance"):
        RefineConfig(tolerance=float("nan"))
    a = np.array([[0.0, 0, 100, 50]])
    assert box_shift(a, a + [5, 0, 5, 0])[0] == pytest.approx(0.05)
    c = clip_boxes(np.array([[-300.0, 10, -200, 60], [10, 10, 10.5, 10.5]]), (320, 240))
    assert c[0, 0] < 0 < c[0, 2] and (c[1, 2] - c[1, 0]) >= 2  # kept overlapping the image, never empty


# ------------------------------------------------------------------------------------------ One-Euro


def test_one_euro_filter_on_hand_checked_numbers():
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.0, d_cutoff=1.0))
    assert f(np.array([0.0]), 0.0)[0] == 0.0  # the first value passes through
    # beta 0: a first-order low-pass, alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi fc): fc 1 Hz, dt 0.1 s
    assert f(np.array([1.0]), 0.1)[0] == pytest.approx(1 / (1 + 1 / (2 * np.pi) / 0.1))
    assert f(np.array([3.0]), 0.1)[0] == 3.0  # a time that does not move on restarts the filter
    still = OneEuroFilter()
    xs = [still(np.full((68, 2), 5.0), t / 25) for t in range(10)]
    np.testing.assert_allclose(xs[-1], 5.0)
    # a fast move is followed closely with a large beta, lagged without
    fast, slow = OneEuroFilter(OneEuroConfig(beta=50.0)), OneEuroFilter(OneEuroConfig(beta=0.0))
    for k in range(10):
        x = np.array([10.0 * k])
        yf, ys = fast(x, k / 25, scale=10.0), slow(x, k / 25, scale=10.0)
    assert abs(yf[0] - 90) < 0.3 * abs(ys[0] - 90)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroConfig(min_cutoff=0)


# ------------------------------------------------------------------------------------------ tracking


def test_tracker_runs_the_detector_only_when_needed():
    o = Oracle()
    det = LooseDetector(o)
    tracker = Tracker(o, TrackConfig(), detector=det)
    seen = []
    for k in range(24):
        o.gt = None if 10 <= k < 14 else face_points((100 + 4 * k, 120 - k), 70 + k)  # moves, grows, leaves
        r = tracker.update(IMAGE)
        seen.append(r)
        if o.gt is not None:
            assert len(r.ids) == 1
            np.testing.assert_allclose(r.landmarks[0], o.gt, atol=1e-6)
    detected = [k for k, r in enumerate(seen) if r.detected]
    assert detected == [0, 10, 11, 12, 13, 14]  # first frame, lost at 10, nothing until the face is back at 14
    assert det.calls == 6 and tracker.detections == 6
    assert all(len(r.ids) == 0 for r in seen[10:14])
    assert {int(r.ids[0]) for r in seen[:10]} == {0} and {int(r.ids[0]) for r in seen[14:]} == {1}
    assert seen[5].to_json()[0]["quality"] == 1.0 and seen[5].to_json()[0]["id"] == 0


def test_tracker_without_quality_follows_the_landmarks():
    """Host-warp artifacts have no mirror view: a face is kept while its landmarks stay in place."""
    o = Oracle()
    o.host_warp = True
    det = LooseDetector(o)
    tracker = Tracker(o, TrackConfig(), detector=det)
    flags = []
    for k in range(8):
        o.gt = None if k == 5 else face_points((120 + 3 * k, 120), 80)
        r = tracker.update(IMAGE)
        flags.append(r.detected)
        if o.gt is not None and k != 6:
            np.testing.assert_allclose(r.landmarks[0], o.gt, atol=1e-6)
            assert r.to_json()[0]["quality"] is None
    assert flags[:5] == [True, False, False, False, False] and flags[6] and det.calls <= 3


def test_tracker_detect_every_and_max_faces():
    o = Oracle()
    det = LooseDetector(o)
    tracker = Tracker(o, TrackConfig(detect_every=4, max_faces=1), detector=det)
    o.gt = face_points((150, 120), 80)
    flags = [tracker.update(IMAGE).detected for _ in range(9)]
    assert flags == [True, False, False, False, True, False, False, False, True]
    with pytest.raises(ValueError, match="detect_every"):
        TrackConfig(detect_every=-1)
    with pytest.raises(ValueError, match="quality"):
        TrackConfig(refine=RefineConfig(quality=False))
    with pytest.raises(ValueError, match="needs a face detector"):
        Tracker(Oracle())


def test_predictor_track_on_a_procedural_video(tmp_path):
    """Predictor.track on frames read back from a small video written here (a drawn face moving right)."""
    import cv2

    from glsr.models import save_checkpoint
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.tracking import video_frames
    from support import TINY, jittered

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for k in range(6):
        frame = np.full((120, 160, 3), 90, np.uint8)
        cv2.ellipse(frame, (50 + 8 * k, 60), (22, 30), 0, 0, 360, (150, 170, 210), -1)
        writer.write(frame)
    writer.release()
    save_checkpoint(jittered("small", sizes=TINY), tmp_path / "m.pt")

    class Fixed(FaceDetector):
        def _detect(self, image, path):
            return [[28.0, 30.0, 100.0, 92.0]]

    p = Predictor.from_file(tmp_path / "m.pt", detector=Fixed())
    frames = list(video_frames(str(path)))
    assert len(frames) == 6 and frames[0].shape == (120, 160, 3)
    out = list(p.track(frames, smoothing=OneEuroConfig()))
    assert [r.index for r in out] == list(range(6)) and out[0].detected
    assert all(r.landmarks.shape == (len(r.ids), 68, 2) and np.isfinite(r.landmarks).all() for r in out)
    with pytest.raises(ValueError, match="could not be opened"):
        list(video_frames(str(tmp_path / "missing.avi")))


def test_tracking_a_real_face_filmed_by_a_moving_window(tmp_path):
    """../shared: a 300-W val face through the study's moving window (MJPG): the shipped small-fast model tracks it
    with one detection and stays within 6 % NME on every frame."""
    from glsr.paths import SHARED

    if not (SHARED / "data" / "300w").is_dir():
        pytest.skip("300-W faces not found in ../shared (only on CI and dev machines)")
    from benchmarks.studies.tracking_video import make_video, pick_photo
    from glsr.runtime.predictor import Predictor
    from glsr.runtime.tracking import video_frames
    from glsr.train.metrics import nme_per_image

    _, image, gt = pick_photo(None)
    import benchmarks.studies.tracking_video as tv

    truth = make_video(tmp_path / "clip.avi", image, gt, tv.STILL + 12)[tv.STILL - 2:]
    frames = list(video_frames(str(tmp_path / "clip.avi")))[tv.STILL - 2:]
    p = Predictor.from_file("small-fast", threads=1)
    out = list(p.track(frames))
    assert sum(r.detected for r in out) == 1 and all(len(r.ids) == 1 for r in out)
    err = nme_per_image(np.stack([r.landmarks[0] for r in out]), np.stack(truth), "68", "interocular")
    assert np.max(err) < 0.06
