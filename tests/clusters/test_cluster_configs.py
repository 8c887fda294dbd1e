"""Every file in clusters/ loads and is accepted by the tool that will run it.

Launcher files (gpu.yaml, local.yaml) are checked against Ray's own JSON schema and by the same
prepare/validate pair `ray up` calls; the KubeRay RayJob against a small explicit schema (Ray ships
none for it). On top: shell commands are whole (a stray `#` in a plain YAML scalar silently cuts a
command), the MLflow server and tracking URI agree, and every run_grid.py flag used exists.
"""

import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

# shared with `python -m orchestrator.check_cluster FILE` (the CLI users run)
from orchestrator.check_cluster import RAYJOB_SCHEMA, validate_launcher_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTERS_DIR = REPO_ROOT / "clusters"
CLUSTER_FILES = sorted(CLUSTERS_DIR.glob("*.yaml"))
LAUNCHER_FILES = ["gpu.yaml", "local.yaml"]

# run_grid.py's command line (keep in sync with its argparse parser).
RUN_GRID_FLAGS = {
    "--preset",
    "--benchmark",
    "--data-dir",
    "--tracking-uri",
    "--experiment",
    "--storage-path",
    "--resume",
    "--max-concurrent",
    "--gpus-per-trial",
    "--workers-per-trial",
    "--report-dir",
    "--executor",
}
RUN_GRID_PRESETS = {"smoke", "default", "paper", "search"}

COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
# A command that ends in one of these was most likely cut short (e.g. by a YAML comment).
DANGLING_SHELL_END = re.compile(r"(\|\||&&|\||\\|;|\(|\{|<|>|=)\s*$")
MLFLOW_PORT = 5000
SHIM_TAG = "# s3-cluster: removed by ray down"

def load_cluster_file(name):
    return yaml.safe_load((CLUSTERS_DIR / name).read_text())


def shell_commands(config):
    """(key, command) for every shell command a launcher file runs on the nodes."""
    return [(key, command) for key in COMMAND_KEYS for command in config.get(key) or []]


def assert_command_whole(command):
    assert isinstance(command, str) and command.strip(), f"empty or non-string command: {command!r}"
    assert not DANGLING_SHELL_END.search(command), f"command looks cut short: {command!r}"
    shlex.split(command)  # raises on an unclosed quote
    checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert checked.returncode == 0, f"bash syntax error in {command!r}: {checked.stderr}"


def run_grid_args(command):
    """The arguments after run_grid.py (or clusters/run_grid.sh, which passes them on) in a shell
    command, or None if it does not run it."""
    tokens = shlex.split(command)
    for index, token in enumerate(tokens):
        if token.endswith(("run_grid.py", "run_grid.sh")):
            return tokens[index + 1 :]
    return None


def assert_run_grid_args_known(args):
    flags = [arg.split("=", 1)[0] for arg in args if arg.startswith("--") and arg != "--"]
    unknown = sorted(set(flags) - RUN_GRID_FLAGS)
    assert not unknown, f"run_grid.py has no flag(s) {unknown}"
    if "--preset" in args:
        assert args[args.index("--preset") + 1] in RUN_GRID_PRESETS


def test_clusters_dir_holds_the_expected_files():
    assert {path.name for path in CLUSTER_FILES} >= {"gpu.yaml", "local.yaml", "kuberay.yaml"}


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda path: path.name)
def test_every_cluster_file_loads(path):
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict) and config


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_file_is_accepted_by_ray(name):
    validate_launcher_config(load_cluster_file(name))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_commands_are_whole(name):
    commands = shell_commands(load_cluster_file(name))
    assert commands
    for _, command in commands:
        assert_command_whole(command)


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_installs_project_on_every_node(name):
    config = load_cluster_file(name)
    assert config["file_mounts"].get("~/s3") == ".", "the repo checkout must be mounted at ~/s3"
    setup = " ".join(config["setup_commands"])
    # the versions come from constraints.txt (tests/clusters/test_pins.py), the project editable
    assert re.search(r'pip"? install (-q )?-c "\$HOME/s3/constraints.txt" -e "\$HOME/s3"', setup), setup
    assert '"ray[default]"' in setup, "the head needs the dashboard and job server"
    # nothing a shell reads is edited on every node: the project's environment is one file,
    # read by clusters/run_grid.sh only
    assert ".bashrc" not in setup and ".profile" not in setup
    assert any('> "$HOME/s3_cluster/env.sh"' in c and "s3env/bin:$PATH" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_ray_is_called_by_path_not_through_a_shell_edit(name):
    config = load_cluster_file(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in config[key]:
            for match in re.finditer(r"(\S*)\bray (start|stop)\b", command):
                assert match.group(1) == '"$HOME/s3env/bin/', f"{key}: call the venv's ray by path: {command!r}"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_only_the_tagged_shim_line_touches_bashrc(name):
    """One ~/.bashrc line on the head, tagged for clusters/ray_shim.sh to remove at `ray down`."""
    config = load_cluster_file(name)
    touching = [c for key in COMMAND_KEYS for c in config.get(key) or [] if ".bashrc" in c]
    assert len(touching) == 1 and touching[0] in config["head_setup_commands"], touching
    assert SHIM_TAG in touching[0] and 's3_cluster/bin:$PATH' in touching[0]
    assert "s3env/bin" not in touching[0].replace("s3env/bin/ray", ""), "the venv's python must not go on PATH"
    shim = (CLUSTERS_DIR / "ray_shim.sh").read_text()
    assert f"/{SHIM_TAG}$/d" in shim
    assert any('"$HOME/s3/clusters/ray_shim.sh" "$HOME/s3_cluster/bin/ray"' in c for c in config["head_setup_commands"])


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_head_runs_mlflow_server_and_driver_finds_it(name):
    config = load_cluster_file(name)
    head_commands = config["head_setup_commands"] + config["head_start_ray_commands"]
    servers = [command for command in head_commands if "mlflow\" server" in command or "mlflow server" in command]
    assert len(servers) == 1
    server_args = shlex.split(servers[0])
    assert server_args[server_args.index("--port") + 1] == str(MLFLOW_PORT)
    # no authentication: never on the network, reached through an SSH tunnel
    assert server_args[server_args.index("--host") + 1] == "127.0.0.1"
    # artifacts proxied by the server (a laptop's client reads them through the tunnel), not a
    # head-local default artifact root
    assert "--serve-artifacts" in server_args and "--artifacts-destination" in server_args
    assert "--default-artifact-root" not in server_args
    assert "--backend-store-uri" in server_args and "nohup" in servers[0] and "setsid" in servers[0]
    # `pgrep -f "mlflow server"` as the is-it-running guard matches the guard's own shell (its
    # command line holds the whole server command), so the server would never start.
    assert "pgrep" not in servers[0]
    assert any(f"/dev/tcp/127.0.0.1/{MLFLOW_PORT}" in command and "exit 1" in command for command in head_commands), (
        "ray up should fail when MLflow does not come up"
    )
    exports = [command for command in config["head_setup_commands"] if "MLFLOW_TRACKING_URI" in command]
    assert len(exports) == 1 and f"MLFLOW_TRACKING_URI=http://127.0.0.1:{MLFLOW_PORT}" in exports[0]
    assert '>> "$HOME/s3_cluster/env.sh"' in exports[0] and "RAY_ADDRESS=auto" in exports[0]


def test_gpu_cluster_has_cpu_head_and_gpu_workers():
    config = load_cluster_file("gpu.yaml")
    assert config["provider"]["type"] == "aws"
    assert config["auth"]["ssh_user"] == "ubuntu"
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [node for name, node in node_types.items() if name != config["head_node_type"]]
    assert any(node["resources"].get("GPU", 0) >= 1 and node["max_workers"] >= 1 for node in workers)
    # The autoscaler on the head needs boto3; overriding head_setup_commands drops Ray's default.
    assert "boto3" in " ".join(config["setup_commands"] + config["head_setup_commands"])


def test_local_cluster_defaults_target_this_machine():
    provider = load_cluster_file("local.yaml")["provider"]
    assert provider["type"] == "local" and provider["head_ip"] == "127.0.0.1"
    assert provider["head_ip"] not in provider["worker_ips"]
    auth = load_cluster_file("local.yaml")["auth"]
    assert auth["ssh_user"] and auth["ssh_private_key"]


def test_kuberay_rayjob_structure():
    jsonschema.validate(load_cluster_file("kuberay.yaml"), RAYJOB_SCHEMA)


def test_kuberay_entrypoint_runs_paper_grid_with_known_flags():
    entrypoint = load_cluster_file("kuberay.yaml")["spec"]["entrypoint"]
    assert_command_whole(entrypoint)
    args = run_grid_args(entrypoint)
    assert args is not None
    assert_run_grid_args_known(args)
    assert args[args.index("--preset") + 1] == "paper"
    assert "--storage-path" in args, "multi-node Tune needs shared storage"


@pytest.mark.parametrize("path", CLUSTER_FILES + [REPO_ROOT / "docs" / "CLUSTER.md"], ids=lambda p: p.name)
def test_documented_run_grid_invocations_use_known_flags(path):
    """Examples in comments and docs: `... run_grid.sh --preset paper \\ --data-dir ...`."""
    if not path.exists():
        pytest.skip(f"{path.name} not written yet")
    text = re.sub(r"\\\n\s*#?\s*", " ", path.read_text())  # join continued lines
    checked = 0
    for line in text.splitlines():
        found = re.search(r"run_grid\.(py|sh)", line)
        if not found:
            continue
        tail = line[found.end():].split("`")[0].split(" | ")[0].split("'")[0]
        assert_run_grid_args_known(re.findall(r"--[a-z][a-z0-9-]*(?:=\S+)?|\S+", tail))
        checked += 1
    assert checked or path.suffix == ".yaml"


def test_flags_exist_in_run_grid_source_when_present():
    sources = [REPO_ROOT / "run_grid.py", *sorted((REPO_ROOT / "orchestrator").rglob("*.py"))]
    text = "\n".join(path.read_text() for path in sources if path.exists())
    if not (REPO_ROOT / "run_grid.py").exists() or "argparse" not in text:
        pytest.skip("run_grid.py's parser is not written yet")
    missing = sorted(flag for flag in RUN_GRID_FLAGS if f'"{flag}"' not in text and f"'{flag}'" not in text)
    assert not missing, f"flags this test assumes but run_grid.py/orchestrator does not define: {missing}"


# The checks above must be able to fail.


def test_malformed_yaml_is_rejected():
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("cluster_name: s3\nprovider: {type: aws\n  region: [us-west-2\n")


def test_launcher_config_missing_provider_is_rejected():
    config = load_cluster_file("gpu.yaml")
    del config["provider"]
    with pytest.raises(jsonschema.ValidationError):
        validate_launcher_config(config)


def test_launcher_config_with_unknown_head_type_is_rejected():
    config = load_cluster_file("gpu.yaml")
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        validate_launcher_config(config)


def test_command_cut_by_yaml_comment_is_caught():
    # Plain scalar: everything from " #" on is a comment, leaving a dangling `||`.
    config = yaml.safe_load("setup_commands:\n  - test -d ~/s3env || #python3 -m venv ~/s3env\n")
    assert config["setup_commands"] == ["test -d ~/s3env ||"]
    with pytest.raises(AssertionError):
        assert_command_whole(config["setup_commands"][0])


def test_rayjob_without_gpu_limits_is_rejected():
    config = load_cluster_file("kuberay.yaml")
    for group in config["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            container["resources"]["limits"].pop("nvidia.com/gpu")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, RAYJOB_SCHEMA)


def test_unknown_run_grid_flag_is_rejected():
    with pytest.raises(AssertionError):
        assert_run_grid_args_known(["--preset", "paper", "--no-such-flag", "1"])


def test_check_cluster_plans_trials_from_the_node_types(capsys):
    """`python -m orchestrator.check_cluster FILE --gpus-per-trial G`: the grid's own plan on the
    file's node types, before any node exists (gpu.yaml has no GPU node at start)."""
    from orchestrator.check_cluster import main

    assert main([str(CLUSTERS_DIR / "gpu.yaml"), "--gpus-per-trial", "0.25"]) == 0
    out = capsys.readouterr().out
    config = load_cluster_file("gpu.yaml")
    worker = config["available_node_types"]["gpu_worker"]
    per_node = int(worker["resources"]["GPU"] / 0.25)
    assert f"at most {per_node * min(worker['max_workers'], config['max_workers'])} trial(s) at once" in out, out
    assert "GPU: 0.25}" in out

    assert main([str(CLUSTERS_DIR / "gpu.yaml"), "--gpus-per-trial", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "holds at most" in err and "max_workers" in err
