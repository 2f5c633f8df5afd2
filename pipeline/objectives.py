"""Objectives as a state machine on ``pipecat.flows``: the persona pursues its goals.

One Flows node per objective. The node's ``role_message`` is the conversation's system
instruction (persona prompt, context, guardrails: :func:`config.prompt.system_prompt_for`)
plus the objective's prompt as the current task, so the persona prompt persists across
nodes and a ``conversation.overwrite_llm_context`` keeps the current task
(:meth:`ObjectiveFlow.instruction`). How an objective completes depends on the LLM:

- **function calls** (an LLM that calls tools): the node offers ``complete_objective``,
  whose parameters are the objective's ``output_variables`` (and, with
  ``next_conditional_objectives``, ``next_objective``: the branch whose condition holds);
  every node also offers ``reopen_objective`` (the user corrects an earlier answer) and the
  persona's own tools. Completing returns the next node to Flows, which moves there once
  the call's result is in the context and has the LLM speak the next objective's opening.
- **constrained extraction** (the embedded SmolLM2-135M, which cannot be trusted to call
  tools): after each user turn's reply has been given (off the audio path: the embedded
  server answers one request at a time), a JSON-schema-constrained call
  (:func:`services.structured.json_completion`) says whether the turn completed the
  objective, with the values, and any correction of an earlier objective's values. The
  next node is set for the next reply.

``confirmation_mode: manual``: the collected values go out as
``conversation.objective.pending`` and the objective completes only on an inbound
``conversation.objective.confirm`` (its ``output_variables`` correct the values).
Completion sends ``conversation.objective.completed``, records it, and POSTs
``{conversation_id, objective_name, output_variables}`` to the objective's ``callback_url``
through the durable callback dispatcher. After the last objective the persona carries on
as itself (a closing node with no task).

Known Pipecat Flows failure modes, and what is done about them:

- a barge-in cancelling the completion call (an orphan call that blocks transitions,
  pipecat#4165): the state here is the truth, updated when the call is made; a node Flows
  did not reach is set on the next user turn (:meth:`ObjectiveFlow._catch_up`);
- a node's opening spoken twice (pipecat#5091): the completion's result does not run the
  LLM (Flows' edge function), only the new node does; the first node is set without a
  reply of its own, the greeting asks its question;
- the LLM answering its own questions: each task says to ask and wait for the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger

from config.policies import Objective

Path = Literal["function_calls", "extraction"]
#: Whether the extraction of one user turn may take (a slow server: the turn is skipped).
EXTRACTION_TIMEOUT_SECS = 20.0
#: The conversation the extraction reads: the last few messages before the user's answer.
EXTRACTION_MESSAGES = 4
#: What a collected value may hold (longer values are cut).
MAX_VALUE_CHARS = 500

COMPLETE = "complete_objective"
REOPEN = "reopen_objective"


# --------------------------------------------------------------------------- the state machine


@dataclass
class ObjectiveState:
    """Where the conversation is in its objectives (no Pipecat in here: the truth Flows follows).

    ``current``: the objective being pursued (None once all are done); ``queue``: what comes
    after it; ``completed``: each completed objective's values (a re-opened one keeps its
    previous values until it completes again); ``pending``: a manual objective's values
    waiting for the participant's confirmation.
    """

    objectives: list[Objective]
    current: str | None = None
    queue: list[str] = field(default_factory=list)
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, str | None] = field(default_factory=dict)  # a pending one's branch
    skipped: list[str] = field(default_factory=list)  # visual, with no perception to see it
    perceives: bool = False  # perception runs: a visual objective is pursued, and seen
    _resume: list[str | None] = field(default_factory=list)  # where to go after a re-open
    _by_name: dict[str, Objective] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {o.objective_name: o for o in self.objectives}

    def get(self, name: str) -> Objective:
        return self._by_name[name]

    def start(self) -> str | None:
        self.current = self._pursuable(self.objectives[0].objective_name)
        return self.current

    def _pursuable(self, name: str | None) -> str | None:
        """``name``, or past it when it is visual and the conversation does not perceive
        (``layers.perception`` off or absent, or ``audio_only``): it is passed over to its
        required next objectives."""
        while name is not None and self.get(name).modality == "visual" and not self.perceives:
            if name not in self.skipped:
                self.skipped.append(name)
                logger.warning(f"Objectives: {name} is visual and this conversation does "
                               "not perceive video; passed over")
            self.queue = [n for n in [*self.get(name).next_required_objectives, *self.queue]
                          if n not in self.completed and n not in self.skipped]
            name = self.queue.pop(0) if self.queue else None
        return name

    @property
    def done(self) -> bool:
        return self.current is None

    @property
    def waiting(self) -> bool:
        """The current objective's values wait for the participant's confirmation."""
        return self.current is not None and self.current in self.pending

    def values_for(self, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        """The objective's output variables from ``raw`` (others dropped, strings cut)."""
        wanted = self.get(name).output_variables
        out: dict[str, Any] = {}
        for key in wanted:
            value = raw.get(key)
            if value is None:
                continue
            if not isinstance(value, (str, int, float, bool)):
                value = str(value)
            if isinstance(value, str):
                value = value.strip()[:MAX_VALUE_CHARS]
                if not value:
                    continue
            out[key] = value
        return out

    def missing(self, name: str, values: dict[str, Any]) -> list[str]:
        return [k for k in self.get(name).output_variables if k not in values]

    def finish(self, name: str, values: dict[str, Any], branch: str | None) -> str | None:
        """``name`` completed with ``values``: the next objective (None: all done).

        The chosen conditional branch comes first, then the required ones; objectives
        already completed are not pursued again. After a re-opened objective, the
        conversation resumes where it was."""
        objective = self.get(name)
        self.pending.pop(name, None)
        branch = self.branches.pop(name, branch)
        self.completed[name] = dict(values)
        if self._resume:
            following = self._resume.pop()
        else:
            nexts = []
            if branch and branch in objective.next_conditional_objectives:
                nexts.append(branch)
            nexts += objective.next_required_objectives
            self.queue = [n for n in [*nexts, *self.queue] if n not in self.completed]
            self.queue = list(dict.fromkeys(self.queue))
            following = self.queue.pop(0) if self.queue else None
        while following is not None and following in self.completed and following != name:
            following = self.queue.pop(0) if self.queue else None
        self.current = self._pursuable(following)
        return self.current

    def reopen(self, name: str) -> None:
        """The participant corrects a completed objective: it is pursued again, then back."""
        if self.current != name:
            self._resume.append(self.current)
        self.current = name


# --------------------------------------------------------------------------- Flows glue


Report = Callable[[str, Objective, dict[str, Any] | None], Awaitable[None]]


class ObjectiveFlow:
    """The objectives of one conversation, run on a Pipecat Flows ``FlowManager``.

    Args:
        objectives: the validated objectives (the first is where the conversation starts).
        path: ``function_calls`` or ``extraction`` (see the module docstring).
        llm: the conversation's LLM service (the extraction calls its endpoint).
        base_instruction: the conversation's system instruction without an objective
            (called again at each node: it follows ``conversation.*_llm_context``).
        persona_tools: the persona's own tools (a ``ToolsSchema`` or None), offered at every
            node beside the objective's functions.
        report: ``(event_type, objective, output_variables)``: sends the app message,
            records the event and queues the callback (the builder supplies it).
        context: the conversation's ``LLMContext`` (what the extraction reads).
    """

    def __init__(self, objectives: list[Objective], *, path: Path, llm: Any,
                 base_instruction: Callable[[], str], persona_tools: Any, report: Report,
                 context: Any, perceives: bool = False):
        self.state = ObjectiveState(objectives, perceives=perceives)
        self.path = path
        self._llm = llm
        self._base = base_instruction
        self._persona_tools = persona_tools
        self._report = report
        self._context = context
        self.manager: Any = None
        self._node: str | None = None  # the node Flows was last asked to set
        self._lock = asyncio.Lock()
        self._started = False
        self._extractions: set[asyncio.Task] = set()
        self._unjudged = ""  # the user's words since the last judged turn (extraction)

    # ------------------------------------------------------------------ start

    def attach(self, worker: Any, context_aggregator: Any) -> None:
        """Create the flow manager on the pipeline's worker; the first objective becomes
        active when the pipeline has started (before the greeting, which asks its question)."""
        self.manager = _flow_manager_class()(
            llm=self._llm, context_aggregator=context_aggregator, worker=worker,
            extra_tools=self._persona_tools,
        )

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker, _frame):
            await self.start()

    async def start(self) -> None:
        """Set the first node (once). The greeting awaits this too: it is queued after the
        node's instruction and tools, or it would be asked without them (the pipeline-started
        handler and the participant's arrival race)."""
        if self.manager is None:
            return
        async with self._lock:
            if self._started:
                return
            self._started = True
            name = self.state.start()
            await self.manager.initialize(self._node_config(name, respond=False))
            self._node = name
        if name is not None:
            await self._report("conversation.objective.activated", self.state.get(name), None)

    # ------------------------------------------------------------------ prompts

    def instruction(self, base: str | None = None) -> str:
        """The system instruction at the current node: ``base`` plus the current task."""
        base = self._base() if base is None else base
        return f"{base}\n\n{self._task_text()}".strip()

    def _task_text(self) -> str:
        state = self.state
        if state.current is None:
            return ("All of this conversation's objectives are complete: help the "
                    "participant with anything else, as yourself.")
        objective = state.get(state.current)
        if state.waiting:
            return (f"The details for {objective.objective_name} were sent to the "
                    "participant's screen: ask them to check and confirm them there.")
        lines: list[str] = []
        lines.append(f"Your current objective ({objective.objective_name}): "
                     f"{objective.objective_prompt.strip()}")
        if objective.modality == "visual":
            lines.append("It is completed by what the camera sees: ask the participant to "
                         "show it, and go on once it has been seen.")
            return "\n".join(lines)
        if objective.output_variables:
            lines.append("Find out: " + ", ".join(objective.output_variables) + ".")
        lines.append("Ask one question at a time and wait for the participant's answer; "
                     "never answer for them.")
        if self.path == "function_calls":
            lines.append(f"When the objective is done, call {COMPLETE} with what you learned. "
                         f"If the participant corrects an earlier answer, call {REOPEN}.")
        return "\n".join(lines)

    def _node_config(self, name: str | None, *, respond: bool) -> dict[str, Any]:
        functions = []
        if self.path == "function_calls":
            if name is not None:
                functions.append(self._complete_schema(self.state.get(name)))
            if self.state.completed:
                functions.append(self._reopen_schema())
        return {
            "name": _node_name(name),
            "role_message": self.instruction(),
            "task_messages": [],
            "functions": functions,
            "respond_immediately": respond,
        }

    def _complete_schema(self, objective: Objective) -> Any:
        from pipecat.flows import FlowsFunctionSchema

        properties: dict[str, Any] = {
            var: {"type": "string", "description": f"the participant's {var.replace('_', ' ')}"}
            for var in objective.output_variables
        }
        required = list(objective.output_variables)
        conditions = objective.next_conditional_objectives
        if conditions:
            described = "; ".join(f"{name}: {cond}" for name, cond in conditions.items())
            properties["next_objective"] = {
                "type": "string", "enum": [*conditions, "none"],
                "description": f"the objective whose condition holds ({described}); "
                               "none if no condition holds"}
            required.append("next_objective")
        return FlowsFunctionSchema(
            name=COMPLETE,
            description=(f"The objective {objective.objective_name} is done: "
                         f"{objective.objective_prompt.strip()[:300]}"),
            # Cancelled by a barge-in like any call (a call that is not is an "async tool" to
            # Pipecat, with a placeholder result and a longer system instruction); the state
            # is set by the time it could be cancelled, and the next user turn catches up.
            properties=properties, required=required, handler=self._on_complete,
            cancel_on_interruption=True,
        )

    def _reopen_schema(self) -> Any:
        from pipecat.flows import FlowsFunctionSchema

        return FlowsFunctionSchema(
            name=REOPEN,
            description="The participant wants to correct an answer they gave earlier: go "
                        "back to that objective.",
            properties={"objective_name": {"type": "string",
                                           "enum": list(self.state.completed)}},
            required=["objective_name"], handler=self._on_reopen, cancel_on_interruption=True,
        )

    # ------------------------------------------------------------------ function calls

    async def _on_complete(self, args: dict[str, Any], _manager: Any):
        async with self._lock:
            name = self.state.current
            if name is None:
                return {"status": "error", "error": "no objective is active"}, None
            values = self.state.values_for(name, args)
            missing = self.state.missing(name, values)
            if missing:
                return {"status": "error",
                        "error": f"still needed: {', '.join(missing)}; ask for them"}, None
            branch = args.get("next_objective")
            following = await self._collected(name, values, branch if branch != "none" else None)
        if following is _PENDING:
            # The node's instruction changes (ask to confirm); the LLM says so now.
            return ({"status": "waiting for the participant to confirm the values on screen"},
                    self._node_config(name, respond=True))
        self._node = following
        return {"status": "completed"}, self._node_config(following, respond=True)

    async def _on_reopen(self, args: dict[str, Any], _manager: Any):
        name = args.get("objective_name")
        async with self._lock:
            if name not in self.state.completed:
                return {"status": "error", "error": f"{name!r} is not a completed objective"}, None
            self.state.reopen(name)
        self._node = name
        await self._report("conversation.objective.activated", self.state.get(name), None)
        return {"status": "reopened"}, self._node_config(name, respond=True)

    # ------------------------------------------------------------------ completion

    async def _collected(self, name: str, values: dict[str, Any], branch: str | None):
        """Values for ``name`` are in: pending (manual) or completed; the next objective."""
        objective = self.state.get(name)
        if objective.confirmation_mode == "manual":
            self.state.pending[name] = dict(values)
            self.state.branches[name] = branch
            await self._report("conversation.objective.pending", objective, values)
            return _PENDING
        return await self._complete(name, values, branch)

    async def _complete(self, name: str, values: dict[str, Any], branch: str | None):
        following = self.state.finish(name, values, branch)
        await self._report("conversation.objective.completed", self.state.get(name), values)
        if following is not None:
            await self._report("conversation.objective.activated", self.state.get(following),
                               None)
        return following

    async def visual_seen(self, name: str) -> bool:
        """Perception saw what the visual objective ``name`` asks for: it completes if it is
        the one being pursued (True), else nothing happens (False; it is looked for again)."""
        async with self._lock:
            if self.state.current != name or self.state.get(name).modality != "visual":
                return False
            following = await self._complete(name, {}, None)
        await self._set_node(following, respond=True)
        return True

    async def confirm(self, name: str, corrected: dict[str, Any] | None) -> str | None:
        """``conversation.objective.confirm``: None, or why it is refused."""
        async with self._lock:
            if name not in self.state.pending:
                waiting = ", ".join(self.state.pending) or "none"
                return f"{name!r} is not waiting for confirmation (waiting: {waiting})"
            values = {**self.state.pending[name],
                      **self.state.values_for(name, corrected or {})}
            self.state.current = name  # it waited as the current objective
            following = await self._complete(name, values, None)
        await self._set_node(following, respond=True)
        return None

    async def _set_node(self, name: str | None, *, respond: bool) -> None:
        if self.manager is None:
            return
        self._node = name
        await self.manager.set_node_from_config(self._node_config(name, respond=respond))

    # ------------------------------------------------------------------ extraction

    def user_turn(self, text: str) -> None:
        """A user turn was committed (voice or text): catch Flows up. On the extraction
        path the turn is judged once the reply to it has been given (the embedded server
        answers one request at a time: judging it first would delay the reply)."""
        if self.manager is None:
            return
        self._unjudged = f"{self._unjudged} {text}".strip() if self._unjudged else text
        self._spawn(self._catch_up())

    def assistant_turn(self, _text: str) -> None:
        """The replica's reply was given (spoken, or cut short): judge the turn before it."""
        if self.manager is None or not self._unjudged or self.path != "extraction":
            return
        text, self._unjudged = self._unjudged, ""
        if self.state.current or self.state.completed:
            self._spawn(self._extract(text))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 - an objective must never end the conversation
                logger.warning(f"Objectives: a turn could not be judged: "
                               f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(guarded())
        self._extractions.add(task)
        task.add_done_callback(self._extractions.discard)

    async def _after_user_turn(self, text: str) -> None:
        """What a user turn leads to, at once (tests)."""
        await self._catch_up()
        if self.path == "extraction" and (self.state.current or self.state.completed):
            await self._extract(text)

    async def _catch_up(self) -> None:
        """Flows did not reach the node the state is at (a transition lost to a barge-in)."""
        wanted = _node_name(self.state.current)
        if self.manager is not None and self.manager.current_node != wanted:
            logger.debug(f"Objectives: setting node {wanted}, which Flows did not reach")
            await self._set_node(self.state.current, respond=False)

    async def _extract(self, text: str) -> None:
        from services.structured import json_completion

        state = self.state
        name = state.current
        schema, prompt = self._extraction_schema(name)
        if schema is None:
            return
        history = [m for m in self._context.get_messages()
                   if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
        # What came before the user's words (the question they answer): the trailing
        # replies and the user's messages that make up ``text`` are cut off.
        cut = len(history)
        while cut and history[cut - 1]["role"] == "assistant":
            cut -= 1
        while cut and history[cut - 1]["role"] == "user" and (
                history[cut - 1]["content"].strip() in text):
            cut -= 1
        history = history[:cut] if cut < len(history) else history
        dialog = "\n".join(f"{'Participant' if m['role'] == 'user' else 'You'}: {m['content']}"
                           for m in history[-EXTRACTION_MESSAGES:])
        messages = [
            {"role": "system", "content": prompt},
            {"role": "user", "content": f"{dialog}\nParticipant: {text}".strip()},
        ]
        verdict = await json_completion(self._llm, messages, schema, name="objective_progress",
                                        timeout_secs=EXTRACTION_TIMEOUT_SECS,
                                        what="Objectives: the extraction")
        if verdict is None:
            return
        async with self._lock:
            following: Any = None
            moved = False
            for done_name, fixes in (verdict.get("corrections") or {}).items():
                if done_name in state.completed and isinstance(fixes, dict):
                    fixed = state.values_for(done_name, fixes)
                    if fixed and fixed != {k: state.completed[done_name].get(k) for k in fixed}:
                        values = {**state.completed[done_name], **fixed}
                        state.completed[done_name] = values
                        await self._report("conversation.objective.completed",
                                           state.get(done_name), values)
            if (name is not None and state.current == name and not state.waiting
                    and verdict.get("completed") is True):
                values = state.values_for(name, verdict.get("values") or {})
                if not state.missing(name, values):
                    branch = verdict.get("next_objective")
                    following = await self._collected(
                        name, values, branch if branch not in (None, "none") else None)
                    moved = True
        if moved:
            await self._set_node(name if following is _PENDING else following, respond=False)

    def _extraction_schema(self, name: str | None) -> tuple[dict[str, Any] | None, str]:
        state = self.state
        properties: dict[str, Any] = {}
        required: list[str] = []
        lines = ["You check a conversation's progress. Answer in JSON only."]
        if name is not None and not state.waiting:
            objective = state.get(name)
            variables = objective.output_variables
            lines.append(f"The objective: {objective.objective_prompt.strip()}")
            lines.append("completed: true only if the participant's last answer achieves the "
                         "objective" + (f" and gives {', '.join(variables)}" if variables else "")
                         + "; false otherwise.")
            properties["completed"] = {"type": "boolean"}
            required.append("completed")
            if variables:
                # Required: the grammar makes even a 135M model write each one out.
                properties["values"] = {
                    "type": "object",
                    "properties": {v: {"type": "string"} for v in variables},
                    "required": list(variables),
                }
                required.append("values")
                lines.append("values: what the participant said for each, in their words "
                             "(empty if not said).")
            conditions = objective.next_conditional_objectives
            if conditions:
                properties["next_objective"] = {"type": "string", "enum": [*conditions, "none"]}
                required.append("next_objective")
                lines.append("next_objective: " + "; ".join(
                    f"{n} if {c}" for n, c in conditions.items()) + "; none otherwise.")
        done_vars = {n: state.get(n).output_variables for n in state.completed
                     if state.get(n).output_variables}
        if done_vars:
            properties["corrections"] = {"type": "object", "properties": {
                n: {"type": "object", "properties": {v: {"type": "string"} for v in vs}}
                for n, vs in done_vars.items()}}
            lines.append("corrections: only if the participant corrects an earlier answer ("
                         + "; ".join(f"{n}: {state.completed[n]}" for n in done_vars)
                         + "), the new value; otherwise leave it empty.")
        if not properties:
            return None, ""
        return {"type": "object", "properties": properties, "required": required}, "\n".join(lines)

    async def close(self) -> None:
        for task in list(self._extractions):
            task.cancel()


_PENDING = object()


def _node_name(objective: str | None) -> str:
    """The Flows node of an objective (``objectives_done`` after the last)."""
    return objective or "objectives_done"


def _flow_manager_class():
    """``FlowManager`` that also offers the persona's own tools at every node (Flows sets
    each node's tools with ``LLMSetToolsFrame``, which would otherwise drop them; their
    handlers stay the ones the tool dispatcher registered)."""
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.flows import FlowManager
    from pipecat.processors.aggregators.llm_context import NOT_GIVEN

    class PersonaFlowManager(FlowManager):
        def __init__(self, *, extra_tools: Any = None, **kwargs: Any):
            super().__init__(**kwargs)
            self._extra_tools = list(getattr(extra_tools, "standard_tools", None) or [])

        async def _update_llm_context(self, role_message, role_messages, task_messages,
                                      functions, strategy=None):
            if self._extra_tools:
                own = list(functions.standard_tools) if functions is not NOT_GIVEN else []
                names = {f.name for f in own}
                functions = ToolsSchema(standard_tools=[
                    *own, *(t for t in self._extra_tools if t.name not in names)])
            await super()._update_llm_context(role_message, role_messages, task_messages,
                                              functions, strategy)

    return PersonaFlowManager
