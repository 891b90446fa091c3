"""Every ``pbx-bridge`` command line in the README's code blocks is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bridge import cli

README = Path(__file__).resolve().parent.parent / "README.md"

_FENCE = re.compile(r"^(`{3,}|~{3,})")
_OPERATORS = frozenset({"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"})
_ENV_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:-][^}]*)?\}|\$[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A value to be filled in: N, SEQ, ID, <token>. Replaced by "1", which every option type takes.
_PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|<[^>]*>)$")
_PREFIXES = frozenset({"sudo", "env", "exec", "time", "nohup"})


def code_blocks(markdown: str) -> list[list[tuple[int, str]]]:
    """The fenced code blocks: each a list of (line number, text)."""
    blocks: list[list[tuple[int, str]]] = []
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        match = _FENCE.match(stripped)
        if fence is None:
            if match:
                fence = match.group(1)
                blocks.append([])
        elif match and stripped.startswith(fence) and not stripped[len(fence) :].strip():
            fence = None
        else:
            blocks[-1].append((number, line))
    return blocks


def logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with their ``\\`` continuations joined, shell prompts (``$ ``) removed."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in block:
        text = line.rstrip()
        if pending is None:
            text = text.lstrip()
            text = text[2:] if text.startswith("$ ") else text
            pending = (number, "")
        if text.endswith("\\"):
            pending = (pending[0], pending[1] + text[:-1] + " ")
            continue
        joined.append((pending[0], pending[1] + text))
        pending = None
    if pending is not None:
        joined.append(pending)
    return joined


def simple_commands(line: str) -> list[list[str]]:
    """A shell line split into its simple commands (at pipes, ``&&``, ``;``), comments gone."""
    lexer = shlex.shlex(_ENV_VAR.sub("1", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    try:
        for token in lexer:
            if token in _OPERATORS:
                commands.append([])
            else:
                commands[-1].append(token)
    except ValueError:  # an unbalanced quote: prose, not a command line
        return []
    return [words for words in commands if words]


def bridge_argv(words: list[str]) -> list[str] | None:
    """The arguments after ``pbx-bridge`` (or ``python -m bridge``, or ``make run ARGS=...``)
    when ``words`` runs the CLI; None when it runs something else."""
    while words and (_ASSIGNMENT.match(words[0]) or words[0] in _PREFIXES):
        words = words[1:]
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if program == "pbx-bridge":
        rest = words[1:]
    elif program.startswith("python") and words[1:3] == ["-m", "bridge"]:
        rest = words[3:]
    elif program == "make" and words[1:2] == ["run"]:
        args = next((w.partition("=")[2] for w in words[2:] if w.startswith("ARGS=")), "")
        rest = ["run", *shlex.split(args)]
    else:
        return None
    argv = []
    for word in rest:
        word = word.strip("[]")  # usage syntax: [--listen HOST:PORT] [--data-dir DIR]
        if not word or word.endswith("..."):
            continue
        argv.append("1" if _PLACEHOLDER.match(word) else word)
    return argv


def readme_commands(markdown: str) -> list[tuple[int, str, list[str]]]:
    """(line number, the line as written, argv) of every CLI invocation in the code blocks."""
    found = []
    for block in code_blocks(markdown):
        for number, line in logical_lines(block):
            for words in simple_commands(line):
                argv = bridge_argv(words)
                if argv is not None:
                    found.append((number, line.strip(), argv))
    return found


COMMANDS = readme_commands(README.read_text(encoding="utf-8")) if README.exists() else []


def test_the_readme_has_cli_commands_to_check() -> None:
    """The extraction finds the README's commands (an extractor bug must not pass vacuously)."""
    assert len(COMMANDS) >= 3
    assert any(argv[:1] == ["run"] for _, _, argv in COMMANDS)


@pytest.mark.parametrize(
    ("number", "line", "argv"), COMMANDS, ids=[f"L{number}" for number, _, _ in COMMANDS]
)
def test_readme_command_parses(number: int, line: str, argv: list[str]) -> None:
    """The command line parses with the real parser: no usage error."""
    code: object = 0
    try:
        cli.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0; a usage error exits 2
        code = exc.code
    assert code == 0, f"README.md:{number}: {line!r} is not accepted: {argv}"


SAMPLE = """\
Some prose with `pbx-bridge inline` that is not a block.

```sh
# the daemon
make run ARGS="--listen 127.0.0.1:9000"
$ .venv/bin/pbx-bridge tail --type 'call.*'   # follow
PBX_BRIDGE_TOKEN=${TOKEN} $BIN/pbx-bridge dlq retry \\
    --sink crm N
pbx-bridge quarantine reprocess 12 | --all
pbx-bridge run --config my.toml [--listen HOST:PORT]
journalctl -u pbx-bridge -f && docker build -t pbx-bridge .
python -m bridge check-config my.toml
```
"""


def test_the_extractor_reads_shell_as_a_person_would() -> None:
    """Prompts, continuations, env placeholders, pipes and usage brackets are understood;
    pbx-bridge as an argument of another program is not an invocation."""
    assert [argv for _, _, argv in readme_commands(SAMPLE)] == [
        ["run", "--listen", "127.0.0.1:9000"],
        ["tail", "--type", "call.*"],
        ["dlq", "retry", "--sink", "crm", "1"],
        ["quarantine", "reprocess", "12"],
        ["run", "--config", "my.toml", "--listen", "HOST:PORT"],
        ["check-config", "my.toml"],
    ]
    assert [number for number, _, _ in readme_commands(SAMPLE)] == [5, 6, 7, 9, 10, 12]
