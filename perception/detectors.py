"""Local, offline detectors for camera and screen-share frames (CPU only, nothing downloaded).

One :class:`LocalDetectors` turns an ``HxWx3`` ``uint8`` RGB frame into :class:`VisualFacts`.
Every model is loaded lazily, the first time a frame needs it, and :meth:`LocalDetectors.loaded`
says which ones have been. One instance is used from one worker thread at a time (the caller
serialises); the frame is only read, never kept.

What each detector can tell, and what it cannot:

- ``faces``: OpenCV Haar cascade ``haarcascade_frontalface_default`` on the grey frame, faces at
  least 1/8 of the short side. Tells how many roughly frontal, reasonably lit faces are in view.
  Misses profiles, faces turned away, tiny or heavily shadowed faces; never tells who anybody is.
- ``looking``: Haar ``haarcascade_eye`` in the upper part of the largest face. Tells that eyes
  are visible (face turned to the camera, eyes open), not where the person looks (no gaze
  tracking); glasses, glare and closed eyes read as ``False``.
- ``smiling``: Haar ``haarcascade_smile`` (strict) in the lower half of the largest face. Finds a
  broad smile; slight or closed-mouth smiles are often missed, and it can fire on a neutral mouth.
- ``emotion``: the 7-class facial-expression CNN bundled in the ``facex`` wheel
  (``facex/assets/model_optimized.tflite``), run with ``ai_edge_litert`` on the largest face: the
  most likely *expression* (:data:`EMOTIONS`) and its softmax score. It is not how the person
  feels, and it is noisy (a mild expression can come out ``sad``): a hint, never a fact.
- ``brightness``: mean luma 0..255 (a dark or over-exposed picture).
- ``text``: ``rapidocr-onnxruntime`` (PP-OCRv4 ONNX, weights in the wheel), lines scored >= 0.5.
  Reads printed screen text (spaces between words are sometimes dropped); not handwriting, tiny
  text, or the layout and meaning of what is shown.

The emotion model is facex's: its own preprocessing (``facex/core.py``, ``facex/utils.py``) crops
the Haar face box from the *grey* frame, resizes it to 200x200 with three identical channels and
scales it to 0..1 float32; the output is a softmax over
``anger, disgust, fear, happy, neutral, sadness, surprised`` (reported here as the labels in
:data:`EMOTIONS`). facex's Python code imports TensorFlow, so it is never imported: only its
``.tflite`` file is read, found with :func:`importlib.util.find_spec` (which runs no code). When
facex or ``ai_edge_litert`` is missing, ``emotion`` is ``None`` and one warning is logged.

Frames larger than :data:`CAMERA_MAX_SIDE` (faces) or :data:`SCREEN_MAX_SIDE` (OCR) on their long
side are downscaled first. A frame that is not an ``HxWx3`` ``uint8`` array raises ``ValueError``.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger

#: The emotion labels, in the model's output order.
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
#: Faces are looked for in a frame downscaled to this long side (pixels).
CAMERA_MAX_SIDE = 640
#: Screen frames are OCRed at most this large on the long side (small text needs the pixels).
SCREEN_MAX_SIDE = 1280
#: The smallest face, as a fraction of the (downscaled) frame's short side.
MIN_FACE_FRACTION = 1 / 8
#: OCR lines scoring below this are dropped (as in knowledge/parsers.py).
OCR_MIN_SCORE = 0.5
#: The smallest frame accepted (pixels per side).
MIN_SIDE = 16
_EMOTION_INPUT = 200
_FACE = _EMOTION_INPUT  # the face crop every per-face detector sees (pixels per side)


@dataclass(frozen=True)
class VisualFacts:
    """What the local detectors saw in one frame."""

    source: str                # "camera" or "screenVideo"
    faces: int                 # faces found (Haar frontal face, min size ~1/8 of the short side)
    looking: bool | None       # eyes found in the largest face (None when no face)
    smiling: bool | None       # smile cascade in the lower half of the largest face (None: no face)
    emotion: str | None        # 7-class label of the largest face (EMOTIONS), None: no face/model
    emotion_score: float | None
    brightness: float          # mean luma 0..255
    text: str                  # OCR lines (score>=0.5) joined by "\n"; "" when OCR not run
    seconds: float             # processing time of this frame
    face_box: tuple[int, int, int, int] | None = None  # largest face (x, y, w, h), input px


def emotion_model_path() -> Path | None:
    """The facex wheel's ``model_optimized.tflite``, found without importing facex (TensorFlow)."""
    try:
        spec = importlib.util.find_spec("facex")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "assets" / "model_optimized.tflite"
        if path.is_file():
            return path
    return None


def _check_frame(rgb: object) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"a frame must be a numpy array, not {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a frame must be HxWx3 RGB, not shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8, not {rgb.dtype}")
    if rgb.shape[0] < MIN_SIDE or rgb.shape[1] < MIN_SIDE:
        raise ValueError(f"a frame must be at least {MIN_SIDE}x{MIN_SIDE}, "
                         f"not {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def _downscale(cv2, image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image with its long side at most ``max_side``, and the factor applied (<= 1)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


def _full_box(box, scale: float, shape) -> tuple[int, int, int, int]:
    """A box found in the downscaled frame, in the input frame's pixels (clipped to it)."""
    height, width = shape[:2]
    x, y, w, h = (int(round(v / scale)) for v in box)
    x, y = min(max(0, x), width - 1), min(max(0, y), height - 1)
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))


class LocalDetectors:
    """Haar faces/eyes/smile, the facex emotion model and RapidOCR, each loaded on first use."""

    def __init__(self, *, emotions: bool = True, ocr: bool = True):
        self._want_emotions = emotions
        self._want_ocr = ocr
        self._loaded: list[str] = []
        self._cascades = None          # (face, eye, smile)
        self._interpreter = None
        self._emotion_failed = False   # tried and failed: do not retry (one warning)
        self._ocr = None

    def loaded(self) -> list[str]:
        """Which detectors have been loaded so far, in order: ``faces``, ``emotions``, ``ocr``."""
        return list(self._loaded)

    # -- loading -----------------------------------------------------------------------------

    def _faces(self):
        if self._cascades is None:
            import cv2

            # One thread: the CPU budget is measured on the worker thread (thread_time), and
            # OpenCV's own pool would run beside it unaccounted, on cores the audio path needs.
            cv2.setNumThreads(1)

            folder = Path(cv2.data.haarcascades)
            cascades = []
            for name in ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml",
                         "haarcascade_smile.xml"):
                cascade = cv2.CascadeClassifier(str(folder / name))
                if cascade.empty():
                    raise RuntimeError(f"OpenCV cannot load its Haar cascade {name}")
                cascades.append(cascade)
            self._cascades = tuple(cascades)
            self._loaded.append("faces")
        return self._cascades

    def _emotions(self):
        if self._interpreter is None and not self._emotion_failed and self._want_emotions:
            path = emotion_model_path()
            try:
                if path is None:
                    raise FileNotFoundError("facex (the emotion model) is not installed")
                from ai_edge_litert.interpreter import Interpreter

                interpreter = Interpreter(model_path=str(path), num_threads=1)
                interpreter.allocate_tensors()
                (inp,) = interpreter.get_input_details()
                (out,) = interpreter.get_output_details()
                if tuple(inp["shape"]) != (1, _EMOTION_INPUT, _EMOTION_INPUT, 3) or \
                        tuple(out["shape"]) != (1, len(EMOTIONS)):
                    raise ValueError(f"unexpected emotion model shapes {tuple(inp['shape'])} -> "
                                     f"{tuple(out['shape'])}")
            except Exception as error:  # ImportError, a missing or unreadable model
                self._emotion_failed = True
                logger.warning("Perception: facial emotion is off ({}: {})",
                               type(error).__name__, error)
                return None
            self._interpreter = (interpreter, inp["index"], out["index"])
            self._loaded.append("emotions")
        return self._interpreter

    def _reader(self):
        if self._ocr is None:
            self._ocr = _single_threaded_ocr()
            self._loaded.append("ocr")
        return self._ocr

    # -- detectors ---------------------------------------------------------------------------

    def _detect_faces(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        face_cascade, _eye, _smile = self._faces()
        side = max(24, int(min(gray.shape) * MIN_FACE_FRACTION))
        found = face_cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(side, side))
        return [tuple(int(v) for v in box) for box in (found if len(found) else [])]

    def _looking(self, face: np.ndarray) -> bool:
        """Eyes in the upper part of the face crop (``_FACE`` x ``_FACE`` grey)."""
        _face, eye_cascade, _smile = self._faces()
        upper = face[: int(_FACE * 0.6)]
        eyes = eye_cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5,
                                            minSize=(_FACE // 14, _FACE // 14),
                                            maxSize=(_FACE // 2, _FACE // 2))
        return len(eyes) > 0

    def _smiling(self, face: np.ndarray) -> bool:
        """A (broad) smile in the lower half of the face crop; strict, to keep false smiles rare."""
        _face, _eye, smile_cascade = self._faces()
        lower = face[_FACE // 2:]
        smiles = smile_cascade.detectMultiScale(lower, scaleFactor=1.5, minNeighbors=20,
                                                minSize=(_FACE // 4, _FACE // 10))
        return len(smiles) > 0

    def _emotion(self, face: np.ndarray) -> tuple[str | None, float | None]:
        """facex's preprocessing: the grey face box at 200x200, three equal channels, 0..1."""
        model = self._emotions()
        if model is None:
            return None, None
        interpreter, input_index, output_index = model
        tensor = np.repeat(face[None, :, :, None], 3, axis=3).astype(np.float32) / 255.0
        interpreter.set_tensor(input_index, tensor)
        interpreter.invoke()
        probs = np.asarray(interpreter.get_tensor(output_index)[0], dtype=np.float64)
        best = int(np.argmax(probs))
        return EMOTIONS[best], round(float(probs[best]), 4)

    def _scan(self, cv2, rgb: np.ndarray):
        """The faces of a frame (downscaled), the largest in the frame's pixels, mean luma."""
        small, scale = _downscale(cv2, rgb, CAMERA_MAX_SIDE)
        gray = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
        brightness = round(float(gray.mean()), 2)
        boxes = self._detect_faces(cv2.equalizeHist(gray))
        face_box = (_full_box(max(boxes, key=lambda b: b[2] * b[3]), scale, rgb.shape)
                    if boxes else None)
        return boxes, face_box, brightness

    def camera(self, rgb: np.ndarray) -> VisualFacts:
        """Faces, eyes, smile and emotion of the largest face in a camera frame (no OCR)."""
        start = time.perf_counter()
        rgb = _check_frame(rgb)
        import cv2

        boxes, face_box, brightness = self._scan(cv2, rgb)
        looking = smiling = emotion = score = None
        if face_box is not None:
            x, y, w, h = face_box
            # The face from the full-resolution frame at a fixed size: eye/smile boxes and the
            # emotion model then see the same pixels whatever the frame's resolution.
            face = cv2.resize(cv2.cvtColor(np.ascontiguousarray(rgb[y:y + h, x:x + w]),
                                           cv2.COLOR_RGB2GRAY), (_FACE, _FACE),
                              interpolation=cv2.INTER_AREA if w > _FACE else cv2.INTER_LINEAR)
            looking = self._looking(face)
            smiling = self._smiling(face)
            emotion, score = self._emotion(face)
        return VisualFacts("camera", len(boxes), looking, smiling, emotion, score, brightness,
                           "", round(time.perf_counter() - start, 4), face_box)

    def screen(self, rgb: np.ndarray) -> VisualFacts:
        """The text on a screen-share frame (OCR) and how many faces are in it."""
        start = time.perf_counter()
        rgb = _check_frame(rgb)
        import cv2

        boxes, face_box, brightness = self._scan(cv2, rgb)
        text = ""
        if self._want_ocr:
            page, _ = _downscale(cv2, rgb, SCREEN_MAX_SIDE)
            result, _elapsed = self._reader()(np.ascontiguousarray(page[:, :, ::-1]))  # BGR
            text = "\n".join(str(line) for _box, line, line_score in (result or [])
                             if float(line_score) >= OCR_MIN_SCORE)
        return VisualFacts("screenVideo", len(boxes), None, None, None, None, brightness, text,
                           round(time.perf_counter() - start, 4), face_box)


def _single_threaded_ocr():
    """RapidOCR with one onnxruntime thread per model (its default is every core): the work
    stays on the calling worker thread, where the CPU budget measures it."""
    import os
    import tempfile

    from rapidocr_onnxruntime import RapidOCR
    from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH

    text = Path(DEFAULT_CFG_PATH).read_text()
    text = text.replace("&intra_nums -1", "&intra_nums 1").replace("&inter_nums -1", "&inter_nums 1")
    handle, path = tempfile.mkstemp(suffix=".yaml", prefix="rapidocr-")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        return RapidOCR(config_path=path)
    finally:
        os.unlink(path)
