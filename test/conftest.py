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
