"""The import graph of `voice/`, read from the source with `ast` (nothing is imported):

- no circle among voice modules, counting every import a module names (`TYPE_CHECKING` ones
  and those inside functions too: a circle hidden from the interpreter still ties two rooms
  together);
- `voice.sip` (pjsua2), `voice.asr` (speech) and `voice.ivr` (call scripts) stand side by side:
  none imports another; what they share is `voice.audio` (and `voice.config`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIDE_BY_SIDE = ("voice.sip", "voice.asr", "voice.ivr")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The voice modules `path` imports (`from voice.x import y` counts voice.x.y when that is
    a module, else voice.x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def graph(packages: tuple[str, ...] = ("voice",)) -> dict[str, set[str]]:
    paths = {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}
    known = set(paths)
    return {name: imports_of(path, name, known) for name, path in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def room(module: str) -> str | None:
    return next((r for r in SIDE_BY_SIDE if module == r or module.startswith(r + ".")), None)


def test_the_checker_sees_a_circle_and_a_wrong_way_import() -> None:
    edges = {"voice.a": {"voice.b"}, "voice.b": {"voice.c"}, "voice.c": {"voice.a"}, "x": set()}
    assert cycles(edges) == [["voice.a", "voice.b", "voice.c"]]
    assert room("voice.sip.tap") == "voice.sip" and room("voice.sipx") is None


def test_imports_are_read_from_the_source() -> None:
    edges = graph()
    assert "voice.config" in edges["voice.ivr.steps"]  # a plain `from voice.config import`
    assert "voice.app" in edges  # the package's modules are all there


def test_no_import_circle_among_voice_modules() -> None:
    assert cycles(graph()) == []


def test_no_import_circle_among_the_service_packages() -> None:
    # accounts/ and recordings/ (the services pages, API and calls share) had one of their own:
    # accounts.db -> transcription -> webhook -> db (inside run_outbox), until `backoff` moved
    # to accounts.retry.
    assert cycles(graph(("accounts", "recordings", "voice"))) == []


def test_sip_asr_and_ivr_do_not_import_one_another() -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if room(source) and room(target) and room(source) != room(target)
    )
    assert wrong == []
