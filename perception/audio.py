"""Voice facts for one user turn: loudness, pitch, pace, wording and a tone label (CPU, offline).

:func:`analyse_turn` turns one turn's 16-bit mono PCM and its transcript into :class:`VoiceFacts`;
:func:`describe` says them in one short sentence; :func:`answer` answers an
``audio_awareness_queries`` item ("Is the user frustrated?") from the recent turns, citing the
evidence. No Pipecat here: the caller runs :func:`analyse_turn` in a worker thread.

**These are heuristics, not an emotion model.** Nothing here was trained on emotional speech; the
tone is a rule over four coarse measurements, with no baseline for the speaker (a naturally loud,
fast or animated speaker reads as "frustrated" or "hurried" more easily). Treat the tone as a hint
to phrase a question ("you sound a bit rushed — shall I be brief?"), never as a fact about how the
person feels.

The signal part (numpy only):

- The PCM is cut into non-overlapping :data:`FRAME_SECONDS` (30 ms) frames. A frame is *voiced*
  when its RMS is within :data:`VOICED_RANGE_DB` (30 dB) of the loudest frame and above
  :data:`VOICED_FLOOR_DB` (-60 dBFS). ``seconds`` is the voiced span: first to last voiced frame
  (pauses inside the turn count; leading and trailing silence does not).
- ``energy_db``: RMS of the voiced frames in dBFS (a full-scale sine is -3 dBFS). With no voiced
  frame, the RMS of the whole buffer, floored at :data:`SILENCE_DB` (-100 dBFS).
- ``pitch_hz``: F0 of each voiced frame by YIN (the cumulative-mean-normalised difference
  function, an autocorrelation method) over lags for 70-400 Hz: the first dip below
  :data:`YIN_THRESHOLD` (0.15), else the deepest dip if below :data:`YIN_RELAXED` (0.35); a frame
  with neither has no pitch (noise, breath, fricatives). The median over the frames
  with a pitch, ``None`` when fewer than :data:`MIN_PITCHED_FRAMES` have one.
- ``pitch_spread``: standard deviation / median of those F0s, after dropping octave errors
  (values beyond a factor :data:`OCTAVE_GUARD` of the median). Flat speech is ~0.05-0.12,
  animated speech 0.2 and up.
- ``words_per_min``: transcript words / ``seconds`` * 60; ``None`` when ``seconds`` is under
  :data:`MIN_PACE_SECONDS` (0.5 s) or the transcript has no words. Speech-to-text pauses and
  end-of-turn silence inside the span make it a little low.
- ``sentiment``: VADER's compound score of the transcript (``vaderSentiment``, lexicon read from
  the wheel; nothing is fetched), -1..1. English wording only.

The tone: the first rule that matches, in this order:

| tone | rule |
| --- | --- |
| ``quiet`` | no voiced audio, or ``energy_db`` < :data:`QUIET_DB` (-40 dBFS) |
| ``frustrated`` | ``sentiment`` <= :data:`NEGATIVE` (-0.3) and (``energy_db`` >= :data:`LOUD_DB` (-22 dBFS) or ``pitch_spread`` >= :data:`HIGH_SPREAD` (0.25)) |
| ``upset`` | ``sentiment`` <= :data:`NEGATIVE` (-0.3), said without raised energy or pitch spread |
| ``hurried`` | ``words_per_min`` > :data:`FAST_WPM` (190) |
| ``hesitant`` | at least :data:`MANY_FILLERS` (2) fillers (um, uh, er, erm, hmm, "I don't know", "I dunno", "not sure") or ``words_per_min`` < :data:`SLOW_WPM` (90) |
| ``excited`` | ``sentiment`` >= :data:`POSITIVE` (0.5) and ``pitch_spread`` >= :data:`HIGH_SPREAD` (0.25) |
| ``calm`` | \\|``sentiment``\\| < :data:`NEGATIVE` magnitude (0.3), 90 <= ``words_per_min`` <= :data:`CALM_MAX_WPM` (170), ``pitch_spread`` < :data:`LOW_SPREAD` (0.15) |
| ``neutral`` | anything else (including a pace or pitch that could not be measured) |

Speech-to-text often drops fillers ("um") from the transcript, so "hesitant" mostly rests on pace.
Cost: under 10 ms for 10 s of 16 kHz audio on one core (pitch runs at 8 kHz). The VADER lexicon
is loaded once, lazily, on first use (tens of ms; :func:`warm_up` does it ahead of time).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

import numpy as np

#: Analysis frame length (seconds).
FRAME_SECONDS = 0.030
#: A frame is voiced within this many dB of the loudest frame ...
VOICED_RANGE_DB = 30.0
#: ... and above this absolute level (dBFS).
VOICED_FLOOR_DB = -60.0
#: energy_db when nothing at all is heard (dBFS).
SILENCE_DB = -100.0
#: The F0 search range (Hz).
F0_MIN_HZ, F0_MAX_HZ = 70.0, 400.0
#: Pitch is measured on the signal decimated to about this rate (Hz).
PITCH_RATE = 8000
#: YIN: the first dip of the normalised difference below this gives the period ...
YIN_THRESHOLD = 0.15
#: ... failing that, the deepest dip, if below this (pitch glides within a frame dip less deep).
YIN_RELAXED = 0.35
#: At least this many frames with a pitch for pitch_hz to be reported.
MIN_PITCHED_FRAMES = 3
#: F0s further than this factor from the median are octave errors, left out of the spread.
OCTAVE_GUARD = 1.8
#: words_per_min is only computed over at least this much voiced span (seconds).
MIN_PACE_SECONDS = 0.5

QUIET_DB = -40.0
LOUD_DB = -22.0
NEGATIVE = -0.3
POSITIVE = 0.5
HIGH_SPREAD = 0.25
LOW_SPREAD = 0.15
FAST_WPM = 190.0
SLOW_WPM = 90.0
CALM_MAX_WPM = 170.0
MANY_FILLERS = 2

TONES = ("calm", "neutral", "frustrated", "upset", "excited", "hurried", "hesitant", "quiet")

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_FILLER = re.compile(
    r"\b(?:u+m+|u+h+|e+r+m*|h+m+|i\s+don['’]?t\s+know|i\s+dunno|not\s+sure)\b", re.IGNORECASE
)

_analyzer = None
_analyzer_lock = threading.Lock()


@dataclass(frozen=True)
class VoiceFacts:
    """What one user turn sounded like (see the module docstring for how each is measured)."""

    seconds: float  # voiced span analysed (first to last voiced frame)
    energy_db: float  # RMS dBFS of voiced frames
    pitch_hz: float | None  # median F0 of voiced frames; None if unvoiced
    pitch_spread: float | None  # F0 std / median (expressiveness)
    words_per_min: float | None  # transcript words over seconds; None under 0.5 s or no words
    sentiment: float  # VADER compound of the transcript, -1..1
    tone: str  # one of TONES


def _sentiment_analyzer():
    global _analyzer
    if _analyzer is None:
        with _analyzer_lock:
            if _analyzer is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                _analyzer = SentimentIntensityAnalyzer()  # reads the lexicon files in the wheel
    return _analyzer


def warm_up() -> None:
    """Load the VADER lexicon now rather than on the first turn."""
    _sentiment_analyzer()


def sentiment(text: str) -> float:
    """VADER compound score of ``text`` (0.0 for blank text)."""
    if not text or not text.strip():
        return 0.0
    return float(_sentiment_analyzer().polarity_scores(text)["compound"])


def count_fillers(text: str) -> int:
    """How many hesitation fillers ("um", "uh", "er", "I don't know", ...) ``text`` has."""
    return len(_FILLER.findall(text or ""))


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def _decimate(signal: np.ndarray, factor: int) -> np.ndarray:
    """Average each run of ``factor`` samples (a crude low-pass, enough for F0 <= 400 Hz)."""
    if factor <= 1:
        return signal
    n = signal.size // factor * factor
    return sum(signal[k:n:factor] for k in range(factor)) / factor


def _pitches(signal: np.ndarray, frame_idx: np.ndarray, frame: int, sample_rate: int) -> np.ndarray:
    """YIN F0 (Hz) of the frames numbered ``frame_idx``; NaN where a frame has no pitch.

    F0 is at most 400 Hz, so the signal is first decimated to about :data:`PITCH_RATE` Hz.
    """
    factor = max(1, sample_rate // PITCH_RATE)
    signal = _decimate(signal, factor).astype(np.float32)
    sample_rate = sample_rate / factor
    starts = (frame_idx * frame) // factor
    frame = max(1, frame // factor)
    tau_min = max(2, int(sample_rate / F0_MAX_HZ))
    tau_max = int(math.ceil(sample_rate / F0_MIN_HZ))
    width = frame + tau_max
    padded = np.concatenate([signal, np.zeros(width, dtype=signal.dtype)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)[starts]  # (n, width)
    head = windows[:, :frame]
    n_fft = 1 << (width - 1).bit_length()
    # r[tau] = sum_j head[j] * windows[j + tau]
    r = np.fft.irfft(np.conj(np.fft.rfft(head, n_fft)) * np.fft.rfft(windows, n_fft), n_fft)
    r = r[:, : tau_max + 1]
    sq = np.concatenate(
        [np.zeros((len(starts), 1), np.float32), np.cumsum(windows * windows, axis=1)], axis=1
    )
    lags = np.arange(tau_max + 1)
    energy_tau = sq[:, lags + frame] - sq[:, lags]  # sum of windows[tau : tau + frame] ** 2
    diff = np.maximum(energy_tau[:, :1] + energy_tau - 2.0 * r, 0.0)
    diff[:, 0] = 0.0
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(running > 0, diff[:, 1:] * lags[1:] / running, 1.0)
    band = cmnd[:, tau_min : tau_max + 1]
    below = band < YIN_THRESHOLD
    first = np.argmax(below, axis=1)
    # from the first dip under the threshold, walk down to its local minimum ...
    rising = np.concatenate([band[:, 1:] >= band[:, :-1], np.ones((len(band), 1), bool)], axis=1)
    idx = np.arange(band.shape[1])
    best = np.argmax(rising & (idx >= first[:, None]), axis=1)
    # ... or, with no dip that deep (a fast glide), take the deepest one if it is deep enough
    deepest = np.argmin(band, axis=1)
    strict = below.any(axis=1)
    best = np.where(strict, best, deepest)
    has = strict | (band[np.arange(len(band)), deepest] < YIN_RELAXED)
    tau = best + tau_min
    # parabolic interpolation around the minimum
    left = cmnd[np.arange(len(tau)), np.maximum(tau - 1, 0)]
    mid = cmnd[np.arange(len(tau)), tau]
    right = cmnd[np.arange(len(tau)), np.minimum(tau + 1, tau_max)]
    denom = left - 2.0 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / denom, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    f0 = sample_rate / (tau + shift)
    return np.where(has, f0, np.nan)


def _tone(energy_db, voiced, pitch_spread, wpm, score, fillers) -> str:
    spread = pitch_spread if pitch_spread is not None else 0.0
    if not voiced or energy_db < QUIET_DB:
        return "quiet"
    if score <= NEGATIVE:
        if energy_db >= LOUD_DB or spread >= HIGH_SPREAD:
            return "frustrated"
        return "upset"
    if wpm is not None and wpm > FAST_WPM:
        return "hurried"
    if fillers >= MANY_FILLERS or (wpm is not None and wpm < SLOW_WPM):
        return "hesitant"
    if score >= POSITIVE and spread >= HIGH_SPREAD:
        return "excited"
    if (
        abs(score) < abs(NEGATIVE)
        and wpm is not None
        and SLOW_WPM <= wpm <= CALM_MAX_WPM
        and pitch_spread is not None
        and pitch_spread < LOW_SPREAD
    ):
        return "calm"
    return "neutral"


def analyse_turn(pcm: bytes, sample_rate: int, transcript: str) -> VoiceFacts:
    """Measure one turn: ``pcm`` is 16-bit little-endian mono at ``sample_rate`` Hz."""
    if sample_rate < 2 * F0_MAX_HZ:
        raise ValueError(f"sample_rate {sample_rate} is too low for pitch analysis")
    pcm = bytes(pcm[: len(pcm) - len(pcm) % 2])
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    if signal.size:
        signal = signal - signal.mean()
    frame = max(1, int(round(sample_rate * FRAME_SECONDS)))
    n_frames = signal.size // frame
    words = len(_WORD.findall(transcript or ""))
    score = sentiment(transcript)
    fillers = count_fillers(transcript)

    voiced_idx = np.zeros(0, dtype=int)
    if n_frames:
        frames = signal[: n_frames * frame].reshape(n_frames, frame)
        power = np.mean(frames * frames, axis=1)
        loudest = _db(float(power.max()) ** 0.5)
        if loudest > VOICED_FLOOR_DB:
            with np.errstate(divide="ignore"):
                level = 10.0 * np.log10(power)
            threshold = max(VOICED_FLOOR_DB, loudest - VOICED_RANGE_DB)
            voiced_idx = np.flatnonzero(level >= threshold)

    if voiced_idx.size:
        seconds = (int(voiced_idx[-1]) - int(voiced_idx[0]) + 1) * frame / sample_rate
        energy_db = _db(float(np.mean(power[voiced_idx])) ** 0.5)
        f0 = _pitches(signal, voiced_idx, frame, sample_rate)
        f0 = f0[np.isfinite(f0)]
    else:
        seconds = 0.0
        whole = float(np.sqrt(np.mean(signal * signal))) if signal.size else 0.0
        energy_db = max(SILENCE_DB, _db(whole))
        f0 = np.zeros(0)

    pitch_hz = pitch_spread = None
    if f0.size >= MIN_PITCHED_FRAMES:
        median = float(np.median(f0))
        kept = f0[(f0 <= median * OCTAVE_GUARD) & (f0 >= median / OCTAVE_GUARD)]
        pitch_hz = median
        pitch_spread = float(np.std(kept) / median) if kept.size else 0.0

    wpm = words / seconds * 60.0 if seconds >= MIN_PACE_SECONDS and words else None
    tone = _tone(energy_db, bool(voiced_idx.size), pitch_spread, wpm, score, fillers)
    return VoiceFacts(
        seconds=round(seconds, 3),
        energy_db=round(max(SILENCE_DB, energy_db), 1),
        pitch_hz=None if pitch_hz is None else round(pitch_hz, 1),
        pitch_spread=None if pitch_spread is None else round(pitch_spread, 3),
        words_per_min=None if wpm is None else round(wpm, 1),
        sentiment=round(score, 3),
        tone=tone,
    )


def _pace(facts: VoiceFacts) -> str:
    wpm = facts.words_per_min
    if wpm is None:
        return "pace unknown"
    if wpm > FAST_WPM:
        return f"fast pace ({wpm:.0f} words/min)"
    if wpm < SLOW_WPM:
        return f"slow pace ({wpm:.0f} words/min)"
    return f"normal pace ({wpm:.0f} words/min)"


def _wording(facts: VoiceFacts) -> str:
    s = facts.sentiment
    kind = "negative" if s <= NEGATIVE else "positive" if s >= abs(NEGATIVE) else "neutral"
    return f"{kind} wording ({s:+.2f})"


def _loudness(facts: VoiceFacts) -> str:
    if facts.seconds <= 0:
        return "no voice heard"
    db = facts.energy_db
    kind = "quiet" if db < QUIET_DB else "loud" if db >= LOUD_DB else "normal volume"
    return f"{kind} ({db:.0f} dBFS)"


def _pitch(facts: VoiceFacts) -> str:
    if facts.pitch_hz is None:
        return "no clear pitch"
    spread = facts.pitch_spread or 0.0
    kind = "some variation"
    if spread >= HIGH_SPREAD:
        kind = "varied"
    elif spread < LOW_SPREAD:
        kind = "steady"
    return f"pitch {facts.pitch_hz:.0f} Hz, {kind} ({spread * 100:.0f}% spread)"


def describe(facts: VoiceFacts) -> str:
    """One short sentence, e.g. "sounds calm; normal pace (140 words/min); neutral wording"."""
    parts = [f"sounds {facts.tone}", _pace(facts), _wording(facts)]
    if facts.seconds <= 0 or facts.energy_db < QUIET_DB or facts.energy_db >= LOUD_DB:
        parts.append(_loudness(facts))
    return "; ".join(parts)


# query keyword stem -> the tone it asks about (first match wins; "loudness" is special)
_ROUTES = (
    (re.compile(r"\b(frustrat|angry|anger|annoy|irritat|mad\b|upset with)", re.IGNORECASE), "frustrated"),
    (re.compile(r"\b(confus|unsure|uncertain|hesitan|doubt)", re.IGNORECASE), "hesitant"),
    (re.compile(r"\b(hurry|hurried|quick|fast|rush|impatien)", re.IGNORECASE), "hurried"),
    (re.compile(r"\b(calm|relax)", re.IGNORECASE), "calm"),
    (re.compile(r"\b(happy|excite|enthusias|cheerful|pleased)", re.IGNORECASE), "excited"),
    (re.compile(r"\b(sad|upset|down\b|unhappy|low\b)", re.IGNORECASE), "upset"),
    (re.compile(r"\b(loud|quiet|whisper|volume|shout|yell|soft)", re.IGNORECASE), "loudness"),
)

_EVIDENCE = {
    "frustrated": lambda f: [_wording(f), _loudness(f), _pitch(f)],
    "upset": lambda f: [_wording(f), _loudness(f), _pitch(f)],
    "hurried": lambda f: [_pace(f)],
    "hesitant": lambda f: [_pace(f)] + (
        ["filler words such as 'um' or 'I don't know'"]
        if f.tone == "hesitant" and (f.words_per_min is None or f.words_per_min >= SLOW_WPM)
        else []
    ),
    "calm": lambda f: [_wording(f), _pace(f), _pitch(f)],
    "excited": lambda f: [_wording(f), _pitch(f)],
    "loudness": lambda f: [_loudness(f)],
}

_CAVEAT = " (a heuristic from voice and wording, not a reading of feelings)"


def can_answer(query: str) -> bool:
    """Whether the voice's tone can answer ``query`` at all (else: cannot tell)."""
    return any(pattern.search(query or "") for pattern, _tone in _ROUTES)


def answer(query: str, recent: list[VoiceFacts]) -> str:
    """Answer an audio-awareness question from ``recent`` turns (oldest first), citing evidence."""
    if not recent:
        return "No speech heard yet."
    target = next((tone for pattern, tone in _ROUTES if pattern.search(query or "")), None)
    if target is None:
        return "Cannot tell from the audio alone."
    last = recent[-1]
    evidence = "; ".join(_EVIDENCE[target](last))
    if target == "loudness":
        return f"The last turn was {evidence}."
    matching = sum(1 for f in recent if f.tone == target)
    if last.tone == target:
        head = f"Yes, the last turn sounded {target}"
    else:
        head = f"Not clearly: the last turn sounded {last.tone}, not {target}"
    tail = ""
    if len(recent) > 1:
        tail = f"; {matching} of the last {len(recent)} turns sounded {target}"
    return f"{head}: {evidence}{tail}{_CAVEAT}."
