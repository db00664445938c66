"""The container recipes: Dockerfile (x86-64) and Dockerfile.arm64 (Raspberry Pi 4/5).

Fast tests parse the Dockerfiles (no Docker needed): stages, non-root user, health check,
volume, environment, and that the runtime stages install nothing from the build extra. Slow
tests check what the images rely on without building one: a runtime-only venv serves and
scores with the committed model, and every runtime pin has an aarch64 wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "default"
BASE_IMAGE = "python:3.11-slim-bookworm"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- a small Dockerfile parser

@dataclass
class Stage:
    name: str
    image: str
    platform: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            tokens = shlex.split(args)
            if len(tokens) == 2 and "=" not in tokens[0]:  # legacy `ENV key value`
                out[tokens[0]] = tokens[1]
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                out[key] = value
        return out


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations, drop comments and blank lines."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            key, _, value = rest.strip().partition("=")
            args[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)
            continue
        if instruction == "FROM":
            tokens = rest.split()
            platform = None
            while tokens and tokens[0].startswith("--"):
                flag = tokens.pop(0)
                if flag.startswith("--platform="):
                    platform = flag.split("=", 1)[1]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), tokens[0])
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, image, platform))
            continue
        assert stages, f"{path.name}: {instruction} before the first FROM"
        stages[-1].instructions.append((instruction, rest.strip()))
    return args, stages


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form."""
    return json.loads(args)


def build_extra() -> list[str]:
    names = []
    for requirement in PYPROJECT["project"]["optional-dependencies"]["build"]:
        names.append(re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower())
    return names


def runtime_requirements() -> list[str]:
    return [re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in PYPROJECT["project"]["dependencies"]]


def import_names(distribution: str) -> list[str]:
    return {"scikit-learn": ["sklearn"], "tensorflow-cpu": ["tensorflow"]}.get(distribution, [distribution.replace("-", "_")])


DOCKERFILES = {"Dockerfile": "amd64", "Dockerfile.arm64": "arm64"}


@pytest.fixture(params=list(DOCKERFILES), ids=list(DOCKERFILES))
def dockerfile(request) -> tuple[str, dict[str, str], list[Stage]]:
    args, stages = parse(REPO / request.param)
    return request.param, args, stages


def stage(stages: list[Stage], name: str) -> Stage:
    found = [s for s in stages if s.name == name]
    assert found, f"no stage named {name!r}: {[s.name for s in stages]}"
    return found[0]


# --------------------------------------------------------------------------- fast: the recipes

def test_stages_and_base_image(dockerfile) -> None:
    name, args, stages = dockerfile
    names = [s.name for s in stages]
    assert names[0] == "convert" and names[-1] == "runtime", names
    assert "venv" in names
    for s in stages:
        assert s.image == BASE_IMAGE, f"{name} stage {s.name} is FROM {s.image}"
    assert args.get("PYTHON_IMAGE") == BASE_IMAGE


def test_convert_stage_has_the_build_extra_and_converts(dockerfile) -> None:
    name, _, stages = dockerfile
    convert = stage(stages, "convert")
    runs = " ".join(convert.all("RUN"))
    assert re.search(r"pip install -c constraints\.txt '\.\[build\]'", runs), runs
    assert "fdedge convert --model-dir models/default" in runs
    assert any("models/default" in c for c in convert.all("COPY"))


def test_runtime_stages_install_nothing_from_the_build_extra(dockerfile) -> None:
    name, _, stages = dockerfile
    forbidden = build_extra() + ["tensorflow", "keras", "sklearn", "scikit-learn", "tf2onnx"]
    for s in stages:
        if s.name == "convert":
            continue
        for run in s.all("RUN"):
            assert "[build" not in run and "[test" not in run, f"{name} {s.name}: {run}"
            for package in forbidden:
                assert not re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", run, re.I), \
                    f"{name} {s.name} mentions {package}: {run}"
    runtime = stage(stages, "runtime")
    assert not any("pip" in run for run in runtime.all("RUN")), "the runtime stage must not run pip"
    sources = [re.search(r"--from=(\S+)", c).group(1) for c in runtime.all("COPY") if "--from=" in c]
    assert set(sources) <= {"venv", "convert"}, sources
    venv = stage(stages, "venv")
    runs = " ".join(venv.all("RUN"))
    assert re.search(r"pip install (-c constraints\.txt \.|.*--no-index .*fdedge)(\s|$)", runs), runs


def test_runtime_stage_copies_only_the_converted_model(dockerfile) -> None:
    name, _, stages = dockerfile
    convert = stage(stages, "convert")
    runs = " ".join(convert.all("RUN"))
    copied = re.search(r"cp (models/default/\S+(?: models/default/\S+)*) /artifacts/", runs)
    assert copied, runs
    assert set(copied.group(1).split()) == {f"models/default/{f}" for f in ("model.onnx", "scalers.npz", "manifest.json")}


def test_runtime_stage_is_non_root_with_volume_healthcheck_and_env(dockerfile) -> None:
    name, _, stages = dockerfile
    runtime = stages[-1]
    user = runtime.last("USER")
    assert user and user.split(":")[0] not in {"root", "0"}, f"{name}: USER {user}"
    assert json.loads(runtime.last("VOLUME")) == ["/data"]
    assert runtime.last("EXPOSE") == "5000"

    healthcheck = runtime.last("HEALTHCHECK")
    assert healthcheck and " CMD " in f" {healthcheck} "
    command = exec_form(healthcheck.split(" CMD ", 1)[1] if " CMD " in healthcheck else healthcheck.split("CMD ", 1)[1])
    assert command[0] == "python" and "/healthz" in " ".join(command)
    assert "curl" not in healthcheck and "wget" not in healthcheck
    compile(command[-1], "<healthcheck>", "exec")  # the python -c snippet is valid Python

    env = runtime.env()
    assert env["FDEDGE_DATA_DIR"] == "/data"
    assert env["FDEDGE_MODEL_DIR"].endswith("/models/default")
    assert env["FDEDGE_WEB_DIR"].endswith("/web")
    assert env.get("FDEDGE_PORT", "5000") == "5000"
    assert int(env["FDEDGE_THREADS"]) >= 1
    # onnxruntime's Linux telemetry (DNS lookups of a Microsoft collector, a cache under $HOME) stays off
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"
    model_copy = [c for c in runtime.all("COPY") if "--from=convert" in c]
    assert model_copy and model_copy[0].split()[-1].rstrip("/") == env["FDEDGE_MODEL_DIR"]
    web_copy = [c for c in runtime.all("COPY") if c.split()[0] == "web"]
    assert web_copy and web_copy[0].split()[-1].rstrip("/") == env["FDEDGE_WEB_DIR"]
    assert exec_form(runtime.last("CMD")) == ["fdedge", "serve"]
    # the environment variables are real settings of `fdedge serve`
    from edge.settings import Settings
    known = {"FDEDGE_" + f.upper() for f in Settings.__dataclass_fields__}
    assert {k for k in env if k.startswith("FDEDGE_")} <= known


def test_settings_in_the_images_parse() -> None:
    from edge.settings import Settings
    for name in DOCKERFILES:
        _, stages = parse(REPO / name)
        env = {k: v for k, v in stages[-1].env().items() if k.startswith("FDEDGE_")}
        settings = Settings.from_args([], environ=env)
        assert settings.data_dir == Path("/data") and settings.port == 5000 and settings.host == "0.0.0.0"


def test_arm64_platforms() -> None:
    _, stages = parse(REPO / "Dockerfile.arm64")
    assert stage(stages, "convert").platform == "$BUILDPLATFORM"
    assert stage(stages, "wheels").platform == "$BUILDPLATFORM"
    assert stage(stages, "venv").platform == "linux/arm64"
    assert stage(stages, "runtime").platform == "linux/arm64"
    download = " ".join(stage(stages, "wheels").all("RUN"))
    assert "--only-binary=:all:" in download and "aarch64" in download and "-c constraints.txt" in download
    venv = " ".join(stage(stages, "venv").all("RUN"))
    assert "--no-index" in venv, "the arm64 stage installs offline from the wheels stage"
    env = stages[-1].env()
    assert int(env["FDEDGE_THREADS"]) <= 4 and env["OMP_NUM_THREADS"] == "1"


def test_x86_stages_run_on_the_target_platform() -> None:
    _, stages = parse(REPO / "Dockerfile")
    assert all(s.platform is None for s in stages)


def test_dockerignore_lets_in_exactly_what_the_dockerfiles_copy() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "allow-list style: everything out, then exceptions"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for name in DOCKERFILES:
        _, stages = parse(REPO / name)
        for s in stages:
            for copy in s.all("COPY"):
                if "--from=" in copy:
                    continue
                for source in copy.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"{name}: COPY {source} is excluded by .dockerignore"
                    assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
    assert not {".venv", ".git", "data", "test-output", "bench"} & allowed


def test_local_base_script_is_optional() -> None:
    """docker/local-base.sh prepares an offline base image; nothing else may depend on it."""
    script = REPO / "docker" / "local-base.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    for name in DOCKERFILES:
        _, stages = parse(REPO / name)
        for s in stages:
            for instruction, args in s.instructions:
                assert "docker/" not in args and "local-base" not in args, f"{name}: {instruction} {args}"


# --------------------------------------------------------------------------- slow: what the images rely on

def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/onnxruntime/", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runtime_only_venv_serves_the_committed_model(tmp_path: Path, server_factory) -> None:
    if not (BUNDLED / "manifest.json").is_file():
        pytest.skip("models/default has no converted model yet")
    # The same context the images get: sources, pins, model, pages.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(REPO / name, context / name)
    for name in ("edge", "convert", "simulator"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                          "-c", str(context / "constraints.txt"), str(context)],
                         capture_output=True, text=True, timeout=800)
    if pip.returncode != 0 and not _pypi_reachable() and "No matching distribution" in pip.stderr + pip.stdout:
        pytest.skip(f"cannot install the runtime dependencies offline: {pip.stderr[-500:]}")
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]

    probe = ("import importlib.util, json, edge; print(json.dumps({'edge': edge.__file__, 'found': "
             "[m for m in ('tensorflow', 'keras', 'sklearn', 'tf2onnx', 'onnx', 'joblib') "
             "if importlib.util.find_spec(m) is not None]}))")
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["found"] == [], f"build-extra packages importable in a runtime install: {found['found']}"
    assert str(venv) in found["edge"], found["edge"]

    # the installed `fdedge serve`, run from outside the checkout, without the test's FDEDGE_ settings
    server = server_factory(BUNDLED, command=[str(venv / "bin" / "fdedge")], cwd=tmp_path, clean_env=True,
                            args=["--web-dir", str(REPO / "web")])
    with server.start(timeout=60):
        url = server.url
        from tests.harness import reading
        body = json.dumps({"Time": "2023-11-06 15:00:00", **reading(1)}).encode()
        request = urllib.request.Request(url + "/send", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
            answer = json.loads(r.read())
        assert len(answer) == 1 and sorted(answer[0]) == [f"fault{i}" for i in range(8)]
        assert all(isinstance(v, float) for v in answer[0].values())
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ok"}
        with urllib.request.urlopen(url + "/api/model", timeout=5) as r:
            assert json.loads(r.read())["version"] == json.loads((BUNDLED / "manifest.json").read_text())["version"]
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()


def runtime_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_runtime_dependency_is_pinned() -> None:
    pins = runtime_pins()
    missing = [name for name in runtime_requirements() if name not in pins]
    assert not missing, f"runtime dependencies without an exact pin in constraints.txt: {missing}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_runtime_pin_has_an_aarch64_wheel(tmp_path: Path) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable")
    pins = runtime_pins()
    missing = {}
    for name in runtime_requirements():
        requirement = f"{name}=={pins[name]}"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
             "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
             "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
             "--no-deps", "-d", str(tmp_path / "wheels"), requirement],
            capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            missing[requirement] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    assert not missing, f"no aarch64 wheel for: {missing}"
    wheels = sorted(p.name for p in (tmp_path / "wheels").glob("*.whl"))
    for name in runtime_requirements():
        assert any(w.lower().replace("_", "-").startswith(f"{name}-{pins[name]}-") for w in wheels), (name, wheels)
    for wheel in wheels:
        assert wheel.endswith("-any.whl") or "aarch64" in wheel, wheel
