"""Real rclpy graph, two processes: a peer publisher subprocess and this process as subscriber.

640x480 rgb8 + 16UC1 pairs, 300k-point labeled clouds and ObjectInstanceArray messages cross the
process boundary on this run's ROS_DOMAIN_ID with localhost discovery and config/fastdds_profile.xml
(the session fixture ``ros_env``); nothing may be lost, duplicated, reordered or altered.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from instseg_ros.ros.conversions import image_to_array, instances_to_msg, msg_to_instances, msg_to_labeled_cloud
from instseg_ros.ros.graph import ros_environment
from instseg_ros.ros.tools import peer

pytestmark = pytest.mark.graph

N_IMAGES, N_CLOUDS, N_INSTANCES, N_POINTS = 10, 4, 10, 300_000


@pytest.fixture(scope="module")
def exchange(ros_env):
    result = peer.run_exchange(ros_env, images=N_IMAGES, clouds=N_CLOUDS, instances=N_INSTANCES, points=N_POINTS,
                               period=0.05, timeout=60.0, slop=0.01)
    print(f"exchange: {result.elapsed_s:.1f} s, peer: {result.peer_output.strip()}")
    return result


def indices(result, name):
    return [peer.index_of(m.header.frame_id) for _, m in result.received[name]]


def test_everything_arrives_once_in_order(exchange):
    assert exchange.peer_returncode == 0, exchange.peer_output
    assert indices(exchange, "color") == list(range(N_IMAGES)), exchange.peer_output
    assert indices(exchange, "depth") == list(range(N_IMAGES))
    assert indices(exchange, "cloud") == list(range(N_CLOUDS))
    assert indices(exchange, "instances") == list(range(N_INSTANCES))


def test_images_arrive_unchanged(exchange):
    for _, m in exchange.received["color"]:
        k = peer.index_of(m.header.frame_id)
        assert (m.encoding, m.width, m.height) == ("rgb8", 640, 480)
        np.testing.assert_array_equal(image_to_array(m), peer.expected_color(k))
    for _, m in exchange.received["depth"]:
        k = peer.index_of(m.header.frame_id)
        assert m.encoding == "16UC1"
        raw = peer.expected_depth(k)
        np.testing.assert_array_equal(image_to_array(m, metres=False), raw)
        np.testing.assert_allclose(image_to_array(m), raw.astype(np.float32) * 0.001, rtol=1e-6)


def test_clouds_arrive_unchanged(exchange):
    assert exchange.received["cloud"], "no cloud arrived"
    for _, m in exchange.received["cloud"]:
        k = peer.index_of(m.header.frame_id)
        pts, cols, labs = peer.expected_cloud(k, N_POINTS)
        c = msg_to_labeled_cloud(m)
        assert c.points.shape == (N_POINTS, 3)
        np.testing.assert_array_equal(c.points, pts)
        np.testing.assert_array_equal(c.colors, cols)
        np.testing.assert_array_equal(c.labels, labs)


def test_object_instances_arrive_unchanged(exchange):
    for _, m in exchange.received["instances"]:
        k = peer.index_of(m.header.frame_id)
        want = peer.expected_instances(k)
        got, rots, ext = msg_to_instances(m)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.centroids, want.centroids)
        np.testing.assert_array_equal(got.covariances, want.covariances)
        np.testing.assert_array_equal(got.num_points, want.num_points)
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        ref = instances_to_msg(want, m.header)
        for o, r in zip(m.instances, ref.instances):
            assert o.pose == r.pose and o.extent == r.extent


def test_synchronizer_pairs_every_image_on_the_live_graph(exchange):
    # depth stamps are 3 ms after colour, slop 10 ms: all pairs matched, each with its own partner
    assert len(exchange.pairs) == N_IMAGES
    assert all(c.header.frame_id == d.header.frame_id for c, d in exchange.pairs)
    assert exchange.sync_stats.matched == N_IMAGES and exchange.sync_stats.dropped == [0, 0]


_SHM_PROBE = """
import os, rclpy
ctx = rclpy.Context(); rclpy.init(args=[], context=ctx)
node = rclpy.create_node('instseg_shm_probe', context=ctx)
# this process's own mappings only (other processes on the machine create segments too)
mapped = {line.split()[-1] for line in open('/proc/self/maps') if '/dev/shm/fastrtps_' in line}
print(max([os.path.getsize(f) for f in mapped if 'port' not in f and not f.endswith('_el')], default=0))
node.destroy_node(); rclpy.shutdown(context=ctx)
"""


def test_fastdds_profile_gives_64mb_shared_memory_segment(ros_env):
    # A participant created with the profile maps a >= 64 MiB shared-memory segment; without the
    # profile Fast DDS uses its 512 kB default (which forces big samples onto fragmented UDP).
    # The probe runs alone on a domain of its own, so it maps no other participant's segment.
    domain = int(ros_env["ROS_DOMAIN_ID"]) % 232 + 1

    def probe(env):
        env = dict(env, ROS_DOMAIN_ID=str(domain))
        out = subprocess.run([sys.executable, "-c", _SHM_PROBE], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "XML" not in out.stderr, out.stderr  # Fast DDS reports profile parse errors with XMLPARSER
        return int(out.stdout.strip().splitlines()[-1])

    assert probe(ros_env) >= 64 * 2**20
    plain = dict(ros_env)
    plain.pop("FASTRTPS_DEFAULT_PROFILES_FILE")
    plain.pop("FASTDDS_DEFAULT_PROFILES_FILE")
    assert 0 < probe(plain) < 4 * 2**20


def test_ros_environment_contents(tmp_path):
    env = ros_environment(domain_id=17, base={"ROS_PYTHON_CHECK_FIELDS": "1", "ROS_LOCALHOST_ONLY": "1", "X": "y"})
    assert env["ROS_DOMAIN_ID"] == "17" and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp" and env["X"] == "y"
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_profile.xml")
    assert "ROS_PYTHON_CHECK_FIELDS" not in env and "ROS_LOCALHOST_ONLY" not in env
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID 300"):
        ros_environment(domain_id=300)
    with pytest.raises(FileNotFoundError):
        ros_environment(profile=tmp_path / "missing.xml")
    with pytest.raises(RuntimeError, match="apply_ros_environment"):
        # a domain other than this process's: refused before anything is spawned
        peer.run_exchange(ros_environment(domain_id=int(os.environ["ROS_DOMAIN_ID"]) % 232 + 1, base={}))
    json.dumps(env)  # plain strings only: usable as a subprocess env


def test_best_effort_like_a_camera_driver_loses_nothing_with_the_profile(ros_env):
    # qos_profile_sensor_data-style (best effort) streams lost 40-100 % of images and clouds across
    # processes on the default Fast DDS transports here; with the project's profile none is lost.
    r = peer.run_exchange(ros_env, images=N_IMAGES, clouds=N_CLOUDS, instances=0, points=N_POINTS, period=0.05,
                          timeout=30.0, reliability="best_effort")
    assert r.peer_returncode == 0, r.peer_output
    assert {k: len(v) for k, v in r.received.items()} == {"color": N_IMAGES, "depth": N_IMAGES, "cloud": N_CLOUDS,
                                                           "instances": 0}
    assert indices(r, "cloud") == list(range(N_CLOUDS))
