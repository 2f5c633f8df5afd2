"""The tool registry: local handlers for ``layers.llm.tools``, registered by name.

    registry = ToolRegistry()

    @registry.tool("get_current_time", timeout_secs=5)
    async def get_current_time(location: str) -> dict:
        ...

Handlers are ``async`` functions. They receive the tool's arguments (already
validated against the persona's JSON schema) as keyword arguments, plus a
:class:`ToolContext` if they declare a ``context`` parameter, and return
anything JSON-serialisable; it goes back to the LLM. A tool the persona
declares without a local handler is handed to the client as a
``conversation.tool_call`` event instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Handler = Callable[..., Awaitable[Any]]


class ToolError(ValueError):
    """A tool could not do what was asked; the message goes back to the LLM as the error."""


@dataclass(frozen=True)
class ToolContext:
    """What a handler may want to know about the call."""

    conversation_id: str
    tool_call_id: str
    data_dir: Path


@dataclass(frozen=True)
class RegisteredTool:
    """A local handler and its options."""

    name: str
    handler: Handler
    timeout_secs: float | None = None
    wants_context: bool = False

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Run the handler with the arguments (and the context if it asks for it)."""
        if self.wants_context:
            return await self.handler(**arguments, context=context)
        return await self.handler(**arguments)


class ToolRegistry:
    """Tool name -> local handler."""

    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def tool(self, name: str | None = None, *, timeout_secs: float | None = None):
        """Decorator registering an async handler under ``name`` (default: the function name)."""

        def decorate(handler: Handler) -> Handler:
            self.add(name or handler.__name__, handler, timeout_secs=timeout_secs)
            return handler

        return decorate

    def add(self, name: str, handler: Handler, *, timeout_secs: float | None = None) -> None:
        """Register ``handler`` for ``name`` (the same as the decorator)."""
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"tool handler for {name!r} must be an async function")
        if name in self._tools:
            raise ValueError(f"a handler for tool {name!r} is already registered")
        wants_context = "context" in inspect.signature(handler).parameters
        self._tools[name] = RegisteredTool(name, handler, timeout_secs, wants_context)

    def get(self, name: str) -> RegisteredTool | None:
        """The handler for ``name``, or None (the client handles it)."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Every registered tool name."""
        return sorted(self._tools)
