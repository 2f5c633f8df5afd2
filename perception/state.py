"""A conversation's observations: what the LLM is told each turn and what the call's end sums up.

The latest facts of each source (camera, screen share, the user's voice) are kept with when
they were seen; what reaches the LLM is rebuilt from them at every turn and anything older
than the stale bound is left out ("no recent view"), so the LLM is never told what was true a
minute ago as if it were true now. A bounded log (one line a processed frame or turn, the
oldest thinned when full) is what the end-of-call analysis reads.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from perception.rules import CANNOT_TELL, route

MAX_LOG = 2000
RECENT = 6  # observations of a source the rules look at


@dataclass
class Seen:
    """An observation and when it was made (monotonic seconds)."""

    at: float
    facts: Any


@dataclass
class Observations:
    """Everything perceived in one conversation."""

    stale_secs: float = 10.0
    visual_queries: list[str] = field(default_factory=list)
    audio_queries: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    recent: dict[str, deque] = field(default_factory=dict)
    log: list[tuple[float, str, Any]] = field(default_factory=list)
    # A vision model's latest description (appearance, emotions, screen, answers), if one is used.
    described: dict[str, Seen] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def add(self, source: str, facts: Any, at: float | None = None) -> None:
        """A processed frame (``camera`` / ``screenVideo``) or a turn's voice (``voice``)."""
        at = time.monotonic() if at is None else at
        self.recent.setdefault(source, deque(maxlen=RECENT)).append(Seen(at, facts))
        self.counts[source] += 1
        self.log.append((at - self.started, source, facts))
        if len(self.log) > MAX_LOG:  # keep the whole call's span: drop every other old entry
            half = MAX_LOG // 2
            self.log = self.log[:half:2] + self.log[half:]

    def describe(self, key: str, text: str, at: float | None = None) -> None:
        """A vision model's answer for ``key`` (``appearance``, ``emotions``, ``screen``, a query)."""
        self.described[key] = Seen(time.monotonic() if at is None else at, text)

    def fresh(self, source: str, now: float | None = None) -> list[Any]:
        """The source's facts seen within the stale bound, oldest first."""
        now = time.monotonic() if now is None else now
        return [s.facts for s in self.recent.get(source, ()) if now - s.at <= self.stale_secs]

    def _described(self, key: str, now: float) -> str | None:
        seen = self.described.get(key)
        return seen.facts if seen is not None and now - seen.at <= self.stale_secs else None

    # ------------------------------------------------------------------ per turn

    def appearance(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        described = self._described("appearance", now)
        camera = self.fresh("camera", now)
        if described:
            return described
        if not camera:
            return "No recent view of the user's camera."
        f = camera[-1]
        if f.faces == 0:
            return "No one is in view of the camera."
        who = "One person is in view" if f.faces == 1 else f"{f.faces} people are in view"
        gaze = ", facing the screen" if f.looking else ", looking away from the screen"
        return who + gaze + "."

    def emotions(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        parts: list[str] = []
        described = self._described("emotions", now)
        if described:
            parts.append(described)
        else:
            faces = [f for f in self.fresh("camera", now) if f.emotion]
            if faces:
                f = faces[-1]
                parts.append(f"Facial expression: {f.emotion}"
                             + (", smiling." if f.smiling else "."))
        # The last turn's voice is not held to the stale bound: it is how the user just spoke.
        voice = [s.facts for s in self.recent.get("voice", ())][-1:]
        if voice:
            from perception.audio import describe

            parts.append(f"Voice: {describe(voice[-1])}.")
        return " ".join(parts) or "No recent cue to the user's emotions."

    def screen(self, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        described = self._described("screen", now)
        if described:
            return described
        shared = self.fresh("screenVideo", now)
        if not shared:
            return None
        text = " ".join(shared[-1].text.split())
        return f"Shared screen text: {text[:400]}" if text else "A screen is shared; no readable text."

    def answers(self, now: float | None = None) -> list[tuple[str, str]]:
        """Each visual and audio awareness query with its current answer."""
        from perception.audio import answer as audio_answer

        now = time.monotonic() if now is None else now
        out = []
        for query in self.visual_queries:
            described = self._described(f"query:{query}", now)
            if described:
                out.append((query, described))
                continue
            rule = route(query)
            if rule is None:
                out.append((query, CANNOT_TELL))
            else:
                facts = self.fresh(rule.source, now)
                out.append((query, rule.answer(facts) if facts else
                            ("Nothing is being shared." if rule.source == "screenVideo"
                             else "No recent view of the user's camera.")))
        voice = [s.facts for s in self.recent.get("voice", ())]
        out += [(q, audio_answer(q, voice)) for q in self.audio_queries]
        return out

    def system_message(self, now: float | None = None, *, visual: bool = True,
                       max_chars: int = 1200) -> str:
        """Tavus's perception system message: appearance, emotions, screen share and the
        answers to the awareness queries."""
        now = time.monotonic() if now is None else now
        parts: list[tuple[str, str]] = []
        if visual:
            parts.append(("user_appearance", self.appearance(now)))
        parts.append(("user_emotions", self.emotions(now)))
        screen = self.screen(now) if visual else None
        if screen:
            parts.append(("user_screenshare", screen))
        answers = self.answers(now)
        if answers:
            parts.append(("user_observations", " ".join(f"{q} {a}" for q, a in answers)))
        # Each part within its share, every tag closed; what was read off the user's screen
        # or said by a vision model is data, so it cannot open or close a tag.
        share = max(80, max_chars // len(parts) - 40)
        return " ".join(f"<{tag}>{_clip(_escape(body), share)}</{tag}>" for tag, body in parts)

    def visual_analysis(self, now: float | None = None) -> str:
        """``user_visual_analysis`` of an utterance: what the camera and screen show now."""
        now = time.monotonic() if now is None else now
        text = self.appearance(now)
        faces = [f for f in self.fresh("camera", now) if f.emotion]
        if faces and not self._described("emotions", now):
            text += f" Expression: {faces[-1].emotion}."
        elif self._described("emotions", now):
            text += " " + self._described("emotions", now)
        screen = self.screen(now)
        return f"{text} {screen}" if screen else text

    def audio_analysis(self) -> str | None:
        """``user_audio_analysis`` of an utterance: how the last turn sounded."""
        voice = [s.facts for s in self.recent.get("voice", ())]
        if not voice:
            return None
        from perception.audio import describe

        return describe(voice[-1])

    # ------------------------------------------------------------------ end of call

    def analysis(self, analysis_queries: list[str]) -> str:
        """The end-of-call summary (markdown), from the whole log, as Tavus's analysis reads."""
        looks = [f for _t, s, f in self.log if s == "look"]
        if looks and not any(s == "camera" for _t, s, _f in self.log):
            return _looks_summary(looks, analysis_queries, self.visual_queries)
        camera = [f for _t, s, f in self.log if s == "camera"]
        screen = [f for _t, s, f in self.log if s == "screenVideo"]
        voice = [f for _t, s, f in self.log if s == "voice"]
        span = max((t for t, _s, _f in self.log), default=0.0)
        lines = [f"Here's a summary of the observations taken during the call over the last "
                 f"{span:.0f} seconds ({len(camera)} camera frames, {len(screen)} screen frames, "
                 f"{len(voice)} spoken turns analysed):", ""]
        lines.append(f"*   **User Appearance:** {_appearance_summary(camera)}")
        lines.append(f"*   **User Behavior and Demeanor:** {_behaviour_summary(camera)}")
        lines.append(f"*   **User Emotions:** {_emotion_summary(camera, voice)}")
        lines.append(f"*   **Notable Screen Activities:** {_screen_summary(screen)}")
        if self.visual_queries or self.audio_queries:
            answers = "; ".join(f"{q} {_over_call(q, camera, screen, voice)}"
                                for q in [*self.visual_queries, *self.audio_queries])
            lines.append(f"*   **Ambient Awareness Queries:** {answers}")
        else:
            lines.append("*   **Ambient Awareness Queries:** No ambient awareness queries were "
                         "provided.")
        for query in analysis_queries:
            lines.append(f"*   **{query}** {_over_call(query, camera, screen, voice)}")
        return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("<", "‹").replace(">", "›")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _appearance_summary(camera: list[Any]) -> str:
    if not camera:
        return "No camera frames were received."
    counts = Counter(f.faces for f in camera)
    present = sum(n for faces, n in counts.items() if faces >= 1) / len(camera)
    most = max((faces for faces in counts if faces), default=0)
    extra = (f" At most {most} people were in view at once ({counts.get(most, 0)} frames)."
             if most > 1 else " No one else was seen.")
    return f"A person was in view in {present:.0%} of the camera frames." + extra


def _behaviour_summary(camera: list[Any]) -> str:
    seen = [f for f in camera if f.faces]
    if not seen:
        return "No face was seen, so gaze and posture were not observed."
    looking = sum(1 for f in seen if f.looking) / len(seen)
    return (f"The user faced the screen with eyes visible in {looking:.0%} of the frames with "
            f"a face (about {round(looking * 100)} on a scale of 1-100).")


def _emotion_summary(camera: list[Any], voice: list[Any]) -> str:
    parts = []
    faces = [f.emotion for f in camera if f.emotion]
    if faces:
        counts = Counter(faces).most_common()
        parts.append("Facial expression: " + ", ".join(
            f"{label} {n / len(faces):.0%}" for label, n in counts[:4]) + ".")
        smiles = sum(1 for f in camera if f.smiling)
        if smiles:
            parts.append(f"Smiling in {smiles} of {len(camera)} frames.")
    if voice:
        tones = Counter(v.tone for v in voice).most_common()
        parts.append("Voice: " + ", ".join(f"{t} in {n} of {len(voice)} turns"
                                            for t, n in tones[:3]) + ".")
    return " ".join(parts) or "No facial expression or voice was analysed."


def _screen_summary(screen: list[Any]) -> str:
    if not screen:
        return "No screen was shared."
    texts = list(dict.fromkeys(" ".join(f.text.split())[:160] for f in screen if f.text.strip()))
    if not texts:
        return f"A screen was shared ({len(screen)} frames) with no readable text."
    shown = "; ".join(f'"{t}"' for t in texts[:5])
    more = f" and {len(texts) - 5} other screens" if len(texts) > 5 else ""
    return f"A screen was shared ({len(screen)} frames); it showed {shown}{more}."


def _looks_summary(looks: list[Any], analysis_queries: list[str], queries: list[str]) -> str:
    """The analysis from a vision model's looks (when its own summary is not available)."""
    def distinct(key: str) -> str:
        seen = list(dict.fromkeys(getattr(look, key) for look in looks if getattr(look, key)))
        return " / ".join(seen[-3:]) or "Not described."

    last = looks[-1]
    lines = [f"Here's a summary of {len(looks)} looks at the camera and screen:", "",
             f"*   **User Appearance:** {distinct('appearance')}",
             f"*   **User Emotions:** {distinct('emotions')}",
             f"*   **Notable Screen Activities:** {distinct('screen')}"]
    for query, answer in zip(queries, last.answers or []):
        lines.append(f"*   **{query}** {answer} (last look)")
    for query in analysis_queries:
        lines.append(f"*   **{query}** Not answered: the vision model's summary was not available.")
    return "\n".join(lines)


def _over_call(query: str, camera: list[Any], screen: list[Any], voice: list[Any]) -> str:
    """A query answered over the whole call: the share of observations where its rule held."""
    from perception.audio import answer as audio_answer

    rule = route(query)
    if rule is None:
        answer = audio_answer(query, voice) if voice else None
        if answer and not answer.lower().startswith(("cannot tell", "no speech")):
            return answer
        return CANNOT_TELL
    facts = camera if rule.source == "camera" else screen
    if not facts:
        return "Not observed: no " + ("camera" if rule.source == "camera" else "screen share") + "."
    if rule.name == "looking_away":
        return _behaviour_summary(facts)
    windows = [facts[max(0, i - 1): i + 1] for i in range(1, len(facts))] or [facts]
    held = sum(1 for w in windows if rule.holds(w)) / len(windows)
    return f"{rule.answer(facts)} Over the call this held in {held:.0%} of observations."
