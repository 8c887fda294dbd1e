"""s3core.config.check_device: a device this machine cannot use is a one-line ConfigError, from
S3Config.validate, from `python -m s3core --device ...`, and from the trial-start probe."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s3core.config import ConfigError, S3Config, check_device

REPO = Path(__file__).resolve().parents[2]
NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_accepted_as_str_and_torch_device():
    assert check_device("cpu") == "cpu"
    assert check_device(torch.device("cpu"), probe=True) == "cpu"
    assert S3Config(device="cpu").validate().device == "cpu"


@pytest.mark.parametrize("device", ["tpu:7", "cuda:x", "", "CPU"])
def test_not_a_device_name(device):
    with pytest.raises(ConfigError, match="not a device name; use cpu, cuda"):
        check_device(device)


@pytest.mark.parametrize("device", ["xla", "meta", "hpu"])
def test_device_types_s3core_does_not_run_on(device):
    with pytest.raises(ConfigError, match="runs on cpu, cuda, mps only"):
        check_device(device)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_names_the_fix(device):
    with pytest.raises(ConfigError, match="no usable CUDA GPU.*use device cpu"):
        S3Config(device=device).validate()


def test_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\): use cuda:0 to cuda:1"):
        check_device("cuda:7")


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine where CUDA ops fail")
def test_probe_catches_a_gpu_that_is_listed_but_unusable(monkeypatch):
    # As on a node with a broken driver: torch reports a GPU, but the first op on it fails.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == "cuda"          # the cheap check cannot tell
    with pytest.raises(ConfigError, match="listed but unusable") as err:
        check_device("cuda", probe=True)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_probe_passes_on_a_working_gpu():
    assert check_device("cuda", probe=True) == "cuda"
    assert check_device(f"cuda:{torch.cuda.device_count() - 1}", probe=True)
    with pytest.raises(ConfigError, match="CUDA device"):
        check_device(f"cuda:{torch.cuda.device_count()}")


def run_s3core(*args):
    return subprocess.run([sys.executable, "-m", "s3core", "--epochs-special", "1", "--epochs-select", "0", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("device", ["tpu:7"] + (["cuda"] if NO_CUDA else []))
def test_cli_bad_device_is_one_line_exit_2(device):
    proc = run_s3core("--device", device)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device"), proc.stderr
    assert proc.stdout == "", "nothing may run (not even the data load) before the device is checked"
