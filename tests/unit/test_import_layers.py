"""The import graph of `voice/`, read from the source with `ast` (nothing is imported):

- no circle among voice modules, counting every import a module names (`TYPE_CHECKING` ones
  and those inside functions too: a circle hidden from the interpreter still ties two rooms
  together);
- `voice.sip` (pjsua2), `voice.asr` (speech) and `voice.ivr` (call scripts) stand side by side:
  none imports another; what they share is `voice.audio` (and `voice.config`);
- `accounts` is below `voice`: none of its modules imports a voice module at run time (a
  `TYPE_CHECKING` import of a config type is allowed), and the rules the worker, the API and
  the pages share (`accounts.guardrails`, `accounts.reach`) import none at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIDE_BY_SIDE = ("voice.sip", "voice.asr", "voice.ivr")
SHARED_RULES = ("accounts.guardrails", "accounts.reach")  # used by voice.calls and voice.api


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def type_checking_blocks(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside `if TYPE_CHECKING:` blocks of `tree`."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def imports_of(path: Path, name: str, known: set[str], *, run_time_only: bool = False) -> set[str]:
    """The voice modules `path` imports (`from voice.x import y` counts voice.x.y when that is
    a module, else voice.x); with `run_time_only`, not those under `if TYPE_CHECKING:`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_blocks(tree) if run_time_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def graph(
    packages: tuple[str, ...] = ("voice",), *, run_time_only: bool = False
) -> dict[str, set[str]]:
    paths = {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}
    known = set(paths)
    return {
        name: imports_of(path, name, known, run_time_only=run_time_only)
        for name, path in paths.items()
    }


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


def test_type_checking_imports_can_be_left_out() -> None:
    # accounts.webhook names voice.config's types under TYPE_CHECKING only.
    assert "voice.config" in graph(("accounts", "voice"))["accounts.webhook"]
    assert (
        "voice.config" not in graph(("accounts", "voice"), run_time_only=True)["accounts.webhook"]
    )


def test_accounts_does_not_import_voice_at_run_time() -> None:
    edges = graph(("accounts", "voice"), run_time_only=True)
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in edges.items()
        if source.startswith("accounts.")
        for target in targets
        if target == "voice" or target.startswith("voice.")
    )
    assert wrong == []


def test_the_shared_rules_import_no_voice_module_at_all() -> None:
    edges = graph(("accounts", "voice"))
    assert set(SHARED_RULES) <= set(edges)  # they are where the rule says
    wrong = sorted(
        f"{source} -> {target}"
        for source in SHARED_RULES
        for target in edges[source]
        if target.startswith("voice.")
    )
    assert wrong == []
