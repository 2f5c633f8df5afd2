"""Perception: what the persona sees (camera, shared screen) and hears in the user's voice.

Tavus's Raven does this server-side; here it runs in the bot, off the audio path:

- ``detectors``: the embedded default, small local models that ship their weights (OpenCV's
  Haar cascades, facex's facial-expression TFLite model, rapidocr's ONNX OCR);
- ``vision``: a vision-capable OpenAI-compatible model instead, when one is named;
- ``audio``: tone from the voice itself (energy, pitch, pace) and the words' sentiment (VADER);
- ``rules``: which detector can answer a question asked in words, honestly ("cannot tell");
- ``state``: the observations, the system message the LLM gets each turn, the end-of-call
  analysis.

The frame processors are in ``pipeline/perception.py``. :func:`plan_for` decides what runs:
``layers.perception`` absent or ``perception_model: off`` runs nothing (no video is captured
and no detector is loaded); a conversation with ``audio_only`` perceives the voice only;
``raven-0`` the camera and screen only (as on Tavus, audio perception is raven-1's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perception.rules import audio_tones, route, tool_text
from perception.vision import VisionConfig, vision_config


@dataclass(frozen=True)
class PerceptionPlan:
    """What perception does in one conversation."""

    layer: Any  # config.persona.PerceptionLayer
    visual: bool
    hears: bool
    fps: float
    cpu_budget: float
    stale_secs: float
    vision: VisionConfig | None = None
    visual_guardrails: list[Any] = field(default_factory=list)
    visual_objectives: list[Any] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.visual or self.hears

    @property
    def camera_text(self) -> bool:
        """Whether camera frames are also read for text (an ID card query or tool needs it)."""
        texts = [*self.layer.visual_awareness_queries,
                 *(tool_text(t) for t in self.layer.visual_tools),
                 *(g.guardrail_prompt for g in self.visual_guardrails),
                 *(o.objective_prompt for o in self.visual_objectives)]
        return any((rule := route(t)) is not None and rule.needs_camera_text for t in texts)

    def describe(self) -> list[str]:
        """Lines for ``--check``."""
        if not self.active:
            return ["perception off"]
        layer = self.layer
        sides = [s for s, on in (("camera and screen share", self.visual),
                                 ("the user's voice", self.hears)) if on]
        head = f"{layer.perception_model}: {' and '.join(sides)}"
        if self.visual:
            head += (f"; {self.fps:g} frames/s per video source, at most {self.cpu_budget:.0%} "
                     f"of a core, observations older than {self.stale_secs:g}s are not shown "
                     "to the LLM")
        lines = [head]
        if self.visual:
            if self.vision is not None:
                lines.append(f"visual queries, tools and checks go to the vision model "
                             f"{self.vision.describe()}")
                if not self.vision.api_key and not self.vision.base_url:
                    lines.append("  WARNING: no key for it (vision_api_key, "
                                 "PERCEPTION_VISION_API_KEY or OPENAI_API_KEY): every look "
                                 "will fail and nothing will be perceived")
            else:
                lines.append("visual queries, tools and checks: local detectors (faces, eyes, "
                             "smiles, facial expression, screen text)")
                if layer.vision_base_url:
                    lines.append("  WARNING: vision_base_url is set but no vision_model "
                                 "(nor PERCEPTION_VISION_MODEL): it is not used")
                for query in layer.visual_awareness_queries:
                    rule = route(query)
                    lines.append(f"  query {query!r}: "
                                 + (f"answered by {rule.name}" if rule else "cannot tell offline"))
                for tool in layer.visual_tools:
                    rule = route(tool_text(tool))
                    lines.append(f"  visual tool {tool.function.name}: "
                                 + (f"fires on {rule.name}" if rule else
                                    "never fires offline (needs a vision model)"))
                for policy, text in ([(g.guardrail_name, g.guardrail_prompt)
                                      for g in self.visual_guardrails]
                                     + [(o.objective_name, o.objective_prompt)
                                        for o in self.visual_objectives]):
                    rule = route(text)
                    lines.append(f"  visual {policy}: "
                                 + (f"decided by {rule.name}" if rule else
                                    "cannot be decided offline (needs a vision model)"))
        if self.hears:
            from perception.audio import can_answer

            for query in layer.audio_awareness_queries:
                routed = can_answer(query)
                lines.append(f"  audio query {query!r}: "
                             + ("answered from the voice's tone" if routed else
                                "cannot tell from the audio"))
            for tool in layer.audio_tools:
                tones = audio_tones(tool_text(tool))
                lines.append(f"  audio tool {tool.function.name}: "
                             + (f"fires on {', '.join(sorted(tones))}" if tones else
                                "never fires (no tone matches its description)"))
        if layer.perception_analysis_queries:
            lines.append("end-of-call analysis (application.perception_analysis) answers:")
            for query in layer.perception_analysis_queries:
                rule = route(query)
                how = ("by the vision model, from the call's looks" if self.vision is not None
                       else f"from {rule.name} over the call" if rule else "cannot tell offline")
                lines.append(f"  {query!r}: {how}")
        return lines


def plan_for(app: Any) -> PerceptionPlan | None:
    """The conversation's perception, or None when it has none (nothing is built or loaded)."""
    layer = app.persona.layers.perception
    if layer is None or layer.perception_model == "off" or app.options.echo:
        return None
    settings = app.settings
    visual = layer.visual and not app.conversation.audio_only
    policies = app.policies
    plan = PerceptionPlan(
        layer=layer, visual=visual, hears=layer.hears, fps=settings.perception_fps,
        cpu_budget=settings.perception_cpu_budget, stale_secs=settings.perception_stale_secs,
        vision=vision_config(layer, settings) if visual else None,
        visual_guardrails=[g for g in policies.guardrails if g.modality == "visual"] if visual else [],
        visual_objectives=[o for o in policies.objectives if o.modality == "visual"] if visual else [],
    )
    return plan if plan.active else None
