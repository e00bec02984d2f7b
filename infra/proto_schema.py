"""Pub/Sub schema definitions cut from the app's `.proto`: one message, self-contained.

A Pub/Sub PROTOCOL_BUFFER schema must define exactly one top-level message and import
nothing, while `app/proto/signals.proto` (the one source of truth) defines several messages,
enums and a service in a package. `extract_message` returns the definition of one message
with every top-level message and enum it uses, transitively, moved inside it as nested
types. Nesting keeps field numbers, types and the wire format unchanged, so a message
encoded by the app's generated code validates against the extracted schema as is.

The parser is deliberately small: it understands the subset of proto2/proto3 that message
and enum definitions use (fields, maps, oneofs, nested types, options, reserved ranges) and
refuses anything it cannot make self-contained, such as imported types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The one source of truth the schemas are cut from.
APP_PROTO_PATH = Path(__file__).resolve().parent.parent / "app" / "proto" / "signals.proto"

SCALARS = frozenset(
    {
        "double",
        "float",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
        "bool",
        "string",
        "bytes",
    }
)
LABELS = frozenset({"optional", "required", "repeated"})
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\.?[A-Za-z_][\w.]*|\d[\w.+-]*|\S')


@dataclass(frozen=True)
class Block:
    """A top-level `message` or `enum`: its text spans [start, end) of the file."""

    kind: str
    name: str
    start: int
    open_brace: int
    end: int


@dataclass(frozen=True)
class ProtoFile:
    text: str
    syntax: str
    package: str
    imports: tuple[str, ...]
    blocks: dict[str, Block]


def mask_comments(text: str) -> str:
    """`text` with every comment replaced by spaces (newlines kept): offsets stay valid."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [ch if ch == "\n" else " " for ch in text[i:j]]
            i = j
        else:
            i += 1
    return "".join(out)


def _closing_brace(masked: str, open_brace: int) -> int:
    depth = 0
    for match in _TOKEN.finditer(masked, open_brace):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.end()
    raise ValueError(f"unbalanced braces from offset {open_brace}")


def parse(text: str) -> ProtoFile:
    """The top-level statements of a .proto file."""
    masked = mask_comments(text)
    syntax, package, imports = "proto2", "", []
    blocks: dict[str, Block] = {}
    pos = 0
    while True:
        match = _TOKEN.search(masked, pos)
        if match is None:
            break
        word = match.group()
        if word in ("message", "enum", "service", "extend"):
            name_match = _TOKEN.search(masked, match.end())
            if name_match is None:
                raise ValueError(f"{word} at offset {match.start()} has no name")
            brace = masked.index("{", name_match.end())
            end = _closing_brace(masked, brace)
            if word in ("message", "enum"):
                name = name_match.group()
                blocks[name] = Block(word, name, match.start(), brace, end)
            pos = end
            continue
        statement_end = masked.index(";", match.start()) + 1
        statement = masked[match.start() : statement_end]
        if word == "syntax":
            syntax = _quoted(statement)
        elif word == "package":
            package = statement.split()[1].rstrip(";")
        elif word == "import":
            imports.append(_quoted(statement))
        pos = statement_end
    return ProtoFile(text, syntax, package, tuple(imports), blocks)


def _field_types(masked_body: str) -> tuple[set[str], set[str]]:
    """(type names a message body refers to, names of the types nested in it)."""
    tokens = [m.group() for m in _TOKEN.finditer(masked_body)]
    used: set[str] = set()
    nested: set[str] = set()
    statement: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if (
            not statement
            and token in ("message", "enum", "oneof", "extend")
            and i + 2 < len(tokens)
        ):
            if token in ("message", "enum"):
                nested.add(tokens[i + 1])
            if token == "enum":  # enum bodies refer to no types: skip to their end
                depth, i = 0, i + 2
                while True:
                    depth += {"{": 1, "}": -1}.get(tokens[i], 0)
                    if depth == 0:
                        break
                    i += 1
            else:
                i += 3  # keyword, name, "{": the body's statements follow
            continue
        if token == "}" and not statement:
            i += 1
            continue
        if token == ";":
            _statement_types(statement, used)
            statement = []
        else:
            statement.append(token)
        i += 1
    return used, nested


def _statement_types(statement: list[str], used: set[str]) -> None:
    if not statement or statement[0] in ("option", "reserved", "extensions"):
        return
    if statement[0] == "map":  # map < K , V > name = N
        used.update(t for t in (statement[2], statement[4]) if t not in SCALARS)
        return
    if "=" not in statement:
        return
    head = [t for t in statement[: statement.index("=")] if t not in LABELS]
    if len(head) == 2 and head[0] not in SCALARS and head[0] != "group":
        used.add(head[0])


def _resolve(name: str, package: str) -> str:
    """A referenced type's top-level name: package and leading dot removed, outer part."""
    name = name.lstrip(".")
    if package and name.startswith(package + "."):
        name = name[len(package) + 1 :]
    return name.split(".")[0]


def _indent(block: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in block.splitlines())


def extract_message(proto_text: str, message: str) -> str:
    """The self-contained, single-top-level-message definition of `message`."""
    proto = parse(proto_text)
    messages = sorted(name for name, b in proto.blocks.items() if b.kind == "message")
    root = proto.blocks.get(message)
    if root is None or root.kind != "message":
        raise KeyError(f"no top-level message {message!r}; the file defines {messages}")
    masked = mask_comments(proto_text)

    def dependencies(block: Block) -> tuple[set[str], set[str]]:
        used, nested = _field_types(masked[block.open_brace + 1 : block.end - 1])
        return {_resolve(u, proto.package) for u in used}, nested

    root_used, root_nested = dependencies(root)
    needed: list[str] = []
    pending = sorted(root_used - root_nested)
    while pending:
        name = pending.pop(0)
        if name in needed or name == message:
            continue
        block = proto.blocks.get(name)
        if block is None:
            raise ValueError(
                f"{message} uses {name!r}, which this file does not define (imported types "
                "cannot be part of a Pub/Sub schema)"
            )
        if name in root_nested:
            raise ValueError(f"{message} already nests a type named {name!r}")
        needed.append(name)
        if block.kind == "message":
            used, nested = dependencies(block)
            pending.extend(sorted(used - nested))
    needed.sort(key=lambda n: proto.blocks[n].start)

    body = proto_text[root.open_brace + 1 : root.end - 1].strip("\n")
    parts = [_indent(proto_text[proto.blocks[n].start : proto.blocks[n].end]) for n in needed]
    inner = "\n\n".join([*parts, body]) if parts else body
    definition = f'syntax = "{proto.syntax}";\n\nmessage {message} {{\n{inner}\n}}\n'
    if proto.package:
        # Qualified references to the moved types now resolve inside the message.
        definition = re.sub(rf"\.?{re.escape(proto.package)}\.", "", definition)
    return definition


def _quoted(statement: str) -> str:
    """The quoted string of a `syntax = "...";` or `import "...";` statement."""
    match = re.search(r"[\"']([^\"']+)[\"']", statement)
    if match is None:
        raise ValueError(f"expected a quoted string in {statement!r}")
    return match.group(1)


def enum_numbers(proto_text: str) -> dict[str, int]:
    """Every top-level enum value's name → its number (names are unique across a file's
    top-level enums in proto's C++ scoping, which the app's file follows)."""
    proto = parse(proto_text)
    masked = mask_comments(proto_text)
    numbers: dict[str, int] = {}
    for block in proto.blocks.values():
        if block.kind == "enum":
            body = masked[block.open_brace + 1 : block.end - 1]
            for name, number in re.findall(r"\b([A-Za-z_]\w*)\s*=\s*(-?\d+)\s*[;\[]", body):
                numbers[name] = int(number)
    return numbers
