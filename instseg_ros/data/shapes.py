"""Procedural object shapes: triangle meshes for rendering + collision descriptions for pybullet.

Every shape is built in its own body frame (metres, centred near its centre of mass). A mesh carries
per-vertex normals that are valid for smooth shading: flat-shaded shapes (boxes, hulls) duplicate
vertices per face so that interpolated normals equal the face normal.

Collision is described as a list of :class:`Part` (pybullet primitives or convex vertex sets with a
local offset), so compound shapes (tori, cups, combined primitives) stay cheap to simulate.

Train / val / test use disjoint shape parameters: :func:`sample_shape` draws parameters, quantises them
to a grid and re-draws until the grid cell's hash belongs to the requested split (80 / 10 / 10 %).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from instseg_ros.data.io import FAMILIES

SPLIT_BUCKETS = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}
PARAM_QUANT_M = 0.005  #: grid (metres) on which shape parameters are hashed to a split


@dataclass
class Part:
    """One convex collision piece in the body frame.

    kind: "box" (size = half extents (3,)), "sphere" (size = (r,)), "cylinder" / "capsule"
    (size = (r, length) along local z; capsule length = the cylindrical part), "hull" (vertices (n, 3)).
    pos (3,) and quat (x, y, z, w) place the piece in the body frame.
    """
    kind: str
    size: np.ndarray | None = None
    vertices: np.ndarray | None = None
    pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    quat: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))


@dataclass
class Shape:
    """A rigid object: render mesh + collision parts, body frame, metres.

    vertices float64 (n, 3); triangles int32 (m, 3), counter-clockwise seen from outside;
    normals float64 (n, 3) unit; family: name in :data:`FAMILIES`; params: the drawn parameters;
    round: True when it rolls (spheres, cylinders ...), gets rolling friction + damping.
    up_axis: body axis (0, 1, 2) that points up when the object stands the way people put it on a table
    (cans, bottles, mugs, cereal boxes), -1 when it has no such pose.
    tri_part: None (one appearance part) or int32 (m,) appearance part 0..k-1 of every triangle: the object is
    rendered with one material per part (a bottle and its cap, a drill's body, battery and chuck) but stays ONE
    instance; part_roles: (k,) names of the parts ("body", "cap", "lid", "band", "handle", "inside", "battery",
    "chuck", "grip", "head", "nozzle", "part"), used to pick plausible materials.
    """
    family: str
    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    parts: list[Part]
    params: dict
    round: bool = False
    up_axis: int = -1
    tri_part: np.ndarray | None = None
    part_roles: tuple[str, ...] = ()

    @property
    def n_parts(self) -> int:
        """Number of appearance parts (1 when the object is rendered with one material)."""
        return 1 if self.tri_part is None else int(self.tri_part.max()) + 1

    @property
    def family_id(self) -> int:
        return FAMILIES.index(self.family) + 1

    @property
    def extent(self) -> float:
        """Largest axis-aligned body-frame extent, metres."""
        return float((self.vertices.max(0) - self.vertices.min(0)).max())


# ------------------------------------------------------------------------------------------ mesh helpers

def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(ln, 1e-12)


def _flat(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Duplicate vertices per triangle so interpolated normals are face normals."""
    vv = v[f].reshape(-1, 3)
    ff = np.arange(len(vv), dtype=np.int32).reshape(-1, 3)
    fn = np.cross(vv[1::3] - vv[0::3], vv[2::3] - vv[0::3])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    return vv, ff, np.repeat(fn, 3, axis=0)


def box_mesh(half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis-aligned box with half extents (3,), 24 vertices (4 per face) and 12 triangles."""
    hx, hy, hz = half
    c = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)])
    # corner index = 4*ix + 2*iy + iz
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = []
    for a, b, cc, d in quads:
        f += [(a, b, cc), (a, cc, d)]
    return _flat(c, np.array(f, dtype=np.int32))


def lathe_mesh(r: np.ndarray, z: np.ndarray, seg: int, cap_bottom: bool, cap_top: bool, smooth: bool = True):
    """Surface of revolution about z of the profile (r_i, z_i) (bottom to top), closed by flat caps.

    Caps get their own vertices (sharp rim). Profile points with r = 0 are fine (cone tip).
    """
    th = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    ct, st = np.cos(th), np.sin(th)
    n = len(r)
    V = np.stack([np.outer(r, ct), np.outer(r, st), np.repeat(z[:, None], seg, 1)], -1).reshape(-1, 3)
    a = np.arange(n - 1)[:, None] * seg + np.arange(seg)[None, :]  # quad corners of row i, column j
    b = np.arange(n - 1)[:, None] * seg + (np.arange(seg)[None, :] + 1) % seg
    c, d = a + seg, b + seg
    F = np.stack([np.stack([a, b, d], -1), np.stack([a, d, c], -1)], 2).reshape(-1, 3).astype(np.int32)
    # drop degenerate triangles at r = 0 rows
    tri = V[F]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    F = F[area > 1e-12]
    N = _vertex_normals(V, F) if smooth else None
    verts, faces, norms = [V], [F], [N]
    off = len(V)
    for use, k, sgn in ((cap_bottom, 0, -1.0), (cap_top, n - 1, 1.0)):
        if not use or r[k] <= 0:
            continue
        ring = np.stack([r[k] * ct, r[k] * st, np.full(seg, z[k])], -1)
        cv = np.vstack([ring, [[0, 0, z[k]]]])
        j = np.arange(seg)
        cf = np.stack([j, (j + 1) % seg, np.full(seg, seg)] if sgn > 0 else [(j + 1) % seg, j, np.full(seg, seg)], 1)
        verts.append(cv)
        faces.append(cf.astype(np.int32) + off)
        norms.append(np.tile([0, 0, sgn], (seg + 1, 1)).astype(float))
        off += len(cv)
    V = np.vstack(verts)
    F = np.vstack(faces)
    if not smooth:
        return _flat(V, F)
    return V, F, np.vstack(norms)


def sphere_mesh(rx: float, ry: float, rz: float, n_lat: int = 10, n_lon: int = 16, stretch: float = 0.0):
    """UV ellipsoid; ``stretch`` > 0 moves the upper half up and the lower half down (a capsule)."""
    phi = np.linspace(0, np.pi, n_lat + 1)
    th = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    unit = np.stack([np.outer(np.sin(phi), np.cos(th)), np.outer(np.sin(phi), np.sin(th)),
                     np.repeat(np.cos(phi)[:, None], n_lon, 1)], -1).reshape(-1, 3)
    i = np.arange(n_lat)[:, None]
    a = i * n_lon + np.arange(n_lon)[None, :]
    b = i * n_lon + (np.arange(n_lon)[None, :] + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    both = np.stack([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], 2)  # (n_lat, n_lon, 2, 3)
    keep = np.stack([np.broadcast_to(i > 0, a.shape), np.broadcast_to(i < n_lat - 1, a.shape)], -1)
    F = both[keep]  # the poles' rows keep one triangle per quad
    V = unit * np.array([rx, ry, rz])
    V[:, 2] += np.sign(unit[:, 2]) * stretch / 2
    # ellipsoid normal: grad of (x/rx)^2 + ... ; for a capsule the unit-sphere normal is exact
    N = unit / np.array([rx, ry, rz]) if stretch == 0 else unit.copy()
    N /= np.maximum(np.linalg.norm(N, axis=1, keepdims=True), 1e-12)
    return V, F.astype(np.int32), N


def torus_mesh(R: float, r: float, n_u: int = 24, n_v: int = 10):
    u = np.linspace(0, 2 * np.pi, n_u, endpoint=False)
    v = np.linspace(0, 2 * np.pi, n_v, endpoint=False)
    U, Vv = np.meshgrid(u, v, indexing="ij")
    ctr = np.stack([R * np.cos(U), R * np.sin(U), np.zeros_like(U)], -1)
    nrm = np.stack([np.cos(Vv) * np.cos(U), np.cos(Vv) * np.sin(U), np.sin(Vv)], -1)
    V = (ctr + r * nrm).reshape(-1, 3)
    i, j = np.arange(n_u)[:, None], np.arange(n_v)[None, :]
    a, b = i * n_v + j, ((i + 1) % n_u) * n_v + j
    c, d = i * n_v + (j + 1) % n_v, ((i + 1) % n_u) * n_v + (j + 1) % n_v
    F = np.stack([np.stack([a, b, d], -1), np.stack([a, d, c], -1)], 2).reshape(-1, 3)
    return V, F.astype(np.int32), nrm.reshape(-1, 3)


def torus_arc_mesh(R: float, r: float, a0: float, a1: float, n_u: int = 12, n_v: int = 8, caps: bool = False):
    """Tube along the arc a0..a1 (radians) of a circle of radius R in the xz plane (a mug handle), open or,
    with ``caps``, closed by flat discs at both ends (a closed mesh: its front faces cover its silhouette, and
    an end poking out of a thin cup wall shows a disc, not a hole)."""
    u = np.linspace(a0, a1, n_u)
    v = np.linspace(0, 2 * np.pi, n_v, endpoint=False)
    U, Vv = np.meshgrid(u, v, indexing="ij")
    ctr = np.stack([R * np.cos(U), np.zeros_like(U), R * np.sin(U)], -1)
    radial = np.stack([np.cos(U), np.zeros_like(U), np.sin(U)], -1)
    nrm = np.cos(Vv)[..., None] * radial + np.sin(Vv)[..., None] * np.array([0.0, 1.0, 0.0])
    V = (ctr + r * nrm).reshape(-1, 3)
    i, j = np.arange(n_u - 1)[:, None], np.arange(n_v)[None, :]
    a, b = i * n_v + j, (i + 1) * n_v + j
    c, d = i * n_v + (j + 1) % n_v, (i + 1) * n_v + (j + 1) % n_v
    F = np.stack([np.stack([a, d, b], -1), np.stack([a, c, d], -1)], 2).reshape(-1, 3)  # ccw seen from outside
    if not caps:
        return V, F.astype(np.int32), nrm.reshape(-1, 3)
    meshes = [(V, F.astype(np.int32), nrm.reshape(-1, 3))]
    for end, sgn in ((0, -1.0), (n_u - 1, 1.0)):
        ring = V.reshape(n_u, n_v, 3)[end]
        out = sgn * np.array([-np.sin(u[end]), 0.0, np.cos(u[end])])  # arc tangent, pointing out of the tube
        cv = np.vstack([ring, ctr[end, 0]])
        j = np.arange(n_v)
        cf = np.stack([np.full(n_v, n_v), j, (j + 1) % n_v], 1)
        if np.cross(cv[cf[0, 1]] - cv[cf[0, 0]], cv[cf[0, 2]] - cv[cf[0, 0]]) @ out < 0:
            cf = cf[:, [0, 2, 1]]
        meshes.append((cv, cf.astype(np.int32), np.tile(out, (n_v + 1, 1))))
    return _merge(meshes)


def hull_mesh(points: np.ndarray):
    """Convex hull of points, flat shaded, outward-oriented triangles."""
    from scipy.spatial import ConvexHull

    h = ConvexHull(points)
    V = points[h.vertices]
    remap = -np.ones(len(points), dtype=np.int64)
    remap[h.vertices] = np.arange(len(h.vertices))
    F = remap[h.simplices].astype(np.int32)
    c = V.mean(0)
    fn = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    flip = np.einsum("ij,ij->i", fn, V[F[:, 0]] - c) < 0
    F[flip] = F[flip][:, [0, 2, 1]]
    return _flat(V, F)


def _merge(meshes):
    vs, fs, ns, off = [], [], [], 0
    for v, f, n in meshes:
        vs.append(v)
        fs.append(f + off)
        ns.append(n)
        off += len(v)
    return np.vstack(vs), np.vstack(fs).astype(np.int32), np.vstack(ns)


def _merge_parts(meshes, groups):
    """Merge meshes (v, f, n) and label each triangle with the appearance part ``groups[i]`` of its mesh.
    Returns v, f, n, tri_part int32 (m,)."""
    v, f, n = _merge(meshes)
    tri_part = np.repeat(np.asarray(groups, np.int32), [len(m[1]) for m in meshes])
    return v, f, n, tri_part


def _cyl_mesh(r: float, h: float, seg: int = 24, z0: float | None = None):
    """Closed cylinder of radius r along z from z0 to z0 + h (default centred)."""
    z0 = -h / 2 if z0 is None else z0
    return lathe_mesh(np.array([r, r]), np.array([z0, z0 + h]), seg, True, True)


def _transform(mesh, R: np.ndarray, t: np.ndarray):
    v, f, n = mesh
    return v @ R.T + t, f, n @ R.T


def _rot_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> quaternion (x, y, z, w)."""
    from instseg_ros.core.geometry import rotation_to_quaternion

    return np.asarray(rotation_to_quaternion(R), dtype=float)


def _rand_rot(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (QR of a Gaussian matrix, sign-fixed to det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _axis_rot(axis: int, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    if axis == 0:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 1:
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# ------------------------------------------------------------------------------------------ families

def _size(rng: np.random.Generator, lo: float = 0.02, hi: float = 0.25) -> float:
    """Largest dimension, metres: mostly 4-18 cm (graspable objects), sometimes the full 2-25 cm."""
    if rng.random() < 0.8:
        return float(np.exp(rng.uniform(np.log(0.04), np.log(0.18))))
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _cyl_parts(r: float, h: float) -> list[Part]:
    return [Part("cylinder", np.array([r, h]))]


def _make_box(rng, s, mp=False):
    dims = np.sort([s, s * rng.uniform(0.25, 1.0), s * rng.uniform(0.08, 1.0)])[::-1]
    dims = np.maximum(dims, 0.01)
    rng.shuffle(dims)
    if mp:
        return _box_parts(rng, dims)
    v, f, n = box_mesh(dims / 2)
    return v, f, n, [Part("box", dims / 2)], {"dims": dims.tolist()}, False


def _box_parts(rng, dims):
    """A box of outer size ``dims`` in two appearance parts: a lid (storage box, tin, shoe box: a slab on one
    face, 1-4 mm wider than the body) or a band (a sleeve around the long axis, 0.8 mm proud of the faces)."""
    half = dims / 2
    if rng.random() < 0.55:
        a = int(np.argmin(dims)) if dims.min() < 0.6 * np.median(dims) else int(np.argmax(dims))
        t = float(dims[a] * rng.uniform(0.12, 0.3))
        o = float(rng.uniform(0.001, 0.004))
        other = np.arange(3) != a
        bh = half.copy()
        bh[other] -= o
        bh[a] = (dims[a] - t + 0.001) / 2
        bc = np.zeros(3)
        bc[a] = -half[a] + bh[a]
        lh = half.copy()
        lh[a] = t / 2
        lc = np.zeros(3)
        lc[a] = half[a] - t / 2
        v, f, n, tp = _merge_parts([_transform(box_mesh(bh), np.eye(3), bc), _transform(box_mesh(lh), np.eye(3), lc)],
                                   [0, 1])
        return (v, f, n, [Part("box", half.copy())], {"dims": dims.tolist(), "lid": t, "lid_axis": a}, False, tp,
                ("body", "lid"))
    a = int(np.argmax(dims))
    w = float(dims[a] * rng.uniform(0.2, 0.5))
    at = float(rng.uniform(-1, 1) * (half[a] - w / 2) * 0.8)
    bh = half.copy()
    bh[np.arange(3) != a] += 0.0008
    bh[a] = w / 2
    bc = np.zeros(3)
    bc[a] = at
    v, f, n, tp = _merge_parts([box_mesh(half), _transform(box_mesh(bh), np.eye(3), bc)], [0, 1])
    return v, f, n, [Part("box", half.copy())], {"dims": dims.tolist(), "band": w, "band_at": at}, False, tp, (
        "body", "band")


def _make_cylinder(rng, s, mp=False):
    if rng.random() < 0.5:
        h, r = s, s * rng.uniform(0.1, 0.5)
    else:
        r, h = s / 2, s * rng.uniform(0.1, 1.0)
    r, h = max(r, 0.008), max(h, 0.01)
    if mp:  # jar / tub / tin with a lid (1-8 % wider than the body), wipes or snack container
        hl = float(h * rng.uniform(0.08, 0.25))
        rl = float(r * rng.uniform(1.0, 1.08) + 0.001)
        rb = r
        r = rl  # outer radius: collision and params
        v, f, n, tp = _merge_parts([_cyl_mesh(rb, h - hl + 0.001, 28, -h / 2), _cyl_mesh(rl, hl, 28, h / 2 - hl)],
                                   [0, 1])
        return v, f, n, _cyl_parts(r, h), {"r": r, "h": h, "lid": hl, "rb": rb}, True, tp, ("body", "lid")
    v, f, n = lathe_mesh(np.array([r, r]), np.array([-h / 2, h / 2]), 28, True, True)
    return v, f, n, _cyl_parts(r, h), {"r": r, "h": h}, True


def _make_sphere(rng, s, mp=False):
    r = max(s / 2 * rng.uniform(0.4, 0.8), 0.01)
    v, f, n = sphere_mesh(r, r, r, 12, 20)
    return v, f, n, [Part("sphere", np.array([r]))], {"r": r}, True


def _make_capsule(rng, s, mp=False):
    r = max(s * rng.uniform(0.08, 0.3), 0.008)
    length = max(s - 2 * r, 0.005)
    v, f, n = sphere_mesh(r, r, r, 12, 20, stretch=length)
    return v, f, n, [Part("capsule", np.array([r, length]))], {"r": r, "l": length}, True


def _make_cone(rng, s, mp=False):
    h = s * rng.uniform(0.4, 1.0)
    r = max(s / 2 * rng.uniform(0.3, 1.0), 0.01)
    top = r * rng.uniform(0.0, 0.6)  # truncated cones (cups, lamp shades) as well as sharp ones
    v, f, n = lathe_mesh(np.array([r, top]), np.array([-h / 3, 2 * h / 3]), 28, True, top > 0)
    return v, f, n, [Part("hull", vertices=v.copy())], {"r": r, "h": h, "top": top}, True


def _make_torus(rng, s, mp=False):
    R = s / 2 * rng.uniform(0.5, 0.8)
    r = max(min(R * rng.uniform(0.15, 0.6), s / 2 - R), 0.004)
    v, f, n = torus_mesh(R, r)
    k = 10
    parts = []
    seg_len = 2 * R * np.sin(np.pi / k)
    for i in range(k):
        a = 2 * np.pi * (i + 0.5) / k
        pos = np.array([R * np.cos(a), R * np.sin(a), 0.0])
        Rm = _axis_rot(2, a) @ _axis_rot(0, np.pi / 2)  # capsule axis z -> tangent
        parts.append(Part("capsule", np.array([r, seg_len]), pos=pos, quat=_rot_to_quat(Rm)))
    return v, f, n, parts, {"R": R, "r": r}, True


def _make_ellipsoid(rng, s, mp=False):
    radii = np.maximum(s / 2 * np.array([1.0, rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.9)]), 0.008)
    rng.shuffle(radii)
    v, f, n = sphere_mesh(*radii, 12, 20)
    return v, f, n, [Part("hull", vertices=v.copy())], {"radii": radii.tolist()}, True


def _make_hull(rng, s, mp=False):
    npts = int(rng.integers(6, 30))
    scale = s / 2 * np.array([1.0, rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)])
    if rng.random() < 0.5:
        pts = rng.uniform(-1, 1, (npts, 3))
    else:
        pts = rng.normal(size=(npts, 3))
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        pts *= rng.uniform(0.6, 1.0, (npts, 1))
    pts *= scale
    v, f, n = hull_mesh(pts)
    v = v - v.mean(0)
    return v, f, n, [Part("hull", vertices=v.copy())], {"n": npts, "scale": scale.tolist()}, False


def _make_irregular(rng, s, mp=False):
    kind = rng.choice(["deformed", "combo", "bottle", "cup", "tool"], p=[0.24, 0.24, 0.2, 0.17, 0.15])
    if kind == "tool":
        return _make_tool(rng, s, mp)
    if kind == "deformed":
        # a blob: sphere / box-ish base with smooth random radial displacement (non-convex; physics uses hull)
        r0 = s / 2
        v, f, _ = sphere_mesh(r0, r0 * rng.uniform(0.4, 1.0), r0 * rng.uniform(0.3, 1.0), 16, 24)
        d = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        k = rng.normal(size=(4, 3)) * rng.uniform(1.0, 3.0)
        ph = rng.uniform(0, 2 * np.pi, 4)
        amp = rng.uniform(0.08, 0.25)
        disp = 1.0 + amp * np.sin(d @ k.T + ph).mean(1)
        v = v * disp[:, None]
        n = _vertex_normals(v, f)
        return v, f, n, [Part("hull", vertices=v.copy())], {"kind": kind, "amp": amp}, False
    if kind == "combo":
        # 2-3 overlapping primitives rigidly joined (hammer, L-bracket, mallet, toy blocks)
        meshes, parts = [], []
        for i in range(int(rng.integers(2, 4))):
            ss = s * rng.uniform(0.35, 0.7)
            R = _rand_rot(rng) if i else np.eye(3)
            t = rng.uniform(-0.5, 0.5, 3) * s * 0.45 if i else np.zeros(3)
            if rng.random() < 0.5:
                half = np.maximum(ss / 2 * np.array([1, rng.uniform(0.2, 1), rng.uniform(0.2, 1)]), 0.005)
                meshes.append(_transform(box_mesh(half), R, t))
                parts.append(Part("box", half, pos=t, quat=_rot_to_quat(R)))
            else:
                r, h = max(ss * rng.uniform(0.1, 0.35), 0.005), ss
                meshes.append(_transform(lathe_mesh(np.array([r, r]), np.array([-h / 2, h / 2]), 20, True, True), R, t))
                parts.append(Part("cylinder", np.array([r, h]), pos=t, quat=_rot_to_quat(R)))
        v, f, n, tp = _merge_parts(meshes, range(len(meshes)))
        c = v.mean(0)
        for p in parts:
            p.pos = p.pos - c
        if mp:  # one material per primitive (a mallet's head and handle, toy blocks)
            return v - c, f, n, parts, {"kind": kind}, False, tp, ("body",) + ("part",) * (len(meshes) - 1)
        return v - c, f, n, parts, {"kind": kind}, False
    if kind == "bottle":
        h = s
        r = max(s * rng.uniform(0.12, 0.3), 0.01)
        rn = r * rng.uniform(0.25, 0.5)
        sh = rng.uniform(0.5, 0.75)
        prof_z = np.array([0, 0.02, sh - 0.1, sh, sh + 0.1, 0.9, 1.0]) * h - h * 0.45
        prof_r = np.array([r * 0.95, r, r, r * 0.9, rn * 1.2, rn, rn])
        v, f, n = lathe_mesh(prof_r, prof_z, 24, True, True)
        if mp:  # a screw cap of another colour (water, mustard, detergent bottles)
            ch = float(h * rng.uniform(0.07, 0.15))
            rc = float(rn * rng.uniform(1.1, 1.35))
            top = float(prof_z[-1])
            v, f, n, tp = _merge_parts([(v, f, n), _cyl_mesh(rc, ch + 0.002, 20, top - ch)], [0, 1])
            return (v, f, n, [Part("hull", vertices=v.copy())], {"kind": kind, "r": r, "h": h, "cap": ch, "rc": rc},
                    True, tp, ("body", "cap"))
        return v, f, n, [Part("hull", vertices=v.copy())], {"kind": kind, "r": r, "h": h}, True
    return _cup(rng, s, mp)


def _cup(rng, s, mp=False, handle: bool | None = None, recentre: bool = False):
    """Cup / mug / deep bowl: an open lathed container; physics = bottom disk + ring of wall boxes. ``handle``
    None draws it (tall ones get one 60 % of the time), True / False decide (a mug is then at least as tall
    as 0.9 of its radius). ``recentre`` puts the body origin at the solid's centroid (the centre of mass
    pybullet assumes); False keeps the irregular family's cups as they were drawn before."""
    r, h, wall, rb = _cup_profile(rng, s)
    if handle:
        h = max(h, 0.9 * r)
    outer_r = np.array([rb, r])
    outer_z = np.array([-h / 2, h / 2])
    inner_r = np.array([r - wall, rb - wall])
    inner_z = np.array([h / 2, -h / 2 + wall])
    prof_r = np.concatenate([outer_r, inner_r])
    prof_z = np.concatenate([outer_z, inner_z])
    v, f, n = lathe_mesh(prof_r, prof_z, 28, True, True)
    n_cup = len(f)
    # ensure the rim/inner faces shade correctly: normals from geometry already (inner faces face inward)
    parts = [Part("cylinder", np.array([rb, wall]), pos=np.array([0, 0, -h / 2 + wall / 2]))]
    if handle is None:
        handle = h > r * 0.8 and rng.random() < 0.6  # mugs have handles, bowls do not
    if handle:
        hr = min(h * rng.uniform(0.25, 0.42), 0.05)
        tube = max(min(hr * rng.uniform(0.15, 0.3), 0.012), 0.003)
        zc = h * rng.uniform(-0.1, 0.1)
        wall_r = (r + rb) / 2 - wall / 2  # wall radius at mid height
        hv, hf, hn = torus_arc_mesh(hr, tube, -np.pi / 2, np.pi / 2, caps=True)
        hv = hv + np.array([wall_r, 0.0, zc])
        v, f, n = _merge([(v, f, n), (hv, hf, hn)])
        parts.append(Part("box", np.array([hr / 2 + tube, tube, hr + tube]),
                          pos=np.array([wall_r + hr / 2, 0.0, zc])))
    k = 10
    for i in range(k):
        a = 2 * np.pi * i / k
        rm = (r + rb) / 2 - wall / 2
        tilt = np.arctan2(r - rb, h)
        Rm = _axis_rot(2, a) @ _axis_rot(1, tilt)
        half = np.array([wall / 2, np.pi * (r + rb) / k / 2, h / 2 / np.cos(tilt)])
        parts.append(Part("box", half, pos=np.array([rm * np.cos(a), rm * np.sin(a), 0.0]), quat=_rot_to_quat(Rm)))
    if recentre:
        c = _solid_centroid(v, f)
        v = v - c
        for p in parts:
            p.pos = p.pos - c
    params = {"kind": "mug" if handle else "cup", "r": r, "h": h}
    if not mp:
        return v, f, n, parts, params, False
    # two-tone ceramics: a handle of another colour and / or an inside glazed differently from the outside
    tp = np.zeros(len(f), np.int32)
    roles = ["body"]
    if handle:
        tp[n_cup:] = 1
        roles.append("handle")
    if not handle or rng.random() < 0.4:
        tp[:n_cup][_inward_faces(v, f[:n_cup]) == 1] = len(roles)
        roles.append("inside")
    return v, f, n, parts, params, False, tp, tuple(roles)


def _scaled_parts(parts: list[Part], k: float) -> list[Part]:
    out = []
    for p in parts:
        out.append(Part(p.kind, None if p.size is None else p.size * k, None if p.vertices is None else p.vertices * k,
                        p.pos * k, p.quat.copy()))
    return out


def _make_tool(rng, s, mp=False):
    """Hand tools and sprayers, as 3-5 rigidly joined primitives in 2-3 appearance parts (physics: the same
    primitives). "drill": a horizontal body, a chuck in front, a grip leaning down to a battery block (it
    stands on the battery, base at -z); "spray": a bottle, a trigger head with a nozzle and trigger (stands);
    "hammer": a handle with a rubber grip and a head across it (lies). Scaled so the largest extent is ``s``."""
    tool = str(rng.choice(["drill", "spray", "hammer"], p=[0.45, 0.3, 0.25]))
    meshes, parts, groups = [], [], []
    ry = _axis_rot(1, np.pi / 2)  # body z -> x

    def cyl(r, h, c, R, g):
        meshes.append(_transform(_cyl_mesh(r, h, 20), R, np.asarray(c, float)))
        parts.append(Part("cylinder", np.array([r, h]), pos=np.asarray(c, float), quat=_rot_to_quat(R)))
        groups.append(g)

    def box(half, c, R, g):
        half = np.asarray(half, float)
        meshes.append(_transform(box_mesh(half), R, np.asarray(c, float)))
        parts.append(Part("box", half, pos=np.asarray(c, float), quat=_rot_to_quat(R)))
        groups.append(g)

    if tool == "drill":
        H = rng.uniform(0.75, 1.0)
        Lt = rng.uniform(0.8, 1.0)
        lc = Lt * rng.uniform(0.15, 0.25)
        L = Lt - lc
        rb = H * rng.uniform(0.1, 0.14)
        zb = H / 2 - rb
        cyl(rb, L, [L / 2, 0, zb], ry, 0)  # body from x = 0 to L
        rc = rb * rng.uniform(0.45, 0.7)
        chuck = int(rng.choice([1, 2]))
        cyl(rc, lc + 0.01, [L + lc / 2 - 0.005, 0, zb], ry, chuck)
        # the battery sits under the middle of the length (so the drill stands on it), the grip leans forward
        # from its rear half up to the body
        bz = H * rng.uniform(0.09, 0.15)
        bat_top = -H / 2 + 2 * bz
        bx = Lt * rng.uniform(0.2, 0.27)
        xb = Lt * rng.uniform(0.4, 0.5)
        box([bx, rb * rng.uniform(1.2, 1.7), bz], [xb, 0, -H / 2 + bz], np.eye(3), 1)
        th = np.deg2rad(rng.uniform(5, 20))
        p2 = np.array([xb - bx * rng.uniform(0.0, 0.4), 0, bat_top])
        p1 = np.array([p2[0] + np.tan(th) * (zb - bat_top), 0, zb])
        gl = np.linalg.norm(p1 - p2)
        box([rb * rng.uniform(0.6, 0.8), rb * rng.uniform(0.6, 0.75), gl / 2 + rb * 0.5], (p1 + p2) / 2,
            _axis_rot(1, th), 0)
        roles = ("body", "battery", "chuck")
    elif tool == "spray":
        rb = rng.uniform(0.14, 0.22)
        hb = rng.uniform(0.55, 0.7)
        cyl(rb, hb, [0, 0, -0.5 + hb / 2], np.eye(3), 0)
        rn = rb * rng.uniform(0.35, 0.5)
        hn = rng.uniform(0.05, 0.1)
        top_b = -0.5 + hb
        cyl(rn, hn + 0.01, [0, 0, top_b + hn / 2 - 0.005], np.eye(3), 1)
        hh = np.array([rb * rng.uniform(1.1, 1.5), rn * rng.uniform(1.0, 1.4), rng.uniform(0.06, 0.1)])
        zh = top_b + hn + hh[2]
        box(hh, [hh[0] * 0.4, 0, zh], np.eye(3), 1)
        xf = hh[0] * 1.4
        nozzle = int(rng.choice([1, 2]))
        cyl(hh[2] * rng.uniform(0.35, 0.6), 0.08, [xf + 0.03, 0, zh], ry, nozzle)
        tl = rng.uniform(0.12, 0.2)
        box([0.025, hh[1] * 0.6, tl / 2], [xf - 0.05, 0, zh - hh[2] - tl / 2 + 0.02], _axis_rot(1, 0.25), nozzle)
        roles = ("body", "head", "nozzle")
    else:  # hammer / screwdriver / brush: handle along x, grip at the back, head across at the front
        rh = rng.uniform(0.035, 0.07)
        Lh = rng.uniform(0.75, 0.95)
        cyl(rh, Lh, [0, 0, 0], ry, 0)
        lg = Lh * rng.uniform(0.3, 0.45)
        cyl(rh * rng.uniform(1.15, 1.4), lg, [-Lh / 2 + lg / 2 - 0.005, 0, 0], ry, 1)
        hy = rng.uniform(0.12, 0.22)
        box([rh * rng.uniform(1.2, 1.8), hy, rh * rng.uniform(1.1, 1.5)], [Lh / 2 - rh, hy * rng.uniform(-0.3, 0.3), 0],
            np.eye(3), 2)
        roles = ("body", "grip", "head")
    v, f, n, tp = _merge_parts(meshes, groups)
    # body origin at the primitives' volume centroid: pybullet puts the centre of mass at the body origin
    vol = np.array([8 * np.prod(p.size) if p.kind == "box" else np.pi * p.size[0] ** 2 * p.size[1] for p in parts])
    c = (vol[:, None] * np.array([p.pos for p in parts])).sum(0) / vol.sum()
    k = s / float((v.max(0) - v.min(0)).max())
    v = (v - c) * k
    for p in parts:
        p.pos = p.pos - c
    parts = _scaled_parts(parts, k)
    ext = (v.max(0) - v.min(0))
    params = {"kind": "tool", "tool": tool, "ext": ext.tolist(), "p0": float(parts[0].size[0]),
              "p1": float(parts[1].size[0])}
    if not mp:
        return v, f, n, parts, params, False
    return v, f, n, parts, params, False, tp.astype(np.int32), roles[: int(tp.max()) + 1]



class _Assembly:
    """Rigidly joined primitives (body frame, metres): render meshes, one convex collision piece each, and the
    appearance part of each. :meth:`finish` puts the body origin at the solid's centroid (pybullet puts the
    centre of mass at the body origin) and returns what a maker returns."""

    def __init__(self) -> None:
        self.meshes: list = []
        self.parts: list[Part] = []
        self.groups: list[int] = []

    def box(self, half, centre, R=None, group: int = 0) -> None:
        half = np.asarray(half, float)
        R = np.eye(3) if R is None else R
        self.meshes.append(_transform(box_mesh(half), R, np.asarray(centre, float)))
        self.parts.append(Part("box", half, pos=np.asarray(centre, float), quat=_rot_to_quat(R)))
        self.groups.append(group)

    def cyl(self, r: float, length: float, centre, R=None, group: int = 0, seg: int = 16) -> None:
        """A closed cylinder along the local z axis, rotated by R."""
        R = np.eye(3) if R is None else R
        self.meshes.append(_transform(_cyl_mesh(r, length, seg), R, np.asarray(centre, float)))
        self.parts.append(Part("cylinder", np.array([r, length]), pos=np.asarray(centre, float), quat=_rot_to_quat(R)))
        self.groups.append(group)

    def mesh(self, mesh, part: Part, group: int = 0) -> None:
        """Any closed render mesh with its own collision piece (an approximating box)."""
        self.meshes.append(mesh)
        self.parts.append(part)
        self.groups.append(group)

    def finish(self, params: dict, roles: tuple[str, ...], mp: bool, round_: bool = False):
        groups = self.groups if mp else [0] * len(self.groups)
        v, f, n, tp = _merge_parts(self.meshes, groups)
        c = _solid_centroid(v, f)  # the pieces' solids (where they overlap, a few % of one piece counts twice)
        v = v - c
        for p in self.parts:
            p.pos = p.pos - c
            if p.vertices is not None:
                p.vertices = p.vertices - c
        params = dict(params, ext=(v.max(0) - v.min(0)).tolist())
        if not mp:
            return v, f, n, self.parts, params, round_
        used = int(tp.max()) + 1
        return v, f, n, self.parts, params, round_, tp.astype(np.int32), roles[:used]


#: kinds of the "thin" family (long, narrow objects a grasp planner must pinch) and their frequencies
THIN_KINDS = {"marker": 0.2, "pen": 0.12, "screwdriver": 0.16, "knife": 0.12, "fork": 0.1, "spoon": 0.12,
              "scissors": 0.1, "clamp": 0.08}
#: length range (m) of each thin kind: household sizes, whatever the drawn size
THIN_LENGTHS = {"marker": (0.11, 0.15), "pen": (0.13, 0.15), "screwdriver": (0.15, 0.26), "knife": (0.17, 0.24),
                "fork": (0.15, 0.21), "spoon": (0.13, 0.2), "scissors": (0.13, 0.21), "clamp": (0.1, 0.18)}
#: kinds of the "hollow" family (open containers: seen from above a rim around a cavity) and their frequencies
HOLLOW_KINDS = {"bowl": 0.3, "mug": 0.25, "cup": 0.15, "open_box": 0.3}


def _make_thin(rng, s, mp=False):
    """Thin and long objects, long axis along body x: markers and pens (a barrel and a cap), screwdrivers (a
    handle and a shaft), knives, forks and spoons (a handle and a 1-3 mm blade, tines or a shallow bowl),
    scissors (two blades and two finger rings) and clamps (a C frame with a screw). Lengths from
    :data:`THIN_LENGTHS` whatever ``s`` is: these objects come in a narrow size band."""
    kind = str(rng.choice(list(THIN_KINDS), p=np.array(list(THIN_KINDS.values())) / sum(THIN_KINDS.values())))
    L = float(rng.uniform(*THIN_LENGTHS[kind]))
    a = _Assembly()
    ry = _axis_rot(1, np.pi / 2)  # local z -> body x
    if kind in ("marker", "pen"):
        r = rng.uniform(0.007, 0.01) if kind == "marker" else rng.uniform(0.0035, 0.005)
        lc = L * rng.uniform(0.2, 0.35)
        a.cyl(r, L - lc, [-lc / 2, 0, 0], ry, 0)
        a.cyl(r * rng.uniform(1.05, 1.2), lc, [(L - lc) / 2, 0, 0], ry, 1)
        if kind == "pen" and rng.random() < 0.6:  # the clip
            a.box([lc * 0.4, 0.0012, 0.0008], [(L - lc) / 2, 0, r * 1.3], None, 1)
        params, roles, round_ = {"kind": kind, "r": float(r), "L": L}, ("body", "cap"), True
    elif kind == "screwdriver":
        rh = rng.uniform(0.009, 0.017)
        lh = L * rng.uniform(0.35, 0.45)
        rs = rng.uniform(0.002, 0.0035)
        a.cyl(rh, lh, [-(L - lh) / 2, 0, 0], ry, 0, seg=12)
        a.cyl(rs, L - lh, [lh / 2, 0, 0], ry, 1, seg=10)
        params, roles, round_ = {"kind": kind, "r": float(rh), "L": L}, ("grip", "head"), True
    elif kind in ("knife", "fork", "spoon"):
        lh = L * rng.uniform(0.45, 0.6)
        hw, ht = rng.uniform(0.006, 0.011), rng.uniform(0.002, 0.005)
        a.box([lh / 2, hw, ht], [-(L - lh) / 2, 0, 0], None, 0)
        lf = L - lh
        xf = lh / 2  # centre of the working end along x
        if kind == "knife":
            bw = rng.uniform(0.007, 0.013)
            a.box([lf / 2, bw, 0.0009], [xf, 0, 0], None, 1)
        elif kind == "fork":
            a.box([lf * 0.15, hw * 1.3, 0.0012], [xf - lf * 0.35, 0, 0], None, 1)
            n_t = int(rng.choice([3, 4]))
            for y in np.linspace(-hw * 1.1, hw * 1.1, n_t):
                a.box([lf * 0.35, 0.0012, 0.0012], [xf + lf * 0.15, y, 0], None, 1)
        else:
            rb = lf * rng.uniform(0.3, 0.38)
            wb = rb * rng.uniform(0.5, 0.6)
            db = rng.uniform(0.004, 0.008)
            v, f, n = sphere_mesh(rb, wb, db, 8, 16)
            cb = np.array([xf + lf / 2 - rb, 0, 0])
            # collision: the box around the bowl (compound bodies are made of primitives only)
            a.mesh((v + cb, f, n), Part("box", np.array([rb, wb, db]), pos=cb), 1)
        params, roles, round_ = {"kind": kind, "w": float(hw), "L": L}, ("body", "head"), False
    elif kind == "scissors":
        lb = L * rng.uniform(0.5, 0.6)
        ang = np.deg2rad(rng.uniform(3, 25))
        rr, rt = rng.uniform(0.011, 0.016), 0.0028
        x0 = -(L - lb) + 2 * rr - rt  # each blade runs from its finger ring's tube to its tip
        for sgn in (-1, 1):
            Rz = _axis_rot(2, sgn * ang / 2)
            a.box([(lb - x0) / 2, 0.005, 0.0012], Rz @ np.array([(lb + x0) / 2, 0, 0]) + [0, 0, sgn * 0.0013], Rz, 0)
            cr = Rz @ np.array([-(L - lb) + rr, -sgn * rr * 0.9, 0])  # rings apart, each beside its blade
            v, f, n = torus_mesh(rr, rt, 16, 8)
            a.mesh((v + cr, f, n), Part("box", np.array([rr + rt, rr + rt, rt]), pos=np.asarray(cr, float)), 1)
        params, roles, round_ = {"kind": kind, "open": float(ang), "L": L}, ("body", "grip"), False
    else:  # C-clamp: spine, two jaws, a screw through the lower jaw with a T handle
        w = rng.uniform(0.006, 0.01)
        depth = L * rng.uniform(0.35, 0.5)
        a.box([w, w * 0.8, L / 2], [-depth / 2, 0, 0], None, 0)
        for zs in (-1, 1):
            a.box([depth / 2, w * 0.8, w], [0, 0, zs * (L / 2 - w)], None, 0)
        rs = rng.uniform(0.003, 0.005)
        a.cyl(rs, L * 0.6, [depth / 2 - w, 0, -L / 2 + L * 0.3 - w], None, 1, seg=10)
        a.cyl(rs * 0.8, depth * 0.5, [depth / 2 - w, 0, -L / 2 - w], _axis_rot(0, np.pi / 2), 1, seg=8)
        params, roles, round_ = {"kind": kind, "w": float(w), "L": L}, ("body", "handle"), False
    return a.finish(params, roles, mp, round_)


def _cup_profile(rng, s):
    """Radius, height, wall thickness and base radius of a cup / mug / bowl of largest dimension ~``s``."""
    r = s / 2 * rng.uniform(0.5, 1.0)
    h = s * rng.uniform(0.25, 0.9) if rng.random() < 0.6 else r * rng.uniform(0.5, 0.9)
    return r, h, max(0.004, r * 0.08), r * rng.uniform(0.6, 1.0)


def _make_hollow(rng, s, mp=False):
    """Open containers: bowls (wide, shallow, thin curved wall), mugs (with a handle), cups and open boxes
    (trays, cut-open cartons: a floor and four thin walls). Stand opening up (:func:`_up_axis`)."""
    kind = str(rng.choice(list(HOLLOW_KINDS), p=np.array(list(HOLLOW_KINDS.values())) / sum(HOLLOW_KINDS.values())))
    s = max(s, 0.06)
    if kind == "open_box":
        dims = np.sort(rng.uniform(0.4, 1.0, 3))[::-1] * s / 2   # half extents, x the longest
        dims[2] = min(dims[2], dims[1]) * rng.uniform(0.4, 1.0)  # lower than wide
        t = rng.uniform(0.0015, 0.004)
        hx, hy, hz = dims
        # one closed mesh (a 4-sided lathe: floor, walls, rim), not five touching boxes, so that it is a
        # watertight, consistently wound surface; a square profile is stretched to the rectangle
        u = t / min(hx, hy)
        prof_r = np.array([1.0, 1.0, 1.0 - u, 1.0 - u]) * np.sqrt(2.0)
        prof_z = np.array([-hz, hz, hz, -hz + t])
        v, f, _ = lathe_mesh(prof_r, prof_z, 4, True, True)
        v = (v @ _axis_rot(2, np.pi / 4).T) * np.array([hx, hy, 1.0])
        v, f, n = _flat(v, f)
        parts = [Part("box", np.array([hx, hy, t / 2]), pos=np.array([0.0, 0.0, -hz + t / 2]))]
        parts += [Part("box", np.array([t / 2, hy, hz]), pos=np.array([sx * (hx - t / 2), 0.0, 0.0])) for sx in (-1, 1)]
        parts += [Part("box", np.array([hx - t, t / 2, hz]), pos=np.array([0.0, sy * (hy - t / 2), 0.0]))
                  for sy in (-1, 1)]
        c = _solid_centroid(v, f)  # the shell's centre of mass (pybullet puts it at the body origin)
        v = v - c
        for p in parts:
            p.pos = p.pos - c
        params = {"kind": kind, "dims": (2 * dims).tolist(), "t": float(t)}
        if not mp:
            return v, f, n, parts, params, False
        return v, f, n, parts, params, False, _inward_faces(v, f).astype(np.int32), ("body", "inside")
    if kind == "bowl":
        r = s / 2
        h = r * rng.uniform(0.3, 0.55)
        wall = rng.uniform(0.002, 0.004)
        rb = r * rng.uniform(0.35, 0.55)
        k = np.linspace(0, 1, 6)
        outer_r = rb + (r - rb) * np.sin(k * np.pi / 2)
        outer_z = -h / 2 + h * (1 - np.cos(k * np.pi / 2))
        inner_r = np.maximum(outer_r[::-1] - wall, 0.0)
        inner_z = np.maximum(outer_z[::-1], -h / 2 + wall)
        v, f, n = lathe_mesh(np.concatenate([outer_r, inner_r]), np.concatenate([outer_z, inner_z]), 32, True, True)
        parts = [Part("cylinder", np.array([rb, wall]), pos=np.array([0, 0, -h / 2 + wall / 2]))]
        n_seg = 12
        for i in range(n_seg):
            ang = 2 * np.pi * i / n_seg
            rm = (r + rb) / 2
            tilt = np.arctan2(r - rb, h)
            Rm = _axis_rot(2, ang) @ _axis_rot(1, tilt)
            half = np.array([wall / 2, np.pi * (r + rb) / n_seg / 2, h / 2 / np.cos(tilt)])
            parts.append(Part("box", half, pos=np.array([rm * np.cos(ang), rm * np.sin(ang), 0.0]),
                              quat=_rot_to_quat(Rm)))
        c = _solid_centroid(v, f)  # pybullet puts the centre of mass at the body origin
        v = v - c
        for p in parts:
            p.pos = p.pos - c
        params = {"kind": kind, "r": float(r), "h": float(h)}
        if not mp:
            return v, f, n, parts, params, False
        return v, f, n, parts, params, False, _inward_faces(v, f).astype(np.int32), ("body", "inside")
    # cups and mugs: the irregular family's container with the handle decided by the kind
    return _cup(rng, s, mp, handle=kind == "mug", recentre=True)


def _solid_centroid(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Centroid (3,) of the solid a closed, outward-wound triangle mesh encloses (signed tetrahedra)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    vol = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    return (vol[:, None] * (a + b + c) / 4.0).sum(0) / vol.sum()


def _inward_faces(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """1 for triangles ``f`` that face the container's axis or its floor from inside (the inside glaze /
    print-free inner side), 0 for the outside; the rim (the top) and the outer bottom are outside. Body frame:
    opening up (+z), axis through x = y = 0; only the vertices ``f`` uses count (a handle may rise higher)."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    cen = v[f].mean(1)
    radial = cen[:, :2] / np.maximum(np.linalg.norm(cen[:, :2], axis=1, keepdims=True), 1e-12)
    z = v[f][..., 2]
    inward = np.einsum("ij,ij->i", fn[:, :2], radial) < -0.3
    floor_up = (fn[:, 2] > 0.9) & (cen[:, 2] < z.max() - 1e-4) & (cen[:, 2] > z.min() + 1e-4)
    return (inward | floor_up).astype(np.int32)


_MAKERS = {
    "box": _make_box, "cylinder": _make_cylinder, "sphere": _make_sphere, "capsule": _make_capsule,
    "cone": _make_cone, "torus": _make_torus, "ellipsoid": _make_ellipsoid, "convex_hull": _make_hull,
    "irregular": _make_irregular, "thin": _make_thin, "hollow": _make_hollow,
}
#: relative frequency of the families (boxes and cylinders dominate real bins: packaging, cans)
FAMILY_WEIGHTS = {"box": 3.5, "cylinder": 3.0, "sphere": 0.5, "capsule": 0.6, "cone": 0.6, "torus": 0.4,
                  "ellipsoid": 0.7, "convex_hull": 1.2, "irregular": 3.0}
#: the mix of the "real shapes" scene profile (what real bins hold beyond packaging: cutlery, markers, tools,
#: open containers); thin and hollow objects together about a third of the objects
REAL_SHAPES_WEIGHTS = {"box": 3.0, "cylinder": 2.0, "sphere": 0.4, "capsule": 0.3, "cone": 0.3, "torus": 0.3,
                       "ellipsoid": 0.6, "convex_hull": 0.8, "irregular": 2.5, "thin": 3.5, "hollow": 2.5}


def _split_bucket(family: str, params: dict) -> int:
    flat = []
    for k in sorted(params):
        val = params[k]
        if isinstance(val, (list, tuple, np.ndarray)):
            flat += [round(float(x) / PARAM_QUANT_M) for x in val]
        elif isinstance(val, (float, np.floating)):
            flat.append(round(float(val) / PARAM_QUANT_M))
        else:
            flat.append(str(val))
    h = hashlib.blake2b(repr((family, flat)).encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") % 10


def shape_split(shape: Shape) -> str:
    """The split ("train" / "val" / "test") a shape's quantised parameters belong to."""
    b = _split_bucket(shape.family, shape.params)
    return next(s for s, r in SPLIT_BUCKETS.items() if b in r)


def sample_shape(rng: np.random.Generator, split: str = "train", family: str | None = None,
                 size_range: tuple[float, float] | None = None, multipart: float = 0.0,
                 weights: dict[str, float] | None = None) -> Shape:
    """Draw a random shape of ``family`` (or a weighted random family) whose parameters belong to ``split``.

    size_range: (lo, hi) metres for the largest dimension, log-uniform (default: mostly 4-18 cm, sometimes
    2-25 cm); household tabletop objects use larger sizes.
    multipart: probability in [0, 1] that a shape whose kind has natural parts (box lid / band, cylinder lid,
    bottle cap, mug handle / inside, combo primitives, tool parts) is built with them as appearance parts
    (:attr:`Shape.tri_part`); 0 (default) builds no parts and no extra random draws (families other than
    "irregular", whose kinds now include "tool", draw exactly what earlier versions drew).
    weights: relative frequency per family name when ``family`` is None (default :data:`FAMILY_WEIGHTS`, which
    leaves out "thin" and "hollow" so that scenes drawn before they existed are drawn the same)."""
    if not 0.0 <= multipart <= 1.0:
        raise ValueError(f"multipart must be in [0, 1], got {multipart}")
    if size_range is not None and not (0.01 <= size_range[0] <= size_range[1] <= 0.3):
        raise ValueError(f"size_range must satisfy 0.01 <= lo <= hi <= 0.3 m, got {size_range}")
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {list(SPLIT_BUCKETS)}, got {split!r}")
    if family is None:
        weights = FAMILY_WEIGHTS if weights is None else weights
        fams = list(weights)
        w = np.array([float(weights[f]) for f in fams])
        if not all(f in _MAKERS for f in fams) or not (w >= 0).all() or not w.sum() > 0:
            raise ValueError(f"weights must map known families {list(_MAKERS)} to >= 0 values, not all 0; "
                             f"got {weights}")
        family = fams[int(rng.choice(len(fams), p=w / w.sum()))]
    if family not in _MAKERS:
        raise ValueError(f"unknown family {family!r}")
    mp = bool(rng.random() < multipart) if multipart > 0 else False
    for _ in range(200):
        size = (_size(rng) if size_range is None
                else float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1])))))
        out = _MAKERS[family](rng, size, mp)
        v, f, n, parts, params, rnd = out[:6]
        if _split_bucket(family, params) in SPLIT_BUCKETS[split]:
            break
    else:  # pragma: no cover - 200 misses at 10 % acceptance has probability 1e-9
        raise RuntimeError("could not draw a shape for the split")
    tri_part, roles = (np.asarray(out[6], np.int32), tuple(out[7])) if len(out) > 6 else (None, ())
    return Shape(family, np.asarray(v, float), np.asarray(f, np.int32), np.asarray(n, float), parts, params, rnd,
                 _up_axis(family, params), tri_part, roles)


def _up_axis(family: str, params: dict) -> int:
    """Body axis that stands up in a "put down by a person" pose (see :attr:`Shape.up_axis`)."""
    if family in ("cylinder", "cone") or params.get("kind") in ("bottle", "cup", "mug", "bowl", "open_box"):
        return 2  # bodies of revolution about z, base at -z
    if params.get("kind") == "tool":
        return 2 if params["tool"] in ("drill", "spray") else -1  # drills stand on their battery
    if family == "box" and "lid_axis" in params:
        return int(params["lid_axis"])  # lid up
    if family == "box":
        return int(np.argmax(params["dims"]))  # cereal boxes stand on their smallest-area face
    return -1


def make_box_shape(dims) -> Shape:
    """A box with full side lengths ``dims`` (3,) metres (used by tests and hand-built scenes)."""
    dims = np.asarray(dims, float)
    v, f, n = box_mesh(dims / 2)
    return Shape("box", v, f, n, [Part("box", dims / 2)], {"dims": dims.tolist()}, False)
