"""The docs stay true: every command line in README.md, ARCHITECTURE.md and docs/ names a
registered command and options it takes, every relative link resolves, the README fits in a
few screens, and ARCHITECTURE.md's module map lists every module (and nothing that is gone)."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import REPO
from typer.main import get_command

DOCS = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_BYTES = 12_500


def _apps() -> dict:
    from fd2talk.cli import app, evaluate, generate, prep, train

    return {
        "fd2talk-prep": prep.app,
        "fd2talk-train": train.app,
        "fd2talk-generate": generate.app,
        "fd2talk-eval": evaluate.app,
        "fd2talk-app": app.app,
        "-m fd2talk.model.cli": train.app,
    }


def _command_lines(text: str) -> list[str]:
    """Each shell line of the ```bash blocks (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _invocations(line: str):
    """(program, words after it) for each fd2talk command in a shell line."""
    for program in _apps():
        for m in re.finditer(re.escape(program) + r"(?=\s|$)", line):
            rest = line[m.end() :]
            rest = re.split(r"\s(?:&&|\|\||;|\|)\s", rest)[0]
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
            yield program, words


def _options(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def _check(program: str, words: list[str], commands: dict) -> list[str]:
    problems = []
    command = commands[program]
    i = 0
    while hasattr(command, "commands") and i < len(words):
        word = words[i]
        if "|" in word:  # `clip|crop|coeffs`: each alternative must exist
            missing = [w for w in word.split("|") if w not in command.commands]
            return [f"{program}: no command {missing}"] if missing else []
        if word.startswith("-"):
            break
        if word not in command.commands:
            return [f"{program}: {word!r} is not one of {sorted(command.commands)}"]
        command = command.commands[word]
        i += 1
    if hasattr(command, "commands"):
        return problems
    accepted = _options(command)
    for word in words[i:]:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            if name not in accepted and name != "--":
                problems.append(f"{program} {command.name}: no option {name}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_exists(doc):
    commands = {name: get_command(app) for name, app in _apps().items()}
    problems = []
    for line in _command_lines(doc.read_text()):
        for program, words in _invocations(line):
            problems += [f"{p}   [{line[:90]}]" for p in _check(program, words, commands)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_wrong_command():
    commands = {name: get_command(app) for name, app in _apps().items()}
    line = "fd2talk-train motion --shards S --out O --no-such-flag 1"
    found = [p for prog, w in _invocations(line) for p in _check(prog, w, commands)]
    assert found == ["fd2talk-train motion: no option --no-such-flag"]
    found = [
        p for prog, w in _invocations("fd2talk-prep clop W") for p in _check(prog, w, commands)
    ]
    assert found and "'clop'" in found[0]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, broken


def test_readme_fits_in_a_few_screens():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move detail to docs/"


def test_architecture_maps_every_module():
    """ARCHITECTURE.md's module map: one row per source file, by folder, none missing or stale."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    listed = set()
    folder = None
    for line in text.splitlines():
        if m := re.match(r"### `([\w/]+)/`", line):
            folder = m.group(1)
        elif folder and (m := re.match(r"\| `([\w.]+\.py)` \|", line)):
            listed.add(f"{folder}/{m.group(1)}")
    sources = {
        str(p.relative_to(REPO))
        for root in ("fd2talk", "pipeline", "model")
        for p in (REPO / root).rglob("*.py")
        if p.name != "__init__.py"
    }
    assert not sources - listed, f"not in ARCHITECTURE.md's map: {sorted(sources - listed)}"
    assert not listed - sources, f"in the map but gone: {sorted(listed - sources)}"
