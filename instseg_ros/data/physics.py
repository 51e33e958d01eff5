"""Drop shapes onto a table or into a bin with pybullet so they rest in touching, occluding piles.

World frame: z up, metres, the support surface (table top or bin floor) at z = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instseg_ros.data.shapes import Part, Shape


@dataclass
class PhysicsConfig:
    """Simulation settings. Times in seconds, velocities in m/s and rad/s."""
    time_step: float = 1.0 / 120.0
    max_time: float = 2.0
    settle_lin_vel: float = 0.03
    settle_ang_vel: float = 0.5
    check_every: int = 12
    solver_iterations: int = 10
    friction: tuple[float, float] = (0.4, 0.9)
    rolling_friction: float = 0.01
    spinning_friction: float = 0.001
    damping_round: tuple[float, float] = (0.2, 0.8)  # (linear, angular) damping of round shapes
    fallen_below: float = 0.1  #: metres below the lowest support top at which a body counts as fallen off


@dataclass
class Support:
    """Static collision geometry: a list of axis-aligned boxes (centre (3,), half extents (3,)), world frame."""
    boxes: list[tuple[np.ndarray, np.ndarray]]


def _collision_shape(p, client: int, part: Part) -> int:
    kw = dict(physicsClientId=client)
    if part.kind == "box":
        return p.createCollisionShape(p.GEOM_BOX, halfExtents=list(map(float, part.size)), **kw)
    if part.kind == "sphere":
        return p.createCollisionShape(p.GEOM_SPHERE, radius=float(part.size[0]), **kw)
    if part.kind == "cylinder":
        return p.createCollisionShape(p.GEOM_CYLINDER, radius=float(part.size[0]), height=float(part.size[1]), **kw)
    if part.kind == "capsule":
        return p.createCollisionShape(p.GEOM_CAPSULE, radius=float(part.size[0]), height=float(part.size[1]), **kw)
    if part.kind == "hull":
        return p.createCollisionShape(p.GEOM_MESH, vertices=hull_points(part.vertices).tolist(), **kw)
    raise ValueError(f"unknown collision part kind {part.kind!r}")


MAX_HULL_POINTS = 48  #: collision hulls are cut down to this many vertices (Bullet's cost grows with them)


def hull_points(vertices: np.ndarray, max_points: int = MAX_HULL_POINTS) -> np.ndarray:
    """(k, 3) convex-hull vertices of ``vertices`` (n, 3), reduced to at most ``max_points`` by farthest-point
    sampling (the kept hull lies inside the full one, within a few mm for objects of a few cm)."""
    from scipy.spatial import ConvexHull, QhullError

    v = np.asarray(vertices, float)
    try:
        v = v[ConvexHull(v).vertices]
    except QhullError:  # degenerate (flat) point sets: keep them all, Bullet copes
        return v
    if len(v) <= max_points:
        return v
    keep = [int(np.argmax(np.linalg.norm(v - v.mean(0), axis=1)))]
    d = np.linalg.norm(v - v[keep[0]], axis=1)
    for _ in range(max_points - 1):
        i = int(np.argmax(d))
        keep.append(i)
        d = np.minimum(d, np.linalg.norm(v - v[i], axis=1))
    return v[keep]


def _body_collision(p, client: int, shape: Shape) -> int:
    if len(shape.parts) == 1 and not np.any(shape.parts[0].pos) and shape.parts[0].quat[3] == 1.0:
        return _collision_shape(p, client, shape.parts[0])
    kinds = {"box": p.GEOM_BOX, "sphere": p.GEOM_SPHERE, "cylinder": p.GEOM_CYLINDER, "capsule": p.GEOM_CAPSULE}
    if any(pt.kind not in kinds for pt in shape.parts):
        raise ValueError("compound shapes must be made of primitives")
    types, radii, halfs, lengths = [], [], [], []
    for pt in shape.parts:
        types.append(kinds[pt.kind])
        radii.append(float(pt.size[0]) if pt.kind != "box" else 0.0)
        halfs.append(list(map(float, pt.size)) if pt.kind == "box" else [0.0, 0.0, 0.0])
        lengths.append(float(pt.size[1]) if pt.kind in ("cylinder", "capsule") else 0.0)
    return p.createCollisionShapeArray(
        shapeTypes=types, radii=radii, halfExtents=halfs, lengths=lengths,
        collisionFramePositions=[list(map(float, pt.pos)) for pt in shape.parts],
        collisionFrameOrientations=[list(map(float, pt.quat)) for pt in shape.parts], physicsClientId=client)


def drop(shapes: list[Shape], support: Support, spawn_xy: np.ndarray, rng: np.random.Generator,
         cfg: PhysicsConfig | None = None, spawn: list | None = None) -> tuple[list[np.ndarray], dict]:
    """Drop ``shapes`` onto ``support`` and return their resting poses.

    Args:
        shapes: objects (body frames as built by :mod:`shapes`).
        support: static boxes (table top, bin floor and walls).
        spawn_xy: (2, 2) [[xmin, ymin], [xmax, ymax]] world-frame region above which objects spawn.
        rng: randomness for spawn poses and friction.
        spawn: optional per shape ``None`` (random orientation, stacked above ``spawn_xy``) or a float (4, 4)
            T_world_body start pose (objects placed upright next to each other on a table).
    Returns:
        (poses, info): poses = list of float64 (4, 4) T_world_body (a body that fell off the supports keeps
        the pose where it was taken out, below them); info = {"sim_time": s, "steps": n}.
    """
    import pybullet as p

    cfg = cfg or PhysicsConfig()
    client = p.connect(p.DIRECT)
    try:
        p.setGravity(0, 0, -9.81, physicsClientId=client)
        p.setTimeStep(cfg.time_step, physicsClientId=client)
        p.setPhysicsEngineParameter(numSolverIterations=cfg.solver_iterations, physicsClientId=client)
        for c, h in support.boxes:
            col = p.createCollisionShape(p.GEOM_BOX, halfExtents=list(map(float, h)), physicsClientId=client)
            b = p.createMultiBody(0, col, basePosition=list(map(float, c)), physicsClientId=client)
            p.changeDynamics(b, -1, lateralFriction=float(rng.uniform(*cfg.friction)), physicsClientId=client)
        bodies = []
        z = 0.0
        lo, hi = np.asarray(spawn_xy, float)
        from instseg_ros.core.geometry import rotation_to_quaternion

        for k, s in enumerate(shapes):
            if spawn is not None and spawn[k] is not None:
                pos = [float(x) for x in spawn[k][:3, 3]]
                q = np.asarray(rotation_to_quaternion(spawn[k][:3, :3]), float)
            else:
                ext = s.extent
                z += ext * 0.35 + 0.01
                pos = [float(rng.uniform(lo[0], hi[0])), float(rng.uniform(lo[1], hi[1])), z + ext / 2]
                q = rng.normal(size=4)
                q /= np.linalg.norm(q)
            col = _body_collision(p, client, s)
            vol = np.prod(s.vertices.max(0) - s.vertices.min(0))
            mass = float(max(500.0 * vol, 0.01))
            b = p.createMultiBody(mass, col, basePosition=pos, baseOrientation=q.tolist(), physicsClientId=client)
            kw = dict(lateralFriction=float(rng.uniform(*cfg.friction)), rollingFriction=cfg.rolling_friction,
                      spinningFriction=cfg.spinning_friction, physicsClientId=client)
            if s.round:
                kw.update(linearDamping=cfg.damping_round[0], angularDamping=cfg.damping_round[1])
            p.changeDynamics(b, -1, **kw)
            bodies.append(b)
        steps = 0
        max_steps = int(cfg.max_time / cfg.time_step)
        # bodies that fell below every support surface (off the table) are frozen where they are and leave
        # the simulation: they would fall forever and keep the pile from counting as settled
        fall_z = min(float(c[2] + h[2]) for c, h in support.boxes) - cfg.fallen_below if support.boxes else -np.inf
        final: dict[int, tuple] = {}
        active = list(bodies)
        while steps < max_steps and active:
            for _ in range(cfg.check_every):
                p.stepSimulation(physicsClientId=client)
            steps += cfg.check_every
            if steps * cfg.time_step < 0.3:
                continue
            moving = False
            for b in list(active):
                pos, q = p.getBasePositionAndOrientation(b, physicsClientId=client)
                if pos[2] < fall_z:
                    final[b] = (pos, q)
                    p.removeBody(b, physicsClientId=client)
                    active.remove(b)
                    continue
                if not moving:
                    lin, ang = p.getBaseVelocity(b, physicsClientId=client)
                    if np.linalg.norm(lin) > cfg.settle_lin_vel or np.linalg.norm(ang) > cfg.settle_ang_vel:
                        moving = True
            if not moving:
                break
        poses = []
        for b in bodies:
            pos, q = final[b] if b in final else p.getBasePositionAndOrientation(b, physicsClientId=client)
            T = np.eye(4)
            T[:3, :3] = np.asarray(p.getMatrixFromQuaternion(q), float).reshape(3, 3)
            T[:3, 3] = pos
            poses.append(T)
        return poses, {"sim_time": steps * cfg.time_step, "steps": steps}
    finally:
        p.disconnect(client)
