"""The package's layers, read from the source: which module may import which (at run time,
`if TYPE_CHECKING:` blocks aside), and the README's layout section matching the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "callbot"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> set[str]:
    """Every callbot module `path` imports when it runs (top level and inside functions)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


IMPORTS = {_module_name(path): _runtime_imports(path) for path in PACKAGE.rglob("*.py")}


def _under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


#: (importing modules, modules they must not import, why)
RULES = [
    (("callbot.signaling",), ("callbot.call", "callbot.bot", "callbot.direct", "callbot.media",
                             "callbot.group", "callbot.cli", "callbot.testing", "callbot.embedded"),
     "signalling knows nothing of calls, media or the tools above it"),
    (("callbot.signaling.messages",), ("callbot.signaling.relay_core", "callbot.signaling.relay"),
     "the message schema is the bottom of signalling"),
    (("callbot.bot",), ("callbot.signaling.relay", "callbot.signaling.relay_core", "callbot.cli",
                        "callbot.testing"),
     "a bot is a relay client; the embedded relay is built in callbot.embedded"),
    (("callbot.call",), ("callbot.testing", "callbot.cli", "callbot.signaling.relay",
                         "callbot.bot"),
     "a call does not depend on test tooling, the CLI, the relay server or the bot"),
    (("callbot.media",), ("callbot.signaling", "callbot.call", "callbot.bot", "callbot.group",
                          "callbot.cli", "callbot.testing"),
     "the media path is below calls and signalling"),
    (("callbot.voice",), ("callbot.call", "callbot.bot", "callbot.signaling", "callbot.group",
                          "callbot.cli", "callbot.testing"),
     "speech is a layer calls use: it gets what it needs handed in"),
]  # fmt: skip


@pytest.mark.parametrize(("importers", "forbidden", "why"), RULES, ids=[r[0][0] for r in RULES])
def test_layering(importers: tuple[str, ...], forbidden: tuple[str, ...], why: str) -> None:
    checked = [name for name in IMPORTS if _under(name, *importers)]
    assert checked, importers
    wrong = sorted(
        (name, target) for name in checked for target in IMPORTS[name] if _under(target, *forbidden)
    )
    assert not wrong, f"{why}: {wrong}"


def test_only_the_tools_import_the_cli_and_the_test_kit() -> None:
    """The CLI is imported by `python -m callbot` and the pytest plugin (which loads bot files
    as `callbot run` does); the test kit only by the CLI and scenarios (which use its checks);
    scenarios by the CLI and the test kit. Nothing in the core needs any of them."""
    kit = ("callbot.testing", "callbot.cli", "callbot.scenario")
    allowed = {"callbot.cli": ("callbot.cli", "callbot.__main__", "callbot.testing"),
               "callbot.testing": kit, "callbot.scenario": kit}  # fmt: skip
    for tool, importers in allowed.items():
        wrong = sorted(
            name
            for name, targets in IMPORTS.items()
            if not _under(name, *importers) and any(_under(t, tool) for t in targets)
        )
        assert not wrong, f"{tool} imported by {wrong}"


def test_only_the_sip_stack_imports_baresip() -> None:
    """SIP goes through one module (callbot/sip/stack.py): the stack stays swappable."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "baresip" or n.startswith("baresip.") for n in names):
                importers.add(_module_name(path))
    assert importers == {"callbot.sip.stack"}


def test_callbot_logs_only_through_escaping_loggers() -> None:
    """Every callbot logger comes from `safe.get_logger`, which escapes remote text where it is
    logged (tests/test_output_safety.py): a direct `logging.getLogger` would lose that."""
    direct = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "safe.py" and "logging.getLogger(" in path.read_text()
    )
    assert direct == []


def test_the_checker_sees_imports() -> None:
    """The rules above would pass vacuously if imports were not found: spot-check known edges."""
    assert "callbot.signaling.client" in IMPORTS["callbot.bot"]
    assert "callbot.media.tones" in IMPORTS["callbot.call"]
    assert "callbot.signaling.relay" in IMPORTS["callbot.embedded"]
    assert "callbot.embedded" in IMPORTS["callbot.bot"]  # imported inside Bot.start
    assert "callbot.signaling.relay" not in IMPORTS["callbot.bot"]  # only under TYPE_CHECKING


def test_readme_layout_matches_the_tree() -> None:
    """Every top-level module and package of callbot/ is in the README's layout, and every
    path the layout names exists."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    named = re.findall(r"^((?:callbot|plugins|benchmarks)/[\w./]*)", layout, re.M)
    assert named
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"the README layout names paths that do not exist: {missing}"
    entries = {
        f"callbot/{p.name}" + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if not p.name.startswith("__") and p.name != "py.typed"
    }
    unlisted = sorted(entries - set(named))
    assert not unlisted, f"not in the README layout: {unlisted}"
