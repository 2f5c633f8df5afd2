"""What the local detectors can say, and how a question in words is routed to it.

A ``visual_awareness_queries`` item, a visual tool's description, a visual guardrail's or
objective's prompt: each is text written for Tavus's vision-language model. Offline we have
detectors (perception/detectors.py: faces, eyes, smiles, a 7-class facial expression, text on
a shared screen), so each text is routed by its words to the one rule that can decide it, or to
none. A text no rule covers is answered "cannot tell" and a tool no rule covers never fires
offline (``--check`` lists them); with a vision model configured, all of them go to it instead.

A rule has ``holds(recent)`` (is the condition true now, for tools, guardrails and objectives)
and ``answer(recent)`` (a sentence for the LLM and the end-of-call analysis), both over the
recent observations of one source, newest last.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CANNOT_TELL = ("Cannot tell: the local detectors see faces, eyes, smiles, facial expressions "
               "and text on a shared screen, not this.")
NEGATIVE = ("angry", "disgust", "fear", "sad")
ID_WORDS = re.compile(r"passport|driver'?s? ?licen[cs]e|identity card|\bid card\b|"
                      r"national id|date of birth|\bdob\b", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """One thing the detectors can decide."""

    name: str
    source: str  # "camera" or "screenVideo"
    holds: Callable[[Sequence[Any]], bool]
    answer: Callable[[Sequence[Any]], str]
    value: Callable[[Sequence[Any]], str]  # a tool argument's value when it fires
    needs_camera_text: bool = False


def _latest(recent: Sequence[Any]) -> Any | None:
    return recent[-1] if recent else None


def _share(recent: Sequence[Any], test: Callable[[Any], bool]) -> float:
    return sum(1 for f in recent if test(f)) / len(recent) if recent else 0.0


def _people(recent: Sequence[Any]) -> str:
    f = _latest(recent)
    if f is None:
        return "No camera view yet."
    if f.faces == 0:
        return "No one is in view of the camera."
    return "One person is in view." if f.faces == 1 else f"{f.faces} people are in view."


def _looking(recent: Sequence[Any]) -> str:
    seen = [f for f in recent if f.faces]
    if not seen:
        return "No face in view, so no gaze to judge."
    share = _share(seen, lambda f: bool(f.looking))
    return (f"The user faces the screen with eyes visible in {share:.0%} of recent frames "
            f"(about {round(share * 100)} on a scale of 1-100).")


def _emotion(recent: Sequence[Any]) -> str:
    seen = [f for f in recent if f.emotion]
    if not seen:
        return "No face clear enough to read an expression."
    f = seen[-1]
    smile = " and smiling" if f.smiling else ""
    return f"The user's expression looks {f.emotion} ({f.emotion_score:.0%}){smile}."


def _strong_emotion(recent: Sequence[Any]) -> bool:
    tail = [f for f in recent[-3:] if f.emotion]
    return len(tail) >= 2 and all(f.emotion != "neutral" and (f.emotion_score or 0) >= 0.5
                                  for f in tail)


def _negative(recent: Sequence[Any]) -> bool:
    tail = [f for f in recent[-3:] if f.emotion]
    return len(tail) >= 2 and all(f.emotion in NEGATIVE for f in tail)


def _smiling(recent: Sequence[Any]) -> bool:
    tail = recent[-2:]
    return len(tail) == 2 and all(f.smiling or f.emotion == "happy" for f in tail)


def _text(recent: Sequence[Any]) -> str:
    f = _latest(recent)
    if f is None:
        return "Nothing is being shared."
    text = " ".join(f.text.split())
    return f"The shared screen shows: {text[:300]}" if text else "The shared screen shows no readable text."


def _id_shown(recent: Sequence[Any]) -> bool:
    return any(ID_WORDS.search(f.text or "") for f in recent[-2:])


def _lighting(recent: Sequence[Any]) -> str:
    f = _latest(recent)
    if f is None:
        return "No camera view yet."
    level = "dark" if f.brightness < 60 else "bright" if f.brightness > 180 else "normally lit"
    return f"The camera image is {level} (mean brightness {f.brightness:.0f} of 255)."


def _two(recent: Sequence[Any], test: Callable[[Any], bool]) -> bool:
    tail = recent[-2:]
    return len(tail) == 2 and all(test(f) for f in tail)


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("others_present", "camera", lambda r: _two(r, lambda f: f.faces >= 2), _people,
         lambda r: str(_latest(r).faces) if r else "0"),
    Rule("absent", "camera", lambda r: _two(r, lambda f: f.faces == 0), _people,
         lambda r: "no one in view"),
    Rule("present", "camera", lambda r: _two(r, lambda f: f.faces >= 1), _people,
         lambda r: _people(r)),
    Rule("looking_away", "camera", lambda r: _two(r, lambda f: f.faces >= 1 and not f.looking),
         _looking, lambda r: "looking away"),
    Rule("smiling", "camera", _smiling, _emotion, lambda r: "smiling"),
    Rule("negative_emotion", "camera", _negative, _emotion,
         lambda r: (_latest([f for f in r if f.emotion]) or _latest(r)).emotion or "unknown"),
    Rule("emotion", "camera", _strong_emotion, _emotion,
         lambda r: (_latest([f for f in r if f.emotion]) or _latest(r)).emotion or "unknown"),
    Rule("id_document", "camera", _id_shown,
         lambda r: ("Text on camera reads like an identity document."
                    if _id_shown(r) else "No identity document seen on camera."),
         lambda r: "passport" if any("passport" in (f.text or "").lower() for f in r)
         else "identity document", needs_camera_text=True),
    Rule("screen_text", "screenVideo", lambda r: bool(r and r[-1].text.strip()), _text,
         lambda r: " ".join(r[-1].text.split())[:200] if r else ""),
    Rule("lighting", "camera", lambda r: bool(r and r[-1].brightness < 60), _lighting,
         lambda r: "dark"),
)}

# Checked in order: the first pattern that matches a text decides its rule.
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(id|identity|passport|licen[cs]e|identification)\b", re.IGNORECASE), "id_document"),
    (re.compile(r"look(ing|s)? (at|toward|towards|away)|eye contact|gaze|attent|focus|"
                r"distract", re.IGNORECASE), "looking_away"),
    (re.compile(r"screen|shar(e|ing)|slide|document|code\b|reading|text\b|presentation|"
                r"spreadsheet|browser|website|tab\b", re.IGNORECASE), "screen_text"),
    (re.compile(r"more than one|multiple (people|person|faces)|another person|someone else|"
                r"anyone else|other people|\balone\b|how many (people|persons|faces)|others? "
                r"(present|in the room)|second person", re.IGNORECASE), "others_present"),
    (re.compile(r"left the|leaves|not (in view|present|visible|there)|absent|away from the "
                r"(camera|desk)|no one", re.IGNORECASE), "absent"),
    (re.compile(r"smil|laugh", re.IGNORECASE), "smiling"),
    (re.compile(r"emotional state|body language|facial express", re.IGNORECASE), "emotion"),
    (re.compile(r"distress|uncomfortable|upset|angry|anger|frustrat|sad\b|scared|afraid|"
                r"fear|disgust|annoy|anxious|nervous|worried", re.IGNORECASE), "negative_emotion"),
    (re.compile(r"emotion|express|mood|feel|happy|surprise|calm|confus|body language|"
                r"facial", re.IGNORECASE), "emotion"),
    (re.compile(r"dark|lighting|lit\b|brightness of the (room|image)", re.IGNORECASE), "lighting"),
    (re.compile(r"present|in (the )?(frame|view)|visible|on camera|is there a (person|user)|"
                r"can you see", re.IGNORECASE), "present"),
]


def route(text: str) -> Rule | None:
    """The rule that decides ``text`` (a query, a tool's description, a policy's prompt)."""
    for pattern, name in _ROUTES:
        if pattern.search(text or ""):
            return RULES[name]
    return None


def tool_text(tool: Any) -> str:
    """What a perception tool is about: its name's words and its description."""
    fn = tool.function
    return f"{fn.name.replace('_', ' ')}. {fn.description or ''}"


def tool_arguments(tool: Any, value: str) -> dict[str, Any]:
    """Arguments for a tool the detectors fired: each parameter from what was seen.

    A string takes ``value`` (or the closest of its enum), a number the value when it is one,
    a boolean true. The LLM-facing schema's required properties are all filled.
    """
    params = tool.function.parameters or {}
    out: dict[str, Any] = {}
    for name, schema in (params.get("properties") or {}).items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        enum = schema.get("enum") if isinstance(schema, dict) else None
        if enum:
            lowered = value.lower()
            out[name] = next((e for e in enum if str(e).lower() in lowered
                              or lowered in str(e).lower()), enum[0])
        elif kind in ("number", "integer"):
            try:
                out[name] = int(value) if kind == "integer" else float(value)
            except ValueError:
                out[name] = 1
        elif kind == "boolean":
            out[name] = True
        else:
            out[name] = value
    return out


# Audio tools: a tool's text -> the tones (perception/audio.py) that fire it.
_AUDIO_ROUTES: list[tuple[re.Pattern[str], frozenset[str]]] = [
    (re.compile(r"frustrat|angry|anger|annoy|irritat|escalat|upset", re.IGNORECASE),
     frozenset({"frustrated", "upset"})),
    (re.compile(r"hurr|rush|quick|fast|impatien", re.IGNORECASE), frozenset({"hurried"})),
    (re.compile(r"confus|hesita|unsure|uncertain", re.IGNORECASE), frozenset({"hesitant"})),
    (re.compile(r"sad|down\b|depress|crying", re.IGNORECASE), frozenset({"upset"})),
    (re.compile(r"excit|happy|enthusias|delight", re.IGNORECASE), frozenset({"excited"})),
    (re.compile(r"quiet|whisper|soft", re.IGNORECASE), frozenset({"quiet"})),
]


def audio_tones(text: str) -> frozenset[str] | None:
    """The tones that fire an audio tool whose text is ``text`` (None: no rule covers it)."""
    for pattern, tones in _AUDIO_ROUTES:
        if pattern.search(text or ""):
            return tones
    return None
