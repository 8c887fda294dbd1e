"""constraints.txt is the one set of pinned versions, and everything that installs agrees with it:
pyproject.toml's floors admit the pins, the launcher files install from it and pin nothing of
their own, .ci/run installs with it, kuberay.yaml's pip list and image match it, and the
environment these tests run in is the pinned one."""
import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CORE = ("ray", "torch", "mlflow", "optuna")
LAUNCHER_FILES = ["gpu.yaml", "local.yaml"]
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")


def read_constraints(text: str) -> dict[str, Version]:
    """name -> pinned version; every line must be an exact `name==version` pin without extras."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert not req.extras, f"a constraints file cannot hold extras: {raw!r}"
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, \
            f"not an exact pin: {raw!r}"
        pins[req.name.lower()] = Version(specs[0].version)
    return pins


PINS = read_constraints((REPO / "constraints.txt").read_text())


def pinned_requirements(tokens) -> list[Requirement]:
    """The requirements in a token list that carry a version specifier (`pkg==1.2`, `pkg>=1`)."""
    out = []
    for token in tokens:
        if token.startswith("-") or "/" in token or "$" in token:
            continue
        try:
            req = Requirement(token)
        except Exception:
            continue
        if req.specifier:
            out.append(req)
    return out


def pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell command."""
    tokens = shlex.split(command.replace(";", " ; ").replace("&&", " && "))
    runs, current = [], None
    for i, token in enumerate(tokens):
        if token.endswith("pip") and i + 1 < len(tokens) and tokens[i + 1] == "install":
            current = []
            runs.append(current)
        elif token in (";", "&&", "||", "|"):
            current = None
        elif current is not None and token != "install":
            current.append(token)
    return runs


def test_constraints_pin_the_core_exactly():
    assert set(CORE) <= set(PINS), f"constraints.txt must pin {CORE}"
    with pytest.raises(AssertionError, match="not an exact pin"):
        read_constraints("ray==2.60.*\n")
    with pytest.raises(AssertionError, match="extras"):
        read_constraints("ray[tune]==2.60.0\n")


def test_pyproject_floors_admit_the_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {Requirement(d).name.lower(): Requirement(d) for d in project["dependencies"]}
    for name, version in PINS.items():
        if name in deps:
            assert version in deps[name].specifier, f"pyproject's {deps[name]} refuses the pin {name}=={version}"
    # the code uses Ray Train V2 (tested with the pinned minor only): the floor is that minor
    floors = [Version(s.version) for s in deps["ray"].specifier if s.operator == ">="]
    assert floors and floors[0].release[:2] == PINS["ray"].release[:2], deps["ray"]
    assert {"tune", "train"} <= deps["ray"].extras


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_files_install_from_the_constraints_only(name):
    config = yaml.safe_load((REPO / "clusters" / name).read_text())
    installs = [args for key in COMMAND_KEYS for command in config.get(key) or [] for args in pip_installs(command)]
    assert installs, "the project is installed by pip in the setup commands"
    for args in installs:
        assert "-c" in args and args[args.index("-c") + 1] == "$HOME/s3/constraints.txt", args
        assert not pinned_requirements(args), f"a version pinned outside constraints.txt: {args}"
    assert any("-e" in args and args[args.index("-e") + 1] == "$HOME/s3" for args in installs)


def test_ci_installs_with_the_constraints():
    lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines()
             if "pip install" in ln and not ln.lstrip().startswith("#")]
    project = [args for line in lines for args in pip_installs(line) if "-e" in args]
    assert project and all("-c" in args and args[args.index("-c") + 1] == "constraints.txt" for args in project)
    torch_pins = [r for line in lines for args in pip_installs(line) for r in pinned_requirements(args)]
    assert torch_pins
    for req in torch_pins:   # the CPU build installed first must be the pinned version
        assert PINS[req.name.lower()] in req.specifier, req


def test_kuberay_matches_the_constraints():
    job = yaml.safe_load((REPO / "clusters" / "kuberay.yaml").read_text())
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    reqs = [Requirement(r) for r in runtime_env["pip"]]
    assert reqs
    for req in reqs:
        assert req.name.lower() in PINS and str(req.specifier) == f"=={PINS[req.name.lower()]}", req
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == str(PINS["ray"])
    images = re.findall(r"image: rayproject/ray:(\S+?)-", (REPO / "clusters" / "kuberay.yaml").read_text())
    assert images and set(images) == {str(PINS["ray"])}


def test_the_tested_environment_is_the_pinned_one():
    for name, pinned in PINS.items():
        installed = Version(importlib.metadata.version(name))
        assert Version(installed.base_version) == pinned, f"{name} {installed} installed, {pinned} pinned"


def test_stray_pins_are_caught():
    args = pip_installs('"$HOME/s3env/bin/pip" install -q -c x.txt "torch==2.12.*" -e "$HOME/s3" && echo ok')[0]
    assert [str(r) for r in pinned_requirements(args)] == ["torch==2.12.*"]
