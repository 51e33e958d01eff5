"""Fixtures shared by the whole test suite."""
from __future__ import annotations

import pytest

from instseg_ros.ros.graph import apply_ros_environment, restore_environment, ros_environment


@pytest.fixture(scope="session", autouse=True)
def ros_env() -> dict[str, str]:
    """The ROS environment of this test run, applied to ``os.environ`` for the whole session.

    A random ROS_DOMAIN_ID (concurrent runs on one machine stay apart), discovery limited to
    localhost, rmw_fastrtps_cpp with the project's Fast DDS profile (config/fastdds_profile.xml).
    Autouse and session-wide because Fast DDS reads its profile once per process, at the first
    participant: it must be in place before any test calls ``rclpy.init``. Pass the returned dict
    as ``env=`` to subprocesses that join the graph.
    """
    env = ros_environment()
    previous = apply_ros_environment(env)
    yield env
    restore_environment(previous)


@pytest.fixture
def sigterm_training():
    """run(model, config_path) -> (returncode, stdout, stderr): ``instseg train <model> --config <path>`` in a
    process of its own (one torch thread), sent SIGTERM once its log shows step 2 (one JSON record per step
    with log_every 1), then waited for (at most 120 s)."""
    import os
    import signal
    import subprocess
    import sys

    def run(model: str, config_path) -> tuple[int, str, str]:
        proc = subprocess.Popen([sys.executable, "-m", "instseg_ros.cli", "train", model, "--config", str(config_path)],
                                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        try:
            for line in proc.stderr:
                if '"step": 2' in line:
                    break
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        return proc.returncode, out, err

    return run


@pytest.fixture
def rotated_grid_box():
    """A 0.3 x 0.2 x 0.1 m grid of 7 x 5 x 3 points rotated 30 deg about z, centred at (1, 2, 3), labelled 5,
    plus 10 far background points (label 0) and 4 invalid (0, 0, 0) points labelled 5 that consumers must
    ignore. Returns (box points (105, 3), centroid, covariance of the box, all points, labels int32)."""
    import numpy as np

    from instseg_ros.core.geometry import moments

    a = np.radians(30)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    g = np.stack(np.meshgrid(np.linspace(-0.15, 0.15, 7), np.linspace(-0.1, 0.1, 5), np.linspace(-0.05, 0.05, 3),
                             indexing="ij"), -1).reshape(-1, 3)
    box = g @ rot_z.T + [1.0, 2.0, 3.0]
    c, C = moments(box)
    pts = np.concatenate([box, np.full((10, 3), 50.0), np.zeros((4, 3))])
    labels = np.concatenate([np.full(len(box), 5), np.zeros(10), np.full(4, 5)]).astype(np.int32)
    return box, c, C, pts, labels
