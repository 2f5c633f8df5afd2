"""perception/detectors.py on real pixels: matplotlib's Grace Hopper photo and a drawn screen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from perception import detectors
from perception.detectors import EMOTIONS, LocalDetectors, VisualFacts


def _photo() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def _font(size: int):
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
                 "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _screen() -> np.ndarray:
    image = Image.new("RGB", (1280, 720), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 60), fill=(40, 60, 120))
    draw.text((80, 200), "INVOICE 2041", fill=(10, 10, 10), font=_font(64))
    draw.text((80, 360), "TOTAL 318", fill=(10, 10, 10), font=_font(64))
    return np.asarray(image)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return _photo()


@pytest.fixture(scope="module")
def shared() -> LocalDetectors:
    """One instance for the read-only checks (the models load once)."""
    return LocalDetectors()


def test_a_fresh_instance_loads_nothing():
    assert LocalDetectors().loaded() == []


def test_the_photo_has_one_face_looking_with_an_emotion(shared, photo):
    facts = shared.camera(photo)
    assert isinstance(facts, VisualFacts)
    assert facts.source == "camera"
    assert facts.faces == 1
    assert facts.looking is True
    assert isinstance(facts.smiling, bool)
    assert facts.emotion in EMOTIONS
    assert 0.0 < facts.emotion_score <= 1.0
    assert facts.text == ""
    assert 0 < facts.brightness < 255
    assert facts.seconds >= 0
    x, y, w, h = facts.face_box
    assert 0 <= x < x + w <= photo.shape[1] and 0 <= y < y + h <= photo.shape[0]
    assert w >= min(photo.shape[:2]) / 8


def test_a_large_frame_is_downscaled_and_the_box_is_in_its_pixels(shared, photo):
    big = np.asarray(Image.fromarray(photo).resize((photo.shape[1] * 2, photo.shape[0] * 2)))
    small, large = shared.camera(photo), shared.camera(big)
    assert large.faces == 1 and large.emotion in EMOTIONS
    # the same face, at twice the coordinates (within a few pixels of Haar's scale steps)
    assert all(abs(b - 2 * a) <= 0.15 * 2 * small.face_box[2]
               for a, b in zip(small.face_box, large.face_box))


def test_two_photos_side_by_side_are_two_faces(shared, photo):
    facts = shared.camera(np.concatenate([photo, photo], axis=1))
    assert facts.faces == 2
    assert facts.emotion in EMOTIONS


def test_a_blank_frame_has_no_face_and_loads_only_the_face_detector():
    local = LocalDetectors()
    facts = local.camera(np.zeros((480, 640, 3), np.uint8))
    assert facts.faces == 0
    assert facts.looking is None and facts.smiling is None
    assert facts.emotion is None and facts.emotion_score is None
    assert facts.face_box is None
    assert facts.brightness == 0
    assert local.loaded() == ["faces"]  # no face: the emotion model is not needed yet


def test_a_face_loads_the_emotion_model_but_never_ocr(photo):
    local = LocalDetectors()
    local.camera(photo)
    assert local.loaded() == ["faces", "emotions"]


def test_the_screen_is_read(shared):
    facts = shared.screen(_screen())
    assert facts.source == "screenVideo"
    text = facts.text.upper()
    for word in ("INVOICE", "2041", "TOTAL", "318"):  # RapidOCR may drop a space ("TOTAL318")
        assert word in text, facts.text
    assert facts.faces == 0
    assert facts.emotion is None and facts.looking is None
    assert "ocr" in shared.loaded()


def test_screen_only_loads_faces_and_ocr():
    local = LocalDetectors()
    local.screen(_screen())
    assert local.loaded() == ["faces", "ocr"]


def test_ocr_off_reads_no_text():
    local = LocalDetectors(ocr=False)
    facts = local.screen(_screen())
    assert facts.text == ""
    assert local.loaded() == ["faces"]


def test_emotions_off(photo):
    local = LocalDetectors(emotions=False)
    facts = local.camera(photo)
    assert facts.faces == 1 and facts.emotion is None and facts.emotion_score is None
    assert local.loaded() == ["faces"]


def test_a_missing_emotion_model_degrades_with_one_warning(photo, monkeypatch):
    from loguru import logger

    monkeypatch.setattr(detectors, "emotion_model_path", lambda: None)
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        local = LocalDetectors()
        first, second = local.camera(photo), local.camera(photo)
    finally:
        logger.remove(sink)
    assert first.faces == second.faces == 1
    assert first.emotion is None and second.emotion is None and first.emotion_score is None
    assert first.looking is True
    assert local.loaded() == ["faces"]
    assert len([m for m in messages if "emotion" in m]) == 1


def test_the_emotion_model_is_found_without_importing_facex():
    import sys

    path = detectors.emotion_model_path()
    assert path is not None and path.name == "model_optimized.tflite" and path.is_file()
    assert "facex" not in sys.modules and "tensorflow" not in sys.modules


@pytest.mark.parametrize("frame", [
    np.zeros((480, 640), np.uint8),            # grey, no channels
    np.zeros((480, 640, 4), np.uint8),         # RGBA
    np.zeros((480, 640, 3), np.float32),       # not uint8
    np.zeros((8, 8, 3), np.uint8),             # too small
    [[[0, 0, 0]]],                             # not an array
], ids=["grey", "rgba", "float", "tiny", "list"])
def test_a_wrong_frame_is_a_value_error(shared, frame):
    with pytest.raises(ValueError):
        shared.camera(frame)
    with pytest.raises(ValueError):
        shared.screen(frame)
