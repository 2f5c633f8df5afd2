"""Tool calls from ``layers.llm.tools``: run locally, or hand them to the client.

Every call is checked, then announced to the room: a call the client is to execute as
Tavus's ``conversation.tool_call`` (pending before the event goes out, so an immediate result
is taken); any other one (a tool the bot runs itself, and a call the bot answers with an
error: an undeclared tool, arguments against the schema) as ``conversation.local_tool_call``
(by default; ``local_tool_call_events``), so that a Tavus front end that executes every
``conversation.tool_call`` never runs one the bot did not hand it. Then:

- arguments that fail the tool's JSON schema -> an error result, no handler runs. The schema
  is persona data: it is checked in a worker thread, never fetches a ``$ref``, matches
  patterns with RE2 (linear time) and bounds the arguments' size, and whatever goes wrong
  while checking is an error result too (``config/tool_schema.py``), so a hostile schema can
  neither stall the event loop (the audio) nor raise out of the dispatcher;
- a local handler (``tools/``) runs with a timeout; exceptions and timeouts
  become error results. Registered with ``cancel_on_interruption=True``: if the
  user interrupts the reply that asked for the call, Pipecat cancels it, so it
  never runs its side effects after the interruption (handlers commit their
  side effect in one step at the end, e.g. the fsync'd ticket line);
- no local handler -> the client answers with ``conversation.tool_result``
  (matched by ``tool_call_id``). Registered as an async call
  (``cancel_on_interruption=False``): the conversation is not held while the
  client works, and a result that arrives later, even while the user speaks,
  is still put into the context. With no answer within the timeout, the LLM is
  told so, and a result that comes later still (a client's slow action) is added to the
  context as a note for the next reply (:meth:`ToolDispatcher.late_result`; the call itself
  already has its answer). No call is left pending.

Results go back to the LLM as JSON: the handler's value on success,
``{"error": "..."}`` otherwise.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from loguru import logger

from config.logging import loggable
from config.persona import Tool
from config.tool_schema import ArgumentValidator
from tools.registry import ToolContext, ToolError, ToolRegistry

LATE_RESULTS = 64  # client calls that timed out whose result is still taken
LATE_RESULT_CHARS = 4000  # of a late result, at most this much goes into the context


def client_output(output: Any) -> Any:
    """A client's ``output`` as the LLM gets it. Tavus: "string | object; objects are
    JSON-serialised", and tavus-cli always sends a string, ``json.dumps`` of its object.
    Pipecat JSON-encodes every result once more, so a string of JSON is decoded first (the
    LLM reads ``{"a": 1}``, not ``"{\\"a\\": 1}"``); any other string stays as it is."""
    if isinstance(output, str) and output[:1] in ("{", "["):
        try:
            return json.loads(output)
        except ValueError:
            return output
    return output


class ToolDispatcher:
    """Routes the LLM's function calls to local handlers or to the client."""

    def __init__(
        self,
        tools: list[Tool],
        registry: ToolRegistry,
        *,
        conversation_id: str,
        data_dir: Path,
        announce=None,
        handler_timeout_secs: float = 10.0,
        client_timeout_secs: float = 30.0,
    ):
        self._tools = {t.function.name: t for t in tools}
        self._validators = {
            name: ArgumentValidator(t.function.parameters) for name, t in self._tools.items()
        }
        for name, validator in self._validators.items():
            if validator.refusal:  # only a schema that did not come through the persona loader
                logger.warning(f"Tool {name}: every call will fail: {validator.refusal}")
        self._registry = registry
        self._conversation_id = conversation_id
        self._data_dir = Path(data_dir)
        self._announce = announce  # async (name, arguments, tool_call_id) -> None
        self._handler_timeout = handler_timeout_secs
        self._client_timeout = client_timeout_secs
        self._pending: dict[str, asyncio.Future] = {}
        self._timed_out: dict[str, str] = {}  # call id -> tool name, the newest LATE_RESULTS

    @property
    def local_tools(self) -> list[str]:
        """Declared tools that run in this process."""
        return [n for n in self._tools if self._registry.get(n)]

    @property
    def client_tools(self) -> list[str]:
        """Declared tools handed to the client."""
        return [n for n in self._tools if not self._registry.get(n)]

    @property
    def pending(self) -> list[str]:
        """Tool call ids waiting for the client."""
        return list(self._pending)

    def tools_schema(self):
        """The persona's tools as Pipecat's ``ToolsSchema`` (None when there are none)."""
        if not self._tools:
            return None
        from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
        from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

        return ToolsSchema(
            standard_tools=[
                FunctionSchema(
                    name=t.function.name,
                    description=t.function.description,
                    properties=t.function.parameters.get("properties", {}),
                    required=t.function.parameters.get("required", []),
                )
                for t in self._tools.values()
            ]
        )

    def new_context(self):
        """A Pipecat ``LLMContext`` that offers the persona's tools (none: a plain context)."""
        from pipecat.processors.aggregators.llm_context import LLMContext

        schema = self.tools_schema()
        return LLMContext(tools=schema) if schema else LLMContext()

    def register(self, llm: Any) -> None:
        """Register the handlers on a Pipecat LLM service."""
        for name in self._tools:
            local = self._registry.get(name) is not None
            llm.register_function(name, self._handle, cancel_on_interruption=local)
        llm.register_function(None, self._handle)  # tools the persona never declared

    async def _handle(self, params: Any) -> None:
        name, call_id = params.function_name, params.tool_call_id
        arguments = params.arguments if isinstance(params.arguments, dict) else {}
        # Checked before it is announced: only a call the client must answer is announced as
        # one (conversation.tool_call), and it is pending before the client can hear of it.
        problem = await self._problem(name, call_id, arguments)
        client = problem is None and self._registry.get(name) is None
        if client:
            self._expect(call_id)
        try:
            if self._announce is not None:
                try:
                    await self._announce(name, dict(arguments), call_id, not client)
                except Exception as exc:  # an event that could not be sent must not lose the call
                    logger.warning(f"Tool call {name} ({call_id}) not announced: {exc}")
            result = await self._dispatch(name, call_id, dict(arguments), problem)
        finally:
            self._pending.pop(call_id, None)  # never left pending (cancelled, too)
        await params.result_callback(result)

    async def run(self, name: str, call_id: str, arguments: dict[str, Any]) -> Any:
        """Validate, dispatch and return the result (never raises for tool problems)."""
        problem = await self._problem(name, call_id, arguments)
        if problem is None and self._registry.get(name) is None:
            self._expect(call_id)
        return await self._dispatch(name, call_id, arguments, problem)

    async def _problem(self, name: str, call_id: str, arguments: dict[str, Any]) -> str | None:
        """Why the call cannot run (an undeclared tool, arguments against its schema), or None."""
        if name not in self._tools:
            return f"there is no tool named {name!r}"
        try:  # off the event loop: checking is CPU work, bounded but not free
            problem = await asyncio.to_thread(self._validators[name].check, arguments)
        except Exception as exc:  # check() never raises; a worker that cannot start must not either
            problem = f"the arguments could not be checked ({type(exc).__name__})"
        if problem:
            logger.warning(f"Tool {name} ({call_id}): {problem}")
        return problem

    async def _dispatch(self, name: str, call_id: str, arguments: dict[str, Any],
                        problem: str | None) -> Any:
        if problem:
            return {"error": problem}
        local = self._registry.get(name)
        if local is not None:
            return await self._run_local(local, call_id, arguments)
        return await self._wait_for_client(name, call_id)

    def _expect(self, call_id: str) -> None:
        """A client call is pending from now on (its result may come at once)."""
        self._pending[call_id] = asyncio.get_running_loop().create_future()

    async def _run_local(self, local: Any, call_id: str, arguments: dict[str, Any]) -> Any:
        timeout = local.timeout_secs or self._handler_timeout
        context = ToolContext(self._conversation_id, call_id, self._data_dir)
        try:
            value = await asyncio.wait_for(local.call(arguments, context), timeout)
        except TimeoutError:
            logger.warning(f"Tool {local.name} ({call_id}) timed out after {timeout:g}s")
            return {"error": f"the tool did not finish within {timeout:g} seconds"}
        except ToolError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            logger.exception(f"Tool {local.name} ({call_id}) raised: {exc}")
            return {"error": f"the tool failed ({type(exc).__name__})"}
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = json.loads(json.dumps(value, default=str))
        # The result may carry what the user said or asked for: its body only at DEBUG.
        result = json.dumps(value)
        logger.info(f"Tool {local.name} ({call_id}) answered ({len(result)} chars)")
        logger.debug(f"Tool {local.name} ({call_id}) -> {loggable(result)}")
        return value

    async def _wait_for_client(self, name: str, call_id: str) -> Any:
        future = self._pending[call_id]  # see _expect
        try:
            output, status = await asyncio.wait_for(future, self._client_timeout)
        except TimeoutError:
            logger.warning(f"Tool {name} ({call_id}): no result from the client")
            self._timed_out[call_id] = name
            while len(self._timed_out) > LATE_RESULTS:
                self._timed_out.pop(next(iter(self._timed_out)))
            return {"error": f"the client did not return a result within "
                             f"{self._client_timeout:g} seconds"}
        finally:
            self._pending.pop(call_id, None)
        if status == "error":
            return {"error": output if isinstance(output, str) else json.dumps(output)}
        return client_output(output)

    def resolve(self, call_id: str, output: Any, status: str = "success") -> bool:
        """The client's ``conversation.tool_result``; False if no such call is pending."""
        future = self._pending.get(call_id)
        if future is None or future.done():
            return False
        future.set_result((output, status))
        return True

    def late_result(self, call_id: str, output: Any, status: str = "success"
                    ) -> dict[str, Any] | None:
        """A result for a call that timed out: the context message that tells the LLM (None
        if no such call timed out; each call's late result is taken once)."""
        name = self._timed_out.pop(call_id, None)
        if name is None:
            return None
        text = output if isinstance(output, str) else json.dumps(output, default=str)
        if len(text) > LATE_RESULT_CHARS:
            text = text[:LATE_RESULT_CHARS] + " [cut]"
        outcome = "failed" if status == "error" else "returned"
        return {"role": "developer",
                "content": f"The {name} tool call ({call_id}) that timed out earlier has now "
                           f"{outcome}: {text}"}
