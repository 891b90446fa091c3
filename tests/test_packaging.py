"""The packaging (systemd unit, env file, Dockerfile) and the docs agree with the code and each
other: what the README installs is what the unit runs, and every link leads somewhere."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import cli, config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pbx-bridge.service"
ENV_EXAMPLE = ROOT / "config" / "pbx-bridge.env.example"
EXAMPLE_CONFIG = ROOT / "config" / "pbx-bridge.example.toml"
README = ROOT / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# -- helpers: the unit, the README's install steps, the Dockerfile ----------------------------


def unit() -> dict[str, dict[str, list[str]]]:
    """The unit file as {section: {key: [values]}}: systemd allows a key more than once, which
    configparser does not."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in UNIT.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str) -> list[str]:
    return unit()["Service"].get(key, [])


def command(value: str) -> list[str]:
    """An Exec*= value as argv, without systemd's prefixes (-, @, +, !, :)."""
    return shlex.split(value.lstrip("-@+!:"))


def section(text: str, heading: str) -> str:
    """A README section's text: from its heading to the next heading of its level or above
    (lines in fenced code blocks, shell comments say, are not headings)."""
    level = len(heading.split(" ")[0])
    lines = text[text.index(heading + "\n") :].splitlines(keepends=True)
    fenced = False
    for index, line in enumerate(lines[1:], start=1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            return "".join(lines[:index])
    return "".join(lines)


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def install_steps() -> str:
    """The README's systemd install steps: the first shell block of its systemd section."""
    return shell_blocks(section(README.read_text(), "## Running under systemd"))[0]


def run_install_steps(root: Path) -> None:
    """Run the install steps' file-placing commands with every absolute path moved under root.

    ``python3 -m venv`` and ``pip install`` are stood in for by an executable that runs this
    checkout's CLI; ``systemctl`` and editors are not run.
    """
    for line in install_steps().splitlines():
        line = line.split(" # ")[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if words[:3] == ["python3", "-m", "venv"]:
            venv = root / words[3].lstrip("/")
            (venv / "bin").mkdir(parents=True)
            script = venv / "bin" / "pbx-bridge"
            script.write_text(
                f'#!/bin/sh\nexec {shlex.quote(str(ROOT / ".venv/bin/pbx-bridge"))} "$@"\n'
            )
            script.chmod(0o755)
        elif words[0] == "install":
            moved = re.sub(r"(?<=\s)/(?=opt/|etc/|usr/|var/)", f"{root}/", line)
            subprocess.run(["bash", "-c", moved], cwd=ROOT, check=True)


def installed(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    instructions = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        name, _, args = line.partition(" ")
        instructions.append((name.upper(), args.strip()))
    return instructions


def docker(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's context rules leave ``path`` out: the last matching pattern decides, a
    pattern matches a path or any directory above it, ``**`` spans directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(
            r"\\\[([^\]]*)\\\]", lambda m: "[" + m.group(1).replace("\\", "") + "]", regex
        )
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def markdown_files() -> list[Path]:
    return [README, *DOCS]


def links(path: Path) -> Iterator[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for match in re.finditer(r"\]\(([^)\s]+)\)", text):
        yield match.group(1)


# -- the unit ------------------------------------------------------------------------------


def test_unit_has_the_required_directives() -> None:
    """The unit is a notify service that reloads on SIGHUP and has the hardening asked for."""
    s = unit()["Service"]
    assert s["Type"] == ["notify"]
    assert "/bin/kill -HUP $MAINPID" in s["ExecReload"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID", "the signal goes last"
    assert s["ProtectProc"] == ["invisible"]
    assert s["ProcSubset"] == ["pid"]
    assert "@system-service" in s["SystemCallFilter"]
    assert "~@privileged @resources" in s["SystemCallFilter"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["2"]
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["pbx-bridge"]
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_has_no_pre_start_check_that_would_loop() -> None:
    """No ExecStartPre: systemd applies RestartPreventExitStatus to the main process only, so a
    failing pre-start check would be restarted forever."""
    assert service("ExecStartPre") == []


def test_restart_prevent_status_is_what_a_config_error_exits_with(tmp_path: Path) -> None:
    """`run` and `check-config` exit with the status the unit does not restart on."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n')
    status = int(service("RestartPreventExitStatus")[0])
    assert cli.main(["check-config", str(bad)]) == status
    assert cli.main(["run", "--config", str(bad), "--data-dir", str(tmp_path / "data")]) == status


def test_unit_command_lines_are_accepted_by_the_cli() -> None:
    """ExecStart and the checking ExecReload are pbx-bridge command lines the parser accepts."""
    lines = [*service("ExecStart"), *service("ExecReload")]
    ours = [command(v) for v in lines if command(v)[0].endswith("/pbx-bridge")]
    assert len(ours) == 2, lines
    for argv in ours:
        args = [arg.replace("${STATE_DIRECTORY}", "/var/lib/pbx-bridge") for arg in argv[1:]]
        cli._parser().parse_args(args)
    start = command(service("ExecStart")[0])
    assert start[1] == "run"
    assert "--data-dir" in start
    assert start[start.index("--data-dir") + 1] == "${STATE_DIRECTORY}"


def test_unit_paths_are_what_the_readme_installs(tmp_path: Path) -> None:
    """Every file the unit names (binaries, config, env file, docs) is placed by the README's
    install steps, and the env file is installed 0600 from the example."""
    run_install_steps(tmp_path)
    for value in [*service("ExecStart"), *service("ExecReload")]:
        argv = command(value)
        if argv[0] == "/bin/kill":
            continue
        assert installed(tmp_path, argv[0]).is_file(), argv[0]
        assert os.access(installed(tmp_path, argv[0]), os.X_OK), argv[0]
        for flag_or_file in argv[1:]:
            if flag_or_file.startswith("/etc/"):
                assert installed(tmp_path, flag_or_file).is_file(), flag_or_file
    (env,) = service("EnvironmentFile")
    assert not env.startswith("-"), "the env file is required: the config reads its secrets"
    env_file = installed(tmp_path, env)
    assert env_file.read_bytes() == ENV_EXAMPLE.read_bytes()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    for doc in unit()["Unit"]["Documentation"]:
        for uri in doc.split():
            assert uri.startswith("file://"), uri
            assert installed(tmp_path, uri.removeprefix("file://")).is_file(), uri
    assert installed(tmp_path, "/etc/systemd/system/pbx-bridge.service").read_bytes() == (
        UNIT.read_bytes()
    )


def test_readme_steps_name_the_unit_and_its_files() -> None:
    """The install steps reload systemd, enable and start the service, and create the env file
    the unit reads from the example that exists."""
    steps = install_steps()
    (env,) = service("EnvironmentFile")
    assert f"config/{ENV_EXAMPLE.name} {env}" in steps
    assert "-Dm600" in next(
        line for line in steps.splitlines() if env in line and "install" in line
    )
    assert "systemctl daemon-reload" in steps
    assert "systemctl enable --now pbx-bridge" in steps


def _verify_root(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    run_install_steps(root)
    shutil.copyfile(UNIT, root / "etc/systemd/system/pbx-bridge.service")  # the one under test
    # verify resolves the unit's dependencies (multi-user.target, ...) inside the root.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    return root, root / "etc/systemd/system/pbx-bridge.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no error and no unknown or misspelt directive."""
    root, unit_file = _verify_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not re.search(r"Unknown|Failed|Invalid|ignoring", done.stderr), done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_rates_the_sandbox_ok(tmp_path: Path) -> None:
    """`systemd-analyze security` puts the unit's exposure at 2.0 or below ("OK")."""
    root, unit_file = _verify_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", str(unit_file)],
        capture_output=True,
        text=True,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit offline")
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout


# -- the env file and the example config ---------------------------------------------------


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"not a variable name: {name!r}"
            values[name] = value
    return values


def test_env_example_names_every_variable_the_example_config_suggests() -> None:
    """Every ${NAME} the example config uses or suggests has its line in the env example."""
    # A quoted "${NAME}" is a value (commented-out keys too); a bare ${NAME} is prose.
    wanted = set(re.findall(r'"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"', EXAMPLE_CONFIG.read_text()))
    commented = set(re.findall(r"^#\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert wanted <= set(env_example()) | commented


def test_example_config_loads_with_the_env_example_filled_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example config, with a value for every line of the env example, is valid."""
    for name in env_example():
        monkeypatch.setenv(name, f"example-{name.lower()}-value")
    for name in re.findall(r"^#\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M):
        monkeypatch.setenv(name, f"example-{name.lower()}-value")
    assert config.load(EXAMPLE_CONFIG).sources


def test_env_example_leaves_every_secret_empty() -> None:
    """The example carries no secret that could be installed by mistake."""
    assert env_example()
    assert all(value == "" for value in env_example().values())


# -- the Dockerfile ------------------------------------------------------------------------


def test_healthcheck_asks_healthz_not_readyz() -> None:
    """HEALTHCHECK asks /healthz on the port the image's CMD listens on: a realtime upstream
    that is down makes /readyz 503, which must not make the container unhealthy."""
    (check,) = docker("HEALTHCHECK")
    assert "/healthz" in check
    assert "/readyz" not in check
    argv = json.loads(docker("CMD")[-1])
    port = argv[argv.index("--listen") + 1].rpartition(":")[2]
    assert f"127.0.0.1:{port}/healthz" in check


def test_image_cmd_is_accepted_by_the_cli() -> None:
    """The image's CMD is an exec-form `pbx-bridge run` the real parser accepts, with its data
    directory on the image's volume and its config where the README mounts it."""
    argv = json.loads(docker("CMD")[-1])
    assert argv[0] == "pbx-bridge"
    args = cli._parser().parse_args(argv[1:])
    assert args.command == "run"
    assert json.loads(docker("VOLUME")[-1]) == [args.data_dir]
    assert f":{args.config}:ro" in section(README.read_text(), "## Docker")
    host, _ = config.split_listen(args.listen, "--listen")
    assert not config.is_loopback(host), "a container must listen beyond its own loopback"


def test_image_runs_as_a_user_that_owns_the_volume() -> None:
    """USER is not root, and the RUN steps give that user the data volume."""
    (user,) = docker("USER")
    assert user not in ("root", "0")
    (volume,) = json.loads(docker("VOLUME")[-1])
    assert any(f"chown {user}" in run and volume in run for run in docker("RUN"))


def test_image_copies_what_pip_install_needs() -> None:
    """The COPY steps bring the metadata, the readme it names and the package, and the
    .dockerignore lets each of them into the build context."""
    copied = {args.split()[0] for args in docker("COPY")} | {
        word for args in docker("COPY") for word in args.split()[:-1]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for needed in ("pyproject.toml", project["readme"], "bridge"):
        assert needed in copied, needed
        assert not ignored(needed, dockerignore()), f".dockerignore drops {needed}"
    assert any("pip install" in run and "'.[" in run for run in docker("RUN"))


def test_package_data_covers_every_data_file_of_bridge() -> None:
    """Every non-Python file under bridge/ (the schema, the status page, the OpenAPI document)
    matches pyproject's package-data, so `pip install .` (and the image) carries it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["bridge"]
    package = ROOT / "bridge"
    missing = [
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
        and not any(fnmatch.fnmatch(str(path.relative_to(package)), p) for p in patterns)
    ]
    assert missing == []


def test_dockerignore_keeps_local_state_out() -> None:
    """The venv, the outbox, caches, VCS data and local configs stay out of the build context."""
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        "var/outbox.sqlite3",
        ".git/HEAD",
        "bridge/__pycache__/cli.cpython-311.pyc",
        "bridge/api/__pycache__/hub.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        ".ruff_cache/CACHEDIR.TAG",
        "pbx_bridge.egg-info/PKG-INFO",
        "build/lib/bridge/cli.py",
        "my.toml",
        "my.env",
    ):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "bridge/cli.py", "bridge/schema/event.schema.json"):
        assert not ignored(path, patterns), path


# -- the docs ------------------------------------------------------------------------------

OUTSIDE = re.compile(r"\.\./shared|/work/|DESIGN\.md|vendor-docs|shared/")


@pytest.mark.parametrize(
    "path", [README, *DOCS, UNIT, DOCKERFILE, ENV_EXAMPLE], ids=lambda p: p.name
)
def test_nothing_points_outside_the_repository(path: Path) -> None:
    """The README, the docs and the packaging name no file outside the repository."""
    assert not OUTSIDE.findall(path.read_text())


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    """Each relative link of README.md and docs/*.md leads to a file of this repository."""
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        resolved = (path.parent / target.split("#")[0]).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            broken.append(target)
    assert broken == []


def mapped_modules(page: str) -> set[str]:
    """The modules the map's first column names, relative to bridge/. A cell may name siblings
    by their bare names after a first one with its folder (`vendors/oncall.py`, `oncall_cdr.py`),
    or a whole folder (`simulate/`)."""
    table = page[page.index("## Module map") :]
    names: set[str] = set()
    for row in re.findall(r"^\| (.*?) \|", table, re.M):
        folder = ""
        for token in re.findall(r"`([^`]+)`", row):
            token = token.removeprefix("bridge/")
            if "/" in token:
                folder = token.rpartition("/")[0] + "/"
                names.add(token)
            else:
                names.add(folder + token)
    return names


def test_architecture_module_map_names_every_module() -> None:
    """docs/architecture.md's module map names every module of bridge/."""
    names = mapped_modules((ROOT / "docs" / "architecture.md").read_text())
    missing = []
    for module in sorted((ROOT / "bridge").rglob("*.py")):
        relative = str(module.relative_to(ROOT / "bridge"))
        if relative.endswith("/__init__.py"):
            continue  # a subpackage is named by its modules
        if relative not in names and not any(
            n.endswith("/") and relative.startswith(n) for n in names
        ):
            missing.append(relative)
    assert missing == []
