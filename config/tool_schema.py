"""Tool schemas are data, not code: what a persona's tool schema may contain, and how
arguments are checked against it.

A tool's ``function.parameters`` is JSON Schema written by whoever wrote the persona, and it
is evaluated against arguments that an LLM made up. Evaluated by jsonschema as it comes, that
data could make the bot fetch URLs (a remote ``$ref``), recurse until the stack runs out
(``{"$ref": "#"}``), or run a backtracking regular expression on the event loop for many
seconds (``"pattern": "^(a+)+$"``), and a very deep schema could crash the loader. So:

At load (:func:`schema_problems`, called by ``config/persona.py``; every problem is reported,
each with its JSON path below ``parameters``):

- size first, without recursion, so that nothing below ever sees a deeper document: at most
  ``MAX_SCHEMA_DEPTH`` (32) nested objects/arrays and ``MAX_SCHEMA_NODES`` (10,000) JSON
  values per tool. Real tool schemas are a few levels and a few hundred values;
- it must be valid JSON Schema (draft 2020-12, the metaschema);
- ``$ref`` and ``$dynamicRef`` must be local (start with ``#``) and point at something in
  the schema; ``$id`` is allowed only at the top (a nested ``$id`` would change what ``#``
  means below it). Nothing is ever fetched;
- a chain of references and in-place keywords (``allOf``, ``anyOf``, ``oneOf``, ``not``,
  ``if``/``then``/``else``, ``dependentSchemas``, ``$ref``, ``$dynamicRef``) that comes back
  to where it started without descending into a property or an item would evaluate the same
  value forever: refused. Recursion through ``properties``/``items`` (a tree) is fine: each
  step goes one level down the arguments, which are bounded. References that branch and
  re-join (``allOf: [{$ref: A}, {$ref: A}]`` at each of 30 levels) are bounded too: at most
  ``MAX_EXPANSION`` (10,000) subschemas apply to one value once references are followed;
- every ``pattern`` and ``patternProperties`` key must compile with RE2 (below);
- ``unevaluatedProperties`` together with ``patternProperties`` is refused: jsonschema
  matches the patterns again inside its own ``unevaluatedProperties`` code with Python's
  ``re``, which cannot be swapped for RE2 from outside.

At call time (:class:`ArgumentValidator`, used by ``pipeline/tool_dispatch.py``):

- the same checks run when the validator is built, so a schema that did not come through the
  persona loader is judged the same way; a schema that fails them is never evaluated, and
  every call of that tool gets an error;
- references resolve through a ``referencing.Registry`` whose retrieve function refuses every
  URI: even a remote reference that got this far is an error, never a request;
- ``pattern``, ``patternProperties`` and ``additionalProperties`` (which consults
  ``patternProperties``) match with RE2;
- arguments larger than ``MAX_ARGUMENT_BYTES`` (64 KiB of JSON) or nested deeper than
  ``MAX_ARGUMENT_DEPTH`` (32) are refused before validation;
- :meth:`ArgumentValidator.check` never raises: any exception (a ``RecursionError``, a
  reference that does not resolve) is an error message. The dispatcher runs it in a worker
  thread, off the event loop.

Why RE2 (``google-re2``) and not the ``regex`` package with ``timeout=``: RE2 matches in time
linear in the input by construction, so there is no timeout to tune and no core burnt until a
timeout fires on every call; the patterns it refuses are exactly the backtracking features
(lookahead/lookbehind, backreferences, possessive quantifiers, atomic groups), which tool
argument patterns do not need. It is Google's own binding, with manylinux wheels for CPython
3.11-3.13 and no dependencies. Differences from the ECMA-262 patterns JSON Schema names, as
users will meet them: no ``(?=``, ``(?!``, ``(?<=``, ``(?<!``, ``\\1`` or ``\\k<name>``;
repetition counts at most 1000; ``\\uXXXX`` and ``\\u{X...}`` are translated to RE2's
``\\x{...}``; ``\\s`` is ASCII whitespace; ``\\d`` and ``\\w`` are ASCII (as in ECMA-262). Like
jsonschema, a pattern is searched for anywhere in the string (anchor it with ``^...$``).
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from typing import Any
from urllib.parse import unquote

import re2
import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from config.errors import FieldProblem

MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 10_000
MAX_EXPANSION = 10_000
MAX_ARGUMENT_BYTES = 64 * 1024
MAX_ARGUMENT_DEPTH = 32
MAX_MESSAGE_CHARS = 300

Path = tuple[str | int, ...]

# --------------------------------------------------------------------------- regular expressions

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print each refused pattern to stderr itself

# \uXXXX and \u{X...} (ECMA-262) -> \x{...} (RE2); any other escape is kept as it is, so that
# an escaped backslash followed by "u" stays literal. No nested quantifiers: linear in re.
_ECMA_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|u\{([0-9A-Fa-f]{1,6})\}|(.))", re.DOTALL)


def _to_re2(pattern: str) -> str:
    def swap(match: re.Match) -> str:
        code = match.group(1) or match.group(2)
        return f"\\x{{{code}}}" if code else match.group(0)

    return _ECMA_ESCAPE.sub(swap, pattern)


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """A JSON Schema pattern compiled by RE2 (cached: patterns come from personas, not from
    arguments). Raises ``re2.error`` for a pattern RE2 does not accept."""
    return re2.compile(_to_re2(pattern), _RE2_OPTIONS)


def pattern_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern``, or None when it compiles."""
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return str(reason)
    return None


# --------------------------------------------------------------------------- load-time checks

# Draft 2020-12 keywords whose values are subschemas, by shape and by whether they apply to
# the same value (in place) or to a part of it (a property, an item, a key).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCEND_ONE = ("items", "contains", "additionalProperties", "propertyNames",
                "unevaluatedItems", "unevaluatedProperties")
_DESCEND_MANY = ("prefixItems",)
_DESCEND_MAP = ("properties", "patternProperties")
_DEFINITIONS = ("$defs", "definitions")  # applied only through references

# The metaschema check: no format checker, so "format": "regex" is not judged by Python's re
# (RE2 judges patterns, below). The metaschema's own references are all in memory.
_METASCHEMA = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def schema_problems(schema: Any) -> list[FieldProblem]:
    """Everything wrong with one tool's parameters schema; paths are below ``parameters``."""
    problems = _size_problems(schema)
    if problems:
        return problems  # the checks below recurse: they never see an oversized schema
    problems = [
        FieldProblem(tuple(error.path), f"is not valid JSON Schema: {error.message}")
        for error in sorted(_METASCHEMA.iter_errors(schema), key=lambda e: [str(p) for p in e.path])
    ]
    return problems + _Walk(schema).problems


def _json_values(value: Any):
    """Every JSON value in ``value`` with its depth (1 at the top), without recursion; a
    container's children come only after it is yielded, so stopping early walks no further."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def _size_problems(schema: Any) -> list[FieldProblem]:
    for nodes, (value, depth) in enumerate(_json_values(schema), start=1):
        if nodes > MAX_SCHEMA_NODES:
            return [FieldProblem((), f"has more than {MAX_SCHEMA_NODES} JSON values; a tool "
                                     f"schema may have at most {MAX_SCHEMA_NODES}")]
        if isinstance(value, dict | list) and depth > MAX_SCHEMA_DEPTH:
            return [FieldProblem((), f"is nested more than {MAX_SCHEMA_DEPTH} levels deep "
                                     f"(objects and arrays); a tool schema may nest at most "
                                     f"{MAX_SCHEMA_DEPTH}")]
    return []


def _subschemas(schema: dict[str, Any]):
    """``(keyword path, subschema, in place?)`` for each subschema of ``schema``."""
    def each(keyword, value, in_place):
        if isinstance(value, (dict, bool)):
            yield (keyword,), value, in_place

    for keyword in _IN_PLACE_ONE + _DESCEND_ONE:
        if keyword in schema:
            yield from each(keyword, schema[keyword], keyword in _IN_PLACE_ONE)
    for keyword in _IN_PLACE_MANY + _DESCEND_MANY:
        if isinstance(schema.get(keyword), list):
            for i, sub in enumerate(schema[keyword]):
                if isinstance(sub, (dict, bool)):
                    yield (keyword, i), sub, keyword in _IN_PLACE_MANY
    for keyword in _IN_PLACE_MAP + _DESCEND_MAP + _DEFINITIONS:
        if isinstance(schema.get(keyword), dict):
            for name, sub in schema[keyword].items():
                if isinstance(sub, (dict, bool)):
                    yield (keyword, name), sub, keyword in _IN_PLACE_MAP


def _fragment(path: Path) -> str:
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class _Walk:
    """Walks every schema of one tool schema: its subschemas and whatever references reach.

    Builds the graph of in-place edges (keywords that apply to the same value, and references)
    to find cycles and the expansion size.
    """

    def __init__(self, root: Any):
        self.root = root
        self.problems: list[FieldProblem] = []
        self.anchors: dict[str, list[Path]] = {}
        self.edges: dict[Path, list[tuple[Path, Path]]] = {}
        self.order: list[Path] = []
        self._collect_anchors()
        self._walk()
        self._cycles_and_expansion()

    def _collect_anchors(self) -> None:
        stack: list[tuple[Path, Any]] = [((), self.root)]
        while stack:
            path, schema = stack.pop()
            if not isinstance(schema, dict):
                continue
            for keyword in ("$anchor", "$dynamicAnchor"):
                if isinstance(schema.get(keyword), str):
                    self.anchors.setdefault(schema[keyword], []).append(path)
            stack.extend((path + suffix, sub) for suffix, sub, _ in _subschemas(schema))

    def _walk(self) -> None:
        seen: set[Path] = {()}
        queue: deque[tuple[Path, Any]] = deque([((), self.root)])  # breadth first: document order
        unevaluated: list[Path] = []
        pattern_properties = False
        while queue:
            path, schema = queue.popleft()
            self.order.append(path)
            if not isinstance(schema, dict):
                continue
            edges = self.edges.setdefault(path, [])
            if path and "$id" in schema:
                self._problem(path + ("$id",), "is only allowed at the top of a tool schema "
                              "(references are resolved against the whole schema)", schema["$id"])
            for keyword in ("$ref", "$dynamicRef"):
                if keyword in schema:
                    for target in self._resolve(path + (keyword,), schema[keyword]):
                        edges.append(((keyword,), target))
                        if target not in seen:
                            seen.add(target)
                            queue.append((target, self._at(target)))
            if isinstance(schema.get("pattern"), str):
                reason = pattern_error(schema["pattern"])
                if reason:
                    self._problem(path + ("pattern",), _refused(reason), schema["pattern"])
            if isinstance(schema.get("patternProperties"), dict):
                pattern_properties = True
                for key in schema["patternProperties"]:
                    reason = pattern_error(key)
                    if reason:
                        self._problem(path + ("patternProperties", key), _refused(reason), key)
            if "unevaluatedProperties" in schema:
                unevaluated.append(path + ("unevaluatedProperties",))
            for suffix, sub, in_place in _subschemas(schema):
                child = path + suffix
                if in_place:
                    edges.append((suffix, child))
                if child not in seen:
                    seen.add(child)
                    queue.append((child, sub))
        if pattern_properties and unevaluated:
            self._problem(min(unevaluated, key=len), "cannot be combined with patternProperties "
                          "in a tool schema (jsonschema would match those patterns with Python's "
                          "backtracking re)")

    def _resolve(self, where: Path, ref: Any) -> list[Path]:
        """The schemas a local reference points at ([] after reporting a problem)."""
        if not isinstance(ref, str):
            return []  # the metaschema check reports it
        if not ref.startswith("#"):
            self._problem(where, "must be a local reference starting with '#'; references to "
                          "other documents (URLs, files) are not fetched", ref)
            return []
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            targets = self.anchors.get(fragment, [])
        else:
            target = self._pointer(fragment)
            targets = [] if target is None else [target]
        if not targets:
            self._problem(where, "points at nothing in this schema", ref)
            return []
        for target in targets:
            if not isinstance(self._at(target), (dict, bool)):
                self._problem(where, "points at a value that is not a schema", ref)
                return []
        return targets

    def _pointer(self, pointer: str) -> Path | None:
        value: Any = self.root
        path: list[str | int] = []
        for token in pointer.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and token in value:
                value = value[token]
                path.append(token)
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
                path.append(int(token))
            else:
                return None
        return tuple(path)

    def _at(self, path: Path) -> Any:
        value = self.root
        for part in path:
            value = value[part]
        return value

    def _cycles_and_expansion(self) -> None:
        state: dict[Path, int] = {}  # 1: on the current chain, 2: done
        size: dict[Path, int] = {}
        cyclic = False
        for start in self.order:
            if start in state:
                continue
            state[start] = 1
            chain = [start]
            stack = [(start, iter(self.edges.get(start, ())))]
            while stack:
                node, edges = stack[-1]
                for suffix, target in edges:
                    if state.get(target) == 1:
                        cyclic = True
                        loop = chain[chain.index(target):] + [target]
                        self._problem(node + suffix, "refers back to "
                                      f"{_fragment(target)} without descending into a property "
                                      "or an item: it would evaluate the same value forever ("
                                      + " -> ".join(_fragment(p) for p in loop[:8]) + ")")
                    elif target not in state:
                        state[target] = 1
                        chain.append(target)
                        stack.append((target, iter(self.edges.get(target, ()))))
                        break
                else:
                    stack.pop()
                    chain.pop()
                    state[node] = 2
                    total = 1 + sum(size.get(t, 0) for _, t in self.edges.get(node, ()))
                    size[node] = min(total, MAX_EXPANSION + 1)
        if cyclic:
            return
        worst = max(self.order, key=lambda p: size.get(p, 0), default=())
        if size.get(worst, 0) > MAX_EXPANSION:
            self._problem(worst, f"applies more than {MAX_EXPANSION} subschemas to one value once "
                          f"its references are followed (they branch and re-join); at most "
                          f"{MAX_EXPANSION}")

    def _problem(self, path: Path, message: str, *value: Any) -> None:
        self.problems.append(FieldProblem(path, message, *value))


def _refused(reason: str) -> str:
    return (f"is not a pattern RE2, the linear-time regex engine, accepts ({reason}); "
            "lookaround, backreferences and possessive quantifiers are not supported")


# --------------------------------------------------------------------------- call time


def _refuse_to_fetch(uri: str) -> Any:
    """The registry's retrieve function: a tool schema never makes the bot fetch anything."""
    raise referencing.exceptions.NoSuchResource(ref=uri)


NO_FETCH_REGISTRY: referencing.Registry = referencing.Registry(retrieve=_refuse_to_fetch)


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = compile_pattern(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    properties = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    return {key for key in instance
            if key not in properties and not any(p.search(key) for p in patterns)}


def _additional_properties(validator, additional, instance, schema):
    # jsonschema's own, with the patternProperties lookup done by RE2.
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(each) for each in sorted(extras))
        if "patternProperties" in schema:
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{names} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({names} {verb} unexpected)"
            )


SafeValidator = validators.extend(
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


def safe_validator(schema: Any) -> Any:
    """A jsonschema validator for ``schema`` that matches patterns with RE2 and never fetches.

    Not checked: use :class:`ArgumentValidator`, which runs :func:`schema_problems` first.
    """
    return SafeValidator(schema, registry=NO_FETCH_REGISTRY)


def _argument_problem(arguments: Any) -> str | None:
    for value, depth in _json_values(arguments):
        if isinstance(value, dict | list) and depth > MAX_ARGUMENT_DEPTH:
            return f"nested more than {MAX_ARGUMENT_DEPTH} levels deep"
    size = len(json.dumps(arguments, ensure_ascii=False).encode("utf-8"))
    if size > MAX_ARGUMENT_BYTES:
        return f"{size} bytes of JSON; at most {MAX_ARGUMENT_BYTES}"
    return None


class ArgumentValidator:
    """Checks one tool's arguments against its parameters schema, safely."""

    def __init__(self, schema: Any):
        try:
            problems = schema_problems(schema)
        except Exception as exc:  # built at session start: a bad schema must not end the session
            problems = [FieldProblem((), f"could not be checked ({type(exc).__name__})")]
        self.refusal: str | None = None
        self._validator = None
        if problems:
            first = problems[0]
            where = "/".join(str(p) for p in first.path) or "parameters"
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            self.refusal = (f"the tool's parameters schema cannot be used ({where}: "
                            f"{first.args[0]}{more})")
        else:
            self._validator = safe_validator(schema)

    def check(self, arguments: Any) -> str | None:
        """What is wrong with ``arguments`` (one line), or None when they are valid.

        Never raises. CPU-bound: the dispatcher runs it in a worker thread.
        """
        if self.refusal is not None:
            return self.refusal
        try:
            too_big = _argument_problem(arguments)
            if too_big:
                return f"invalid arguments: arguments: {too_big}"
            errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        except Exception as exc:  # a RecursionError, a reference that does not resolve, ...
            return ("the arguments could not be checked against the tool's schema "
                    f"({type(exc).__name__})")
        if not errors:
            return None
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "arguments"
        message = first.message  # quotes the bad value: keep the answer to the LLM short
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        return f"invalid arguments: {where}: {message}"
