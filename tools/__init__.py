"""Local tool handlers, registered by tool name.

``build_registry()`` returns a registry with the built-in handlers
(``tools/builtin.py``) plus those of every other module in this package that
defines ``register(registry)``. To add your own, drop a module here:

    # tools/my_tools.py
    def register(registry):
        @registry.tool("lookup_order", timeout_secs=5)
        async def lookup_order(order_id: str) -> dict:
            return {"order_id": order_id, "status": "shipped"}
"""

from __future__ import annotations

import importlib
import pkgutil

from tools.builtin import OfflineWeather, WeatherProvider, register_builtin
from tools.registry import RegisteredTool, ToolContext, ToolError, ToolRegistry

__all__ = [
    "OfflineWeather",
    "RegisteredTool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "WeatherProvider",
    "build_registry",
]

_INTERNAL = {"builtin", "registry"}


def build_registry(weather: WeatherProvider | None = None) -> ToolRegistry:
    """A fresh registry: built-ins, then every ``register(registry)`` in this package."""
    registry = ToolRegistry()
    register_builtin(registry, weather)
    for module in pkgutil.iter_modules(__path__):
        if module.name in _INTERNAL or module.name.startswith("_"):
            continue
        register = getattr(importlib.import_module(f"{__name__}.{module.name}"), "register", None)
        if callable(register):
            register(registry)
    return registry
