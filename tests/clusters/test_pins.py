"""constraints.txt is the one set of pinned versions, and everything that installs agrees with it:
pyproject.toml's floors admit the pins, the launcher files install from it and pin nothing of
their own, README.md's two set-up commands (which .ci/run reads and runs) install with it,
kuberay.yaml's pip list and image match it, and the environment these tests run in is the pinned
one."""
import importlib.metadata
import re
import shlex
import subprocess
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


def readme_setup_commands(text: str) -> list[str]:
    """The ```bash blocks of README.md's "## Set up" section, each as one string."""
    section = text.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0].strip() for block in section.split("```bash\n")[1:]]


def ci_readme_commands(readme: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / ".ci" / "run"), "--print-readme-commands", str(readme)],
                          capture_output=True, text=True, timeout=60)


def test_ci_runs_readmes_two_commands_which_install_with_the_constraints():
    commands = readme_setup_commands((REPO / "README.md").read_text())
    assert len(commands) == 2, f"README.md's set-up has exactly two commands (the main job, the tests): {commands}"
    proc = ci_readme_commands(REPO / "README.md")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == commands, "CI reads the commands it runs from README.md"
    # CI installs nothing of its own: what it installs is what README's commands install
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in ci if "pip install" in ln], "CI installs only through README.md's commands"
    main_job, tests = commands
    assert main_job.endswith("python run_grid.py") and tests.endswith("python -m pytest")
    for command, target in ((main_job, "."), (tests, ".[dev]")):
        installs = pip_installs(command)
        project = [args for args in installs if "-e" in args]
        assert [args[args.index("-e") + 1] for args in project] == [target], command
        assert all("-c" in args and args[args.index("-c") + 1] == "constraints.txt" for args in project), command
        pins = [r for args in installs for r in pinned_requirements(args)]
        assert [r.name for r in pins] == ["torch"], command   # the CPU build first, at the pinned version
        for req in pins:
            assert PINS[req.name.lower()] in req.specifier, req


def test_ci_fails_loudly_when_readme_has_no_commands(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text().replace("Run the tests", "Then test"))
    proc = ci_readme_commands(readme)
    assert proc.returncode != 0 and not proc.stdout
    assert proc.stderr.startswith("error: ") and "Run the tests" in proc.stderr, proc.stderr


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
