"""Noise-free depth rendering of triangle meshes (Open3D ``RaycastingScene``) and camera helpers.

Used to build known geometry for tests and the TSDF benchmark. Frames as in core.geometry: camera
optical frame x right, y down, z forward; ``T_world_camera`` camera -> world; metres.

It lives with the synthetic data (not in ``mapping/``, whose modules the mapping node runs) because it
makes test and benchmark inputs: ``instseg bench occuseg`` (:mod:`instseg_ros.occuseg.bench`) ray-casts
its TSDF views with it, so it has to ship in the package rather than sit under ``test/``.
"""
from __future__ import annotations

import numpy as np


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_camera (4, 4) of a camera at ``eye`` looking at ``target`` (world, metres)."""
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    up = np.asarray(up, np.float64)
    if abs(np.dot(z, up)) > 0.999:
        up = np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def intrinsics(width: int = 640, height: int = 480, fov_x_deg: float = 69.0) -> np.ndarray:
    """Pinhole K (3, 3) with the principal point at the image centre."""
    f = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def box_mesh(center, size, color=(200, 60, 60)):
    """Axis-aligned box as an Open3D legacy TriangleMesh with per-vertex colour (uint8 RGB)."""
    import open3d as o3d

    m = o3d.geometry.TriangleMesh.create_box(*[float(s) for s in size])
    m.translate(np.asarray(center, float) - np.asarray(size, float) / 2)
    m.paint_uniform_color(np.asarray(color, float) / 255.0)
    return m


def render(meshes, K: np.ndarray, T_world_camera: np.ndarray, width: int, height: int):
    """Ray-cast meshes.

    Args: meshes: list of legacy ``o3d.geometry.TriangleMesh`` (optionally vertex-coloured), world frame.
    Returns:
        depth float32 (H, W) metres along the optical axis (0 = no hit); rgb uint8 (H, W, 3) flat colour
        of the hit mesh (its first vertex colour, grey if none); ids int32 (H, W) mesh index + 1 (0 = none).
    """
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    colors = []
    for m in meshes:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
        c = np.asarray(m.vertex_colors)
        colors.append((c[0] * 255).astype(np.uint8) if len(c) else np.array([128, 128, 128], np.uint8))
    T_cw = np.linalg.inv(T_world_camera)
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        intrinsic_matrix=o3d.core.Tensor(K), extrinsic_matrix=o3d.core.Tensor(T_cw),
        width_px=int(width), height_px=int(height))
    ans = scene.cast_rays(rays)
    t_hit = ans["t_hit"].numpy()
    geom = ans["geometry_ids"].numpy().astype(np.int64)
    hit = np.isfinite(t_hit)
    dirs = rays.numpy()[..., 3:6]
    dirs_cam = dirs @ T_cw[:3, :3].T
    depth = np.where(hit, t_hit * dirs_cam[..., 2], 0.0).astype(np.float32)
    ids = np.where(hit, geom + 1, 0).astype(np.int32)
    palette = np.concatenate([np.zeros((1, 3), np.uint8), np.stack(colors)]) if colors else np.zeros((1, 3), np.uint8)
    rgb = palette[ids]
    return depth, rgb, ids
