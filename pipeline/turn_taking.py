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

| replica_interruptibility | while the replica speaks, a user turn (and barge-in) starts on |
| --- | --- |
| high | any speech (VAD) |
| medium (default) | 2 transcribed words |
| low | 4 transcribed words |
| verylow | nothing interrupts: the user's turn is taken, the replica finishes first |

While the replica is silent every level starts a turn on speech at once.
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
        """Starts user turns on speech; while the replica talks, applies its interruptibility."""

        def __init__(self, interruptibility: str = "medium", **kwargs):
            super().__init__(**kwargs)
            self.interruptibility = interruptibility
            self._bot_speaking = False

        async def process_frame(self, frame):
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot_speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._bot_speaking = False
            elif isinstance(frame, VADUserStartedSpeakingFrame):
                if not self._bot_speaking or self.interruptibility == "high":
                    await self.trigger_user_turn_started()
                    return ProcessFrameResult.STOP
                if self.interruptibility == "verylow":
                    await self.trigger_user_turn_started(enable_interruptions=False)
                    return ProcessFrameResult.STOP
            elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
                words = len(frame.text.split())
                if not self._bot_speaking or self.interruptibility == "high":
                    if words:
                        await self.trigger_user_turn_started()
                        return ProcessFrameResult.STOP
                elif self.interruptibility == "verylow":
                    await self.trigger_user_turn_started(enable_interruptions=False)
                    return ProcessFrameResult.STOP
                elif words >= BARGE_IN_WORDS[self.interruptibility]:
                    await self.trigger_user_turn_started()
                    return ProcessFrameResult.STOP
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
    plan: TurnPlan, interruptibility: str = "medium", speculative: bool = False
):
    """Pipecat ``UserTurnStrategies`` for the plan, interruptibility and speculation."""
    from pipecat.turns.user_stop import (
        SpeechTimeoutUserTurnStopStrategy,
        TurnAnalyzerUserTurnStopStrategy,
    )
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    start = [_start_strategy_class()(interruptibility)]
    if plan.model == "sparrow-1":
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        analyzer = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=plan.stop_secs))
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

    def __init__(self, plan: TurnPlan, interruptibility: str = "medium", speculative: bool = False):
        self.plan = plan
        self.speculative = speculative
        self.strategies = build_turn_strategies(plan, interruptibility, speculative)
        self.vad = build_vad(plan.patience)
        self._interruptibility = interruptibility

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


def build_vad(patience: str = "medium"):
    """Silero VAD (bundled with Pipecat) with the stop time of the patience level."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams

    return SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS[patience]))
