"""scripts/setup.sh argument handling (the parts that must not touch the machine)."""
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _run(*args):
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_gpu_option_without_a_driver_fails_clearly_before_installing_anything():
    r = _run("--gpu")
    assert r.returncode == 3
    assert "nvidia-smi" in r.stderr and "without --gpu" in r.stderr
    assert "[setup]" not in r.stdout          # nothing was installed


def test_unknown_option_is_refused():
    r = _run("--cuda")
    assert r.returncode == 2 and "unknown option '--cuda'" in r.stderr
