"""One Redis schema: the Lua scripts and the Python modules spell fields as ``shared.keys`` does.

The Lua scripts spell field names themselves (templating would cost readability and
the hot path nothing would gain); these tests parse every script, the ``.lua`` files
and any Lua held in a Python string, and compare what they spell with the catalogue
both ways. Python modules name fields only through the catalogue: the tests walk
their syntax trees for field literals.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import keys
from shared.events import EpochEvent, TokenEvent, TokenOp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "producer", "workers", "gate")

CATALOGUE_CLASSES = (
    keys.TokenField,
    keys.TokenState,
    keys.MetaField,
    keys.PartitionField,
    keys.EpochScope,
    keys.InvalidationField,
    keys.PingField,
    keys.PingKind,
    keys.NearCacheField,
    keys.SignerField,
)

# Names no Lua script needs to spell, and why.
NOT_IN_LUA = {
    keys.MetaField.RATE: "the worker writes its apply rate from Python",
    keys.PingKind.PING: "a ping's kind reaches ping.lua as ARGV",
    keys.PingKind.SYNC: "a sync's kind reaches ping.lua as ARGV",
}
NOT_IN_LUA_CLASSES = (keys.NearCacheField, keys.SignerField)  # written and read by Python

# Quoted strings in Lua that are not schema names: Lua patterns of validate.lua's UUID
# match, Lua type names, and an error message.
LUA_NON_SCHEMA = {"%x%x%x%x", "^", "%-", "$", "string", "table", "unknown event type "}
LUA_NON_SCHEMA |= {"replication", "master_replid:(%w+)"}  # Redis's INFO, not our schema


def _constants(cls: type) -> dict[str, str]:
    return {n: v for n, v in vars(cls).items() if n.isupper() and isinstance(v, str)}


def catalogue() -> set[str]:
    """Every name the catalogue spells."""
    names = {keys.PRESENT_FIELD}
    for cls in CATALOGUE_CLASSES:
        names |= set(_constants(cls).values())
    return names


def event_vocabulary() -> tuple[set[str], set[str]]:
    """The token-stream records' JSON keys, and their ``type`` and ``op`` values
    (``shared.events`` owns that format; ``apply.lua`` reads it)."""
    token = TokenEvent(1, TokenOp.ISSUED, "0" * 64, 1, "t", "1", "n", (), 0, 0, None, 0)
    epoch = EpochEvent(1, "global", 0, 0)
    fields = set(token.to_json()) | set(epoch.to_json())
    values = {token.to_json()["type"], epoch.to_json()["type"], *(op.value for op in TokenOp)}
    return fields, values


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "stack" not in path.relative_to(ROOT).parts:
                yield path


def lua_sources() -> dict[str, str]:
    """Every Lua script of the project: the ``.lua`` files and Lua in Python strings."""
    scripts = {
        str(path.relative_to(ROOT)): path.read_text()
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.lua"))
    }
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and "redis.call(" in str(node.value):
                scripts[f"{path.relative_to(ROOT)}:{node.lineno}"] = str(node.value)
    return scripts


def _code(lua: str) -> str:
    """The script without its comments (no script spells ``--`` inside a string)."""
    return "\n".join(line.split("--", 1)[0] for line in lua.splitlines())


def quoted(lua: str) -> set[str]:
    """Every quoted string of a script."""
    code = _code(lua)
    return {m.group(2) for m in re.finditer(r"(['\"])((?:\\.|(?!\1).)*)\1", code)}


def table_keys(lua: str) -> set[str]:
    """Keys of the tables a script builds as JSON (``{g = ..., e = ...}``, ``message.h``)."""
    code = _code(lua)
    found = set()
    for body in re.findall(r"\{([^{}]*)\}", code):
        found |= set(re.findall(r"(?:^|[,{\s])([A-Za-z_]\w*)\s*=(?!=)", body))
    found |= set(re.findall(r"\bmessage\.(\w+)", code))
    return found


def event_fields_read(lua: str) -> set[str]:
    """The record fields ``apply.lua`` reads (``e.<field>``)."""
    return set(re.findall(r"\be\.(\w+)", _code(lua)))


def schema_names(lua: str) -> set[str]:
    """What a script spells that must be a catalogued name."""
    _, values = event_vocabulary()
    names = set()
    for text in quoted(lua):
        # a message (error_reply) has spaces; no key or field name does
        message = " " in text
        ignorable = re.fullmatch(r"[A-Z]+|-?\d*", text) or text in LUA_NON_SCHEMA or message
        if text in catalogue() or not (ignorable or text in values):
            names.add(text)
    return names | table_keys(lua)


def test_the_lua_scripts_are_found_in_files_and_in_python_strings() -> None:
    scripts = lua_sources()
    for expected in (
        "shared/validate.lua",
        "shared/ping.lua",
        "workers/apply.lua",
        "workers/claim.lua",
        "workers/open.lua",
        "workers/build_progress.lua",
    ):
        assert expected in scripts
    assert any(name.startswith("shared/usage.py:") for name in scripts)


@pytest.mark.parametrize("script", sorted(lua_sources()))
def test_every_name_a_lua_script_spells_is_in_the_catalogue(script: str) -> None:
    lua = lua_sources()[script]
    assert set() == schema_names(lua) - catalogue()


def test_every_catalogued_name_a_lua_script_must_know_is_spelled_by_one() -> None:
    spelled = set().union(*(schema_names(lua) for lua in lua_sources().values()))
    needed = {keys.PRESENT_FIELD}
    for cls in CATALOGUE_CLASSES:
        if cls not in NOT_IN_LUA_CLASSES:
            needed |= {v for v in _constants(cls).values() if v not in NOT_IN_LUA}
    assert set() == needed - spelled


def test_the_invalidation_and_ping_messages_carry_the_catalogued_fields() -> None:
    scripts = lua_sources()
    invalidation = set(_constants(keys.InvalidationField).values())
    ping = set(_constants(keys.PingField).values())
    assert invalidation == table_keys(scripts["workers/apply.lua"])
    assert ping == table_keys(scripts["shared/ping.lua"])


def test_apply_lua_reads_only_fields_the_token_stream_records_carry() -> None:
    fields, _ = event_vocabulary()
    read = event_fields_read(lua_sources()["workers/apply.lua"])
    assert {"hash", "seq", "op", "type", "scope", "before"} <= read
    assert set() == read - fields


# --- Python ---------------------------------------------------------------------------

HASH_COMMANDS = {"hget", "hmget", "hset", "hdel", "hexists", "hincrby", "hsetnx"}

# Catalogue names long and odd enough to mean the schema wherever they appear.
DISTINCT = {
    n
    for n in catalogue()
    if (len(n) > 1 and n.endswith(":"))
    or n.startswith("~")
    or "_" in n
    or (len(n) == 2 and n != "id")
} - {keys.MetaField.TOPIC_ID}  # also the Kafka protocol's name (workers/topic_id.py)

# (module, literal): a short catalogue name that means something else there.
ALLOWED_SHORT = {
    ("shared/usage.py", "v"): "the usage record's schema version (a Kafka record)",
    ("shared/events.py", "v"): "the token-stream record's schema version",
    ("shared/events.py", "id"): "the token record's row id",
}


def _imports_redis(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("redis") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("redis"):
            return True
    return False


def _string_parts(node: ast.AST) -> Iterator[str]:
    """A literal's text, or an f-string's literal parts (not its format specs)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        yield node.value if isinstance(node.value, str) else node.value.decode("latin-1")
    elif isinstance(node, ast.JoinedStr):
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value.value
    elif isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            yield from _string_parts(element)


def _short_reads(node: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Where a node reads or writes a dict key (``.get(key)``, ``[key]``, ``{key: ...}``)
    or compares with a value (``state != b"l"``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "get" and node.args:
            yield node.args[0], "a message field read"
    elif isinstance(node, ast.Subscript):
        yield node.slice, "a message field read"
    elif isinstance(node, ast.Dict):
        yield from ((key, "a message field written") for key in node.keys if key is not None)
    elif isinstance(node, ast.Compare):
        yield from ((part, "a field value compared") for part in node.comparators)


def _spelled(node: ast.AST, short: set[str]) -> Iterator[tuple[str, str]]:
    """The schema literals one node spells, each with why it counts."""
    if isinstance(node, ast.Constant | ast.JoinedStr):
        yield from ((t, "a catalogued field") for t in _string_parts(node) if t in DISTINCT)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in HASH_COMMANDS
    ):
        for arg in node.args[1:]:
            yield from ((t, f"a field of {node.func.attr}") for t in _string_parts(arg))
    for part, why in _short_reads(node):
        yield from ((t, why) for t in _string_parts(part) if t in short)


def field_literals(source: str, module: str) -> list[str]:
    """Where a module spells a schema field itself: ``line: literal (why it counts)``.

    Catalogued names of two characters or fewer count only as dict keys and reads in a
    module that imports redis (elsewhere ``"s"`` or ``"id"`` mean other things)."""
    tree = ast.parse(source)
    short = (
        {n for n in catalogue() if len(n) <= 2 and (module, n) not in ALLOWED_SHORT}
        if _imports_redis(tree)
        else set()
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and "redis.call(" in str(node.value):
            continue  # Lua in a string: the Lua tests check it
        for text, why in _spelled(node, short):
            found.add(f"{getattr(node, 'lineno', 0)}: {text!r} ({why})")
    return sorted(found)


@pytest.mark.parametrize(
    "module",
    [str(p.relative_to(ROOT)) for p in _python_files() if p.name != "keys.py"],
)
def test_no_python_module_spells_a_redis_field_outside_the_catalogue(module: str) -> None:
    assert [] == field_literals((ROOT / module).read_text(), module)


def test_the_field_literal_check_finds_fields_spelled_in_place() -> None:
    """The check itself can fail: a module spelling fields the old way is caught."""
    source = (
        "import redis\n"
        "def f(client: redis.Redis, message: dict, p: int) -> object:\n"
        "    client.hget('k', 'ready')\n"
        "    return message.get('g'), f'o:{p}', {'hb_min': 1}, message['s'] == b'l'\n"
    )
    found = field_literals(source, "shared/probe.py")
    assert [
        "3: 'ready' (a field of hget)",
        "4: 'g' (a message field read)",
        "4: 'hb_min' (a catalogued field)",
        "4: 'l' (a field value compared)",
        "4: 'o:' (a catalogued field)",
        "4: 's' (a message field read)",
    ] == found


def test_partition_fields_round_trip_through_the_catalogue() -> None:
    field = keys.PartitionField
    assert (field.OFFSET, 3) == field.parse(field.offset(3))
    assert (field.HEARTBEAT, 0) == field.parse(field.heartbeat(0))
    assert (field.TARGET, 12) == field.parse(field.target(12))
    assert field.parse(keys.PRESENT_FIELD) is None
    assert field.parse("o:x") is None
    assert (2, 41) == keys.parse_dead_letter_member(keys.dead_letter_member(2, 41).encode())
    assert keys.parse_dead_letter_member("garbage") is None
