"""``layers.conversational_flow`` -> Pipecat VAD and user-turn strategies.

| turn_detection_model | Pipecat stop strategy |
| --- | --- |
| ``sparrow-1`` (default) | Smart Turn v3 (bundled ONNX) on each VAD pause |
| ``sparrow-0``, ``time-based`` | a silence timeout after the last speech |

| turn_taking_patience | Smart Turn: silence before an "incomplete" turn is ended anyway | time-based: silence that ends a turn |
| --- | --- | --- |
| low | 1.0 s | 0.4 s |
| medium (default) | 2.0 s | 0.7 s |
| high | 3.0 s | 1.2 s |

The VAD pause that ends speech (and triggers a Smart Turn verdict) is 0.2 / 0.4 / 0.6 s
for low / medium / high.

| replica_interruptibility | while the replica speaks, the user barges in (interrupts it) after |
| --- | --- |
| high | any speech (VAD) |
| medium (default) | 2 transcribed words |
| low | 4 transcribed words |
| verylow | nothing interrupts: the user's turn is taken, the replica finishes first |

Nothing the user says is dropped: speech that does not barge in is a *quiet* turn, taken
while the replica talks and answered after it. While the replica is silent every level
starts a turn on speech at once. A custom greeting is spoken as ``verylow``.
``turn_commitment`` is accepted and shown, with no effect of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from config.options import FlowOptions
from services.pipecat_seam import (
    set_smart_turn_stop_secs,
    set_speech_timeout,
    set_vad_params,
    shared_smart_turn_v3,
    turn_analyzer_of,
)

# Silence before VAD reports the end of speech (and Smart Turn judges the turn). Longer for
# patient personas: a comma pause (0.3-0.4 s in Piper's and most people's speech) must not
# end the turn when Smart Turn finds the first half "complete" ("Thanks," / "that was...").
VAD_STOP_SECS = {"low": 0.2, "medium": 0.4, "high": 0.6}
SMART_TURN_INCOMPLETE_SECS = {"low": 1.0, "medium": 2.0, "high": 3.0}
SPEECH_TIMEOUT_SECS = {"low": 0.4, "medium": 0.7, "high": 1.2}


@dataclass(frozen=True)
class TurnPlan:
    """The turn-taking configuration derived from a persona."""

    model: str
    patience: str
    stop_secs: float

    def describe(self) -> str:
        """One line for ``--check``."""
        if self.model == "sparrow-1":
            how = f"Smart Turn v3; an incomplete turn ends after {self.stop_secs:.1f}s of silence"
        else:
            how = f"silence timeout {self.stop_secs:.1f}s"
        return f"{self.model} (patience {self.patience}): {how}"


def turn_plan(flow: FlowOptions) -> TurnPlan:
    """The turn-taking plan of the persona's resolved flow options."""
    model, patience = flow.turn_detection_model, flow.turn_taking_patience
    if model == "sparrow-1":
        return TurnPlan(model, patience, SMART_TURN_INCOMPLETE_SECS[patience])
    return TurnPlan(model, patience, SPEECH_TIMEOUT_SECS[patience])


BARGE_IN_WORDS = {"medium": 2, "low": 4}


def _start_strategy_class():
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        InterimTranscriptionFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
    )
    from pipecat.turns.types import ProcessFrameResult
    from pipecat.turns.user_start import BaseUserTurnStartStrategy

    class PersonaUserTurnStartStrategy(BaseUserTurnStartStrategy):
        """Starts user turns on speech; while the replica talks, applies its interruptibility.

        No speech is ever dropped. While the replica is silent, speech starts a turn
        at once (interrupting a reply still being generated). While it speaks:

        - ``high``: speech starts a turn and interrupts it (barge-in);
        - ``medium`` / ``low``: speech starts a *quiet* turn that does not interrupt;
          once the turn's transcript reaches 2 / 4 words it becomes a barge-in.
          A quiet turn that ends first (a short "okay") is answered after the
          replica finishes, like any turn;
        - ``verylow``: every turn is quiet, the replica always finishes first.

        ``first_speech_uninterruptible`` (a custom greeting, which Tavus does not let
        the user interrupt) makes the replica's first speech ``verylow``.
        """

        def __init__(self, interruptibility: str = "medium", *,
                     first_speech_uninterruptible: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.interruptibility = interruptibility
            self._bot_speaking = False
            self._protected = first_speech_uninterruptible  # until the first speech ends
            self._first_speech_done = False
            self._turn_active = False
            self._quiet_turn = False  # the active turn has not interrupted the replica
            self._quiet_words = 0  # final words of the quiet turn so far
            self.interrupt = None  # set by TurnController.attach: the user aggregator's

        def first_speech_done(self) -> None:
            """The replica's first utterance is over (its text is in the context).

            A slow TTS can leave gaps inside one utterance (the bot "stops" and
            "starts" speaking again), so the protection of the first speech ends at
            the first stop after this, not at the first stop.
            """
            self._first_speech_done = True
            if not self._bot_speaking:
                self._protected = False

        def _level(self) -> str:
            return "verylow" if self._protected else self.interruptibility

        async def handle_user_turn_started(self):
            await super().handle_user_turn_started()
            self._turn_active = True

        async def handle_user_turn_stopped(self):
            await super().handle_user_turn_stopped()
            self._turn_active = self._quiet_turn = False
            self._quiet_words = 0

        async def _start(self, *, quiet: bool) -> ProcessFrameResult:
            if self._turn_active:  # the user resumed within the same turn
                return ProcessFrameResult.CONTINUE
            self._quiet_turn, self._quiet_words = quiet, 0
            if quiet:
                await self.trigger_user_turn_started(enable_interruptions=False)
            else:
                await self.trigger_user_turn_started()
            return ProcessFrameResult.STOP

        async def _count(self, frame) -> None:
            """Words of a quiet turn; enough of them while the replica talks is a barge-in.

            Final transcripts add up over the turn; an interim one (a streaming STT's
            partial of the current segment) counts on top without being kept.
            """
            words = len(frame.text.split())
            if isinstance(frame, TranscriptionFrame):
                self._quiet_words += words
                words = 0
            level = self._level()
            if (self._quiet_turn and self._bot_speaking and level in BARGE_IN_WORDS
                    and self._quiet_words + words >= BARGE_IN_WORDS[level] and self.interrupt):
                self._quiet_turn = False
                logger.debug(f"Barge-in after {self._quiet_words} words ({level})")
                await self.interrupt()

        async def process_frame(self, frame):
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot_speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._bot_speaking = False
                if self._first_speech_done:
                    self._protected = False
            elif isinstance(frame, VADUserStartedSpeakingFrame):
                if not self._bot_speaking or self._level() == "high":
                    return await self._start(quiet=False)
                return await self._start(quiet=True)
            elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
                if self._turn_active:
                    await self._count(frame)
                elif frame.text.split():
                    # Text without a VAD start (a late transcript): start a turn for it.
                    result = await self._start(
                        quiet=self._bot_speaking and self._level() != "high")
                    await self._count(frame)
                    return result
            return ProcessFrameResult.CONTINUE

    return PersonaUserTurnStartStrategy


def _speculative(cls):
    """A stop strategy class that also answers speculatively (``speculative_inference``).

    At the first final transcript of a turn (local Whisper emits it at the VAD
    pause), while the strategy is still waiting (an "incomplete" Smart Turn
    verdict, or the silence timeout), the LLM starts on that text through
    Pipecat's speculation machinery: the user aggregator runs it on a
    provisional context and the LLM service holds the reply. If the user speaks
    again the speculation is withdrawn; when the turn ends on the same text the
    held reply is released instead of running the LLM again.
    """
    from pipecat.frames.frames import TranscriptionFrame, VADUserStartedSpeakingFrame
    from pipecat.turns.types import UserTurnSpeculation

    class Speculative(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._texts: list[str] = []
            self._speculated: str | None = None
            self._finished = False

        async def handle_user_turn_started(self):
            await super().handle_user_turn_started()
            self._texts, self._speculated, self._finished = [], None, False

        async def process_frame(self, frame):
            if isinstance(frame, VADUserStartedSpeakingFrame) and self._speculated is not None:
                self._speculated = None
                await self.trigger_user_turn_speculation_cancelled()
            if isinstance(frame, TranscriptionFrame) and frame.text.strip():
                self._texts.append(frame.text.strip())
            result = await super().process_frame(frame)
            if (isinstance(frame, TranscriptionFrame) and not self._finished
                    and self._speculated is None and self._texts):
                self._speculated = " ".join(self._texts)
                await self.trigger_user_turn_inference_triggered(
                    speculation=UserTurnSpeculation(text=self._speculated)
                )
            return result

        async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames=None):
            self._finished = True
            speculated, self._speculated = self._speculated, None
            if speculated is not None and speculated == " ".join(self._texts):
                await self.trigger_user_turn_finalized(
                    enable_user_speaking_frames=enable_user_speaking_frames,
                    confirms_speculation=True,
                )
                return
            if speculated is not None:
                await self.trigger_user_turn_speculation_cancelled()
            await super().trigger_user_turn_stopped(
                enable_user_speaking_frames=enable_user_speaking_frames
            )

    Speculative.__name__ = f"Speculative{cls.__name__}"
    return Speculative


def build_turn_strategies(
    plan: TurnPlan, interruptibility: str = "medium", speculative: bool = False,
    *, first_speech_uninterruptible: bool = False,
):
    """Pipecat ``UserTurnStrategies`` for the plan, interruptibility and speculation."""
    from pipecat.turns.user_stop import (
        SpeechTimeoutUserTurnStopStrategy,
        TurnAnalyzerUserTurnStopStrategy,
    )
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    start = [_start_strategy_class()(
        interruptibility, first_speech_uninterruptible=first_speech_uninterruptible)]
    if plan.model == "sparrow-1":
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

        analyzer = shared_smart_turn_v3(params=SmartTurnParams(stop_secs=plan.stop_secs))
        cls = TurnAnalyzerUserTurnStopStrategy
        stop = [(_speculative(cls) if speculative else cls)(turn_analyzer=analyzer)]
    else:
        cls = SpeechTimeoutUserTurnStopStrategy
        stop = [(_speculative(cls) if speculative else cls)(user_speech_timeout=plan.stop_secs)]
    return UserTurnStrategies(start=start, stop=stop)


# conversation.sensitivity / legacy STT values -> persona levels (inverted, as the Tavus
# migration guide maps participant_*_sensitivity onto the conversational_flow fields).
_SENSITIVITY_TO_LEVEL = {
    "superlow": "high", "verylow": "high", "low": "high", "medium": "medium", "high": "low",
    "auto": "medium",
}


class TurnController:
    """The live turn-taking settings of one conversation, changeable at run time."""

    def __init__(self, plan: TurnPlan, interruptibility: str = "medium", speculative: bool = False,
                 *, first_speech_uninterruptible: bool = False):
        self.plan = plan
        self.speculative = speculative
        self.strategies = build_turn_strategies(
            plan, interruptibility, speculative,
            first_speech_uninterruptible=first_speech_uninterruptible)
        self.vad = build_vad(plan.patience)
        self._interruptibility = interruptibility

    def attach(self, user_aggregator, assistant_aggregator) -> None:
        """Let a quiet turn that grows into a barge-in interrupt the replica through the
        user aggregator (as Pipecat's own turn start does), and tell the start strategy
        when the replica's first utterance has ended."""
        starts = [s for s in self.strategies.start or [] if hasattr(s, "first_speech_done")]
        for strategy in starts:
            strategy.interrupt = user_aggregator.broadcast_interruption

        @assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def _on_assistant_turn_stopped(_aggregator, _message):
            for strategy in starts:
                strategy.first_speech_done()

    @property
    def interruptibility(self) -> str:
        """How easily user speech interrupts the replica (verylow/low/medium/high)."""
        return self._interruptibility

    @interruptibility.setter
    def interruptibility(self, level: str) -> None:
        self._interruptibility = level
        for strategy in self.strategies.start or []:
            if hasattr(strategy, "interruptibility"):
                strategy.interruptibility = level

    def set_patience(self, patience: str) -> None:
        """Apply a patience level to the VAD and the running stop strategy."""
        from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

        secs = (SMART_TURN_INCOMPLETE_SECS if self.plan.model == "sparrow-1" else
                SPEECH_TIMEOUT_SECS)[patience]
        self.plan = TurnPlan(self.plan.model, patience, secs)
        set_vad_params(self.vad, self.vad.params.model_copy(
            update={"stop_secs": VAD_STOP_SECS[patience]}))
        for strategy in self.strategies.stop or []:
            analyzer = turn_analyzer_of(strategy)
            if analyzer is not None:
                set_smart_turn_stop_secs(analyzer, secs)
            elif isinstance(strategy, SpeechTimeoutUserTurnStopStrategy):
                set_speech_timeout(strategy, secs)

    def apply_sensitivity(self, pause: str, interrupt: str) -> None:
        """``conversation.sensitivity``: legacy pause/interrupt sensitivities."""
        self.set_patience(_SENSITIVITY_TO_LEVEL[pause])
        self.interruptibility = _SENSITIVITY_TO_LEVEL[interrupt]
        logger.info(
            f"Turn-taking now: patience {self.plan.patience} ({self.plan.stop_secs:g}s), "
            f"interruptibility {self.interruptibility}"
        )


def _persona_vad_class():
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    from services.pipecat_seam import vad_pause_secs

    class PersonaVAD(SileroVADAnalyzer):
        """Silero VAD that also tells listeners of a short pause inside speech.

        A listener (the local Whisper's early transcript, ``services/early_stt.py``) is
        called with ``True`` once the user has been silent for ``early_pause_secs`` while
        the VAD still counts them as speaking, and with ``False`` if they speak again
        before the VAD stops. The VAD's own states and timing are unchanged; this reads
        them after each analysis, on the event loop.
        """

        def __init__(self, *, early_pause_secs: float | None = None, **kwargs):
            super().__init__(**kwargs)
            self.early_pause_secs = early_pause_secs
            self._pause_listeners: list = []
            self._paused = False

        def add_pause_listener(self, listener) -> None:
            """``await listener(paused: bool)`` at each short pause and each resumption."""
            self._pause_listeners.append(listener)

        async def analyze_audio(self, buffer: bytes):
            state = await super().analyze_audio(buffer)
            if self._pause_listeners and self.early_pause_secs is not None:
                pause = vad_pause_secs(self)
                paused = pause is not None and pause >= self.early_pause_secs
                if pause == 0.0 and self._paused:
                    self._paused = False
                    await self._tell(False)
                elif paused and not self._paused:
                    self._paused = True
                    await self._tell(True)
                elif pause is None:
                    self._paused = False  # the VAD stopped: the segment is the STT's now
            return state

        async def _tell(self, paused: bool) -> None:
            for listener in self._pause_listeners:
                try:
                    await listener(paused)
                except Exception as exc:  # never let a listener break the VAD
                    logger.warning(f"VAD pause listener failed: {exc}")

    return PersonaVAD


def build_vad(patience: str = "medium"):
    """Silero VAD (bundled with Pipecat) with the stop time of the patience level, which
    reports short pauses to the early transcript (``services/early_stt.py``)."""
    from pipecat.audio.vad.vad_analyzer import VADParams

    from services.early_stt import EARLY_PAUSE_SECS

    return _persona_vad_class()(early_pause_secs=EARLY_PAUSE_SECS,
                                params=VADParams(stop_secs=VAD_STOP_SECS[patience]))
