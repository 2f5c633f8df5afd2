"""Tool schemas are data, not code (config/tool_schema.py): a persona's tool schema cannot
make the bot fetch a URL, recurse forever, stall the event loop on a backtracking pattern, or
crash the loader by its depth. The probe's cases, at load and at call time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from config import ConfigError, persona_from_dict, tool_schema
from config.persona import Tool, ToolFunction
from config.tool_schema import (
    MAX_ARGUMENT_DEPTH,
    MAX_EXPANSION,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    ArgumentValidator,
    safe_validator,
)
from pipeline.tool_dispatch import ToolDispatcher
from tests.conftest import ROOT
from tools import ToolRegistry

CATASTROPHIC = "^(a+)+$"
EVIL_WORD = "a" * 28 + "!"  # ~18 s of backtracking in Python's re


def tool(name, parameters):
    return {"type": "function", "function": {"name": name, "description": name,
                                             "parameters": parameters}}


def persona(*tools):
    return {"system_prompt": "x", "layers": {"llm": {"tools": list(tools)}}}


def load_problems(*tools, data=None):
    with pytest.raises(ConfigError) as info:
        persona_from_dict(data or persona(*tools), "p.json")
    return [p.render() for p in info.value.problems]


def loaded_dispatcher(tools, tmp_path, registry=None):
    loaded = persona_from_dict(persona(*tools)).value
    return ToolDispatcher(loaded.layers.llm.tools, registry or ToolRegistry(),
                          conversation_id="c1", data_dir=tmp_path, client_timeout_secs=0.2)


def unchecked_dispatcher(name, parameters, tmp_path):
    """A dispatcher for a schema that never went through the persona loader."""
    raw = Tool.model_construct(type="function", function=ToolFunction.model_construct(
        name=name, description=name, parameters=parameters))
    return ToolDispatcher([raw], ToolRegistry(), conversation_id="c1", data_dir=tmp_path,
                          client_timeout_secs=0.2)


def nested(levels: int) -> dict:
    """An object schema whose JSON is ``levels`` objects deep (properties/a/... below)."""
    schema: dict = {"type": "object"}
    depth = 1
    while depth + 2 <= levels:
        schema = {"type": "object", "properties": {"a": schema}}
        depth += 2
    return schema if depth == levels else {"type": "object", "additionalProperties": schema}


# --------------------------------------------------------------------------- remote $ref


class CountingServer:
    """A local HTTP server that counts the requests it gets and serves a schema to each."""

    def __init__(self):
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server():
    server = CountingServer()
    yield server
    server.close()


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_remote_ref_is_refused_at_load_naming_its_path(keyword):
    problems = load_problems(tool("lookup", {"type": "object", "properties": {
        "x": {keyword: "http://127.0.0.1:9/x.json"}}}))
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        f"layers.llm.tools[0].function.parameters.properties.x.{keyword}: must be a local "
        "reference starting with '#'"), problems
    assert "http://127.0.0.1:9/x.json" in problems[0]


async def test_a_remote_ref_that_bypasses_the_loader_fetches_nothing(http_server, tmp_path):
    remote = f"{http_server.url}/x.json"
    schema = {"type": "object", "properties": {"x": {"$ref": remote}}}
    d = unchecked_dispatcher("lookup", schema, tmp_path)
    result = await d.run("lookup", "c", {"x": 1})
    assert "error" in result and "$ref" in result["error"], result
    # The jsonschema validator itself, with no checks before it: an error, not a request.
    with pytest.raises(Exception, match="Unresolvable"):
        list(safe_validator(schema).iter_errors({"x": 1}))
    # A root $id naming the server does not make local references go there either.
    local = {"$id": f"{http_server.url}/root.json", "type": "object",
             "properties": {"x": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}}
    assert list(safe_validator(local).iter_errors({"x": 1})) == []
    assert await unchecked_dispatcher("lookup", local, tmp_path).run("lookup", "c", {"x": "no"}) \
        == {"error": "invalid arguments: x: 'no' is not of type 'integer'"}
    assert http_server.requests == []
    def fetch():  # the server does count a request
        with urllib.request.urlopen(remote, timeout=10) as response:
            return response.status

    assert await asyncio.to_thread(fetch) == 200
    assert http_server.requests == ["/x.json"]


# --------------------------------------------------------------------------- recursion


@pytest.mark.parametrize("schema,path", [
    ({"type": "object", "$ref": "#"}, "parameters.$ref"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}},
      "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"type": "string"},
                                                             {"$ref": "#/$defs/a"}]}}},
     "parameters.$defs.b.anyOf[1].$ref"),
    ({"type": "object", "properties": {"x": {"$ref": "#node"}},
      "$defs": {"n": {"$anchor": "node", "not": {"$ref": "#node"}}}},
     "parameters.$defs.n.not.$ref"),
])
def test_ref_cycles_that_never_descend_are_refused_at_load(schema, path):
    problems = load_problems(tool("loop", schema))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"layers.llm.tools[0].function.{path}: refers back to "), problems
    assert "forever" in problems[0]


async def test_a_recursive_ref_that_bypasses_the_loader_is_an_error_result(tmp_path):
    d = unchecked_dispatcher("loop", {"type": "object", "$ref": "#"}, tmp_path)
    result = await d.run("loop", "c", {"x": 1})
    assert result["error"].startswith(
        "the tool's parameters schema cannot be used ($ref: refers back to #"), result


def test_an_exception_while_checking_is_a_message_not_a_raise(monkeypatch):
    # The last guard: a schema the checks let through that still recurses (here: checks off).
    with pytest.raises(RecursionError):
        list(safe_validator({"$ref": "#"}).iter_errors({}))
    monkeypatch.setattr(tool_schema, "schema_problems", lambda schema: [])
    validator = ArgumentValidator({"$ref": "#"})
    assert validator.check({}) == \
        "the arguments could not be checked against the tool's schema (RecursionError)"


async def test_tree_shaped_recursion_loads_and_deep_arguments_are_refused(tmp_path):
    ran = []
    registry = ToolRegistry()

    @registry.tool("tree")
    async def tree(root: dict) -> str:
        ran.append(root)
        return "ok"

    node = {"type": "object", "properties": {"name": {"type": "string"},
                                             "child": {"$ref": "#/$defs/node"}}}
    d = loaded_dispatcher([tool("tree", {"type": "object", "properties": {
        "root": {"$ref": "#/$defs/node"}}, "required": ["root"], "$defs": {"node": node}})],
        tmp_path, registry)
    assert await d.run("tree", "c", {"root": {"name": "a", "child": {"name": "b"}}}) == "ok"
    assert (await d.run("tree", "c", {"root": {"child": {"name": 3}}}))["error"] == \
        "invalid arguments: root/child/name: 3 is not of type 'string'"
    deep: dict = {"name": "leaf"}
    for _ in range(MAX_ARGUMENT_DEPTH):
        deep = {"child": deep}
    assert (await d.run("tree", "c", {"root": deep}))["error"] == \
        f"invalid arguments: arguments: nested more than {MAX_ARGUMENT_DEPTH} levels deep"
    assert len(ran) == 1


# --------------------------------------------------------------------------- patterns


async def test_catastrophic_pattern_loads_and_the_event_loop_keeps_ticking(tmp_path, monkeypatch):
    """The probe's ``^(a+)+$`` compiles in RE2 (it only backtracks in Python's re), so the
    persona loads; a call is checked in a worker thread while the loop keeps running."""
    registry = ToolRegistry()

    @registry.tool("spell")
    async def spell(word: str) -> str:
        return word

    d = loaded_dispatcher([tool("spell", {"type": "object", "properties": {
        "word": {"type": "string", "pattern": CATASTROPHIC}}, "required": ["word"]})],
        tmp_path, registry)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    during: list[tuple[bool, int]] = []
    real_check = ArgumentValidator.check

    def watched_check(self, arguments):
        # Wait (bounded by count, not asserted) until the loop has run the ticker three more
        # times while this check is in progress: on the loop thread it never would.
        start = ticks
        for _ in range(2000):
            if ticks >= start + 3:
                break
            time.sleep(0.005)
        during.append((threading.current_thread() is threading.main_thread(), ticks - start))
        return real_check(self, arguments)

    monkeypatch.setattr(ArgumentValidator, "check", watched_check)
    task = asyncio.create_task(ticker())
    try:
        bad = await d.run("spell", "c", {"word": EVIL_WORD})
        good = await d.run("spell", "c", {"word": "aaaa"})
    finally:
        task.cancel()
    assert bad == {"error": f"invalid arguments: word: {EVIL_WORD!r} does not match "
                            f"{CATASTROPHIC!r}"}
    assert good == "aaaa"
    assert [on_loop for on_loop, _ in during] == [False, False]
    assert all(count >= 3 for _, count in during), during


async def test_pattern_properties_and_additional_properties_match_with_re2(tmp_path):
    d = loaded_dispatcher([tool("keys", {"type": "object", "patternProperties": {
        CATASTROPHIC: {"type": "integer"}}, "additionalProperties": False})], tmp_path)
    assert (await d.run("keys", "c", {EVIL_WORD: 1}))["error"] == (
        f"invalid arguments: arguments: {EVIL_WORD!r} does not match any of the regexes: "
        f"{CATASTROPHIC!r}")
    assert (await d.run("keys", "c", {"aaa": "x"}))["error"] == \
        "invalid arguments: aaa: 'x' is not of type 'integer'"
    assert await d.run("keys", "c", {"aaa": 1}) == {
        "error": "the client did not return a result within 0.2 seconds"}  # valid: handed off


def test_patterns_re2_refuses_are_all_listed_at_load():
    problems = load_problems(
        tool("one", {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^(?=\\d)\\w+$"},
            "pair": {"type": "string", "pattern": "^(a)\\1$"}},
            "patternProperties": {"^x(?!y)": {}}}),
        tool("two", {"type": "object", "properties": {"n": {"type": "strin"}}}),
    )
    base = "layers.llm.tools[0].function.parameters"
    assert [p.split(": ", 1)[0] for p in problems] == [
        f"{base}.patternProperties.^x(?!y)",
        f"{base}.properties.code.pattern",
        f"{base}.properties.pair.pattern",
        "layers.llm.tools[1].function.parameters.properties.n.type",
    ], problems
    assert all("RE2" in p for p in problems[:3]), problems
    assert "is not valid JSON Schema" in problems[3]


def test_unevaluated_properties_with_pattern_properties_is_refused():
    problems = load_problems(tool("keys", {"type": "object", "patternProperties": {"^a": {}},
                                           "unevaluatedProperties": False}))
    assert problems == [(
        "layers.llm.tools[0].function.parameters.unevaluatedProperties: cannot be combined with "
        "patternProperties in a tool schema (jsonschema would match those patterns with Python's "
        "backtracking re)")]


def test_ecma_unicode_escapes_are_understood():
    validator = ArgumentValidator({"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[\\u0041-\\u005A]{2}\\u{2D}\\d+$"},
        "literal": {"type": "string", "pattern": "^\\\\u0041$"}}})
    assert validator.check({"code": "AB-12", "literal": "\\u0041"}) is None
    assert validator.check({"code": "ab-12"}).startswith("invalid arguments: code: 'ab-12'")
    assert validator.check({"literal": "A"}).startswith("invalid arguments: literal: 'A'")


# --------------------------------------------------------------------------- size


def test_schema_depth_and_size_are_bounded():
    assert persona_from_dict(persona(tool("deep", nested(MAX_SCHEMA_DEPTH))))
    problems = load_problems(tool("deep", nested(MAX_SCHEMA_DEPTH + 1)))
    assert problems == [(f"layers.llm.tools[0].function.parameters: is nested more than "
                         f"{MAX_SCHEMA_DEPTH} levels deep (objects and arrays); a tool schema may "
                         f"nest at most {MAX_SCHEMA_DEPTH}")]
    big = {"type": "object", "properties": {"c": {"enum": list(range(MAX_SCHEMA_NODES))}}}
    problems = load_problems(tool("big", big))
    assert len(problems) == 1 and f"more than {MAX_SCHEMA_NODES} JSON values" in problems[0]


def test_references_that_branch_and_rejoin_are_bounded():
    defs = {"d0": {"type": "string"}}
    for i in range(1, 20):  # 2**19 subschemas once inlined
        defs[f"d{i}"] = {"allOf": [{"$ref": f"#/$defs/d{i - 1}"}, {"$ref": f"#/$defs/d{i - 1}"}]}
    problems = load_problems(tool("bomb", {"type": "object", "$defs": defs,
                                           "properties": {"x": {"$ref": "#/$defs/d19"}}}))
    assert len(problems) == 1 and f"more than {MAX_EXPANSION} subschemas" in problems[0], problems


async def test_oversized_arguments_are_an_error_result(tmp_path):
    d = loaded_dispatcher([tool("note", {"type": "object", "properties": {
        "text": {"type": "string"}}})], tmp_path)
    result = await d.run("note", "c", {"text": "x" * 70_000})
    assert result["error"].startswith("invalid arguments: arguments: 70012 bytes of JSON; at most")


def test_local_refs_must_point_at_a_schema():
    problems = load_problems(tool("refs", {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/missing"}, "b": {"$ref": "#nowhere"},
        "c": {"enum": [1]}, "d": {"$ref": "#/properties/c/enum"},
        "e": {"$id": "https://example.com/e", "type": "string"}}}))
    base = "layers.llm.tools[0].function.parameters.properties"
    assert problems == [
        f'{base}.a.$ref: points at nothing in this schema (got "#/$defs/missing")',
        f'{base}.b.$ref: points at nothing in this schema (got "#nowhere")',
        f'{base}.d.$ref: points at a value that is not a schema (got "#/properties/c/enum")',
        (f"{base}.e.$id: is only allowed at the top of a tool schema (references are resolved "
         'against the whole schema) (got "https://example.com/e")'),
    ]


# --------------------------------------------------------------------------- the CLI


def _deep_persona_text(levels: int) -> str:
    schema = '{"type": "object", "properties": {"a": ' * levels + '{}' + "}}" * levels
    return ('{"system_prompt": "x", "layers": {"llm": {"tools": [{"type": "function", '
            '"function": {"name": "deep", "parameters": ' + schema + "}}]}}}")


@pytest.mark.parametrize("levels", [400, 5000])
def test_a_deeply_nested_tool_schema_is_one_problem_line_and_exit_2(tmp_path, levels):
    """400 levels reached the recursive checks (a traceback, exit 1); 5000 are too deep for
    Python's JSON parser itself. Both: one clear error naming the depth, exit code 2 (the
    document's own depth limit, config.loader.MAX_DEPTH, is met before the schema's)."""
    path = tmp_path / "deep.json"
    path.write_text(_deep_persona_text(levels))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PERSONA_DOTENV"] = "0"
    result = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--check", "--persona",
                             str(path)], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    text = result.stderr[-2000:]
    if levels == 400:  # parsed: the document check names where it goes too deep
        assert lines[0] == f"{path}: 1 problem:", text
        assert len(lines) == 2, text
        assert lines[1].startswith("  - layers.llm.tools[0].function.parameters.properties."), text
        assert "is nested too deeply (more than 64 levels" in lines[1], text
    else:  # the parser itself gives up: the whole file is the problem
        assert lines == [f"error: {path}: is nested too deeply (more than 64 levels of "
                         "arrays and objects)"], text

