"""Ray-cast rendering with Open3D ``RaycastingScene``: depth, instance ids, normals, amodal masks, RGB.

Conventions: world frame z up (metres); camera optical frame x right, y down, z forward; ``T_wc`` maps
camera points to the world; pixel (u, v) (integer column, row) looks along ((u - cx) / fx, (v - cy) / fy, 1),
the convention of :func:`instseg_ros.core.geometry.backproject`.

Rays are built with a camera-frame z component of 1, so the ray parameter of a hit *is* the z-depth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEX_SIZE = 256


@dataclass
class Material:
    """Surface appearance. colors: (2, 3) linear RGB in [0, 1] mixed by the texture value;
    texture: index into the texture bank (-1 = plain colors[0]); scale: metres per texture tile;
    specular: Blinn-Phong weight; shininess: exponent; printed: texture bank entry is already coloured.
    mapping: MAP_TRIPLANAR (project along the body axis closest to the normal) or MAP_CYLINDER (wrap around the
    body z axis, for cans / bottles / cups; caps stay planar). band: with MAP_CYLINDER, > 0 limits the texture
    to |body z| < band metres (a can's label); caps and the rest show plain colors[0] (metal) with
    specular ``band_specular``."""
    colors: np.ndarray
    texture: int = -1
    scale: float = 0.1
    specular: float = 0.1
    shininess: float = 20.0
    printed: bool = False
    mapping: int = 0
    band: float = 0.0
    band_specular: float = 0.6


RASTER_NEAR = 0.01  #: metres; nearest depth the rasteriser sees (cameras stay >= 0.12 m from surfaces)
MAP_TRIPLANAR = 0
MAP_CYLINDER = 1


@dataclass
class RenderMesh:
    """One geometry in world coordinates. instance: > 0 for objects, 0 for background parts; several meshes
    may share one instance id (the appearance parts of one object: they are one label, one annotation, one
    amodal mask). part: which appearance part of its object the mesh is (0 = main body).
    R, t: body pose (texture coordinates are body-frame positions so textures stick to objects)."""
    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    instance: int
    material: Material
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    part: int = 0


def posed_mesh(shape, T: np.ndarray, instance: int, material: Material) -> RenderMesh:
    """Place a :class:`~instseg_ros.data.shapes.Shape` at pose T (4, 4) T_world_body (one mesh, one material)."""
    R, t = T[:3, :3], T[:3, 3]
    return RenderMesh(shape.vertices @ R.T + t, shape.triangles, shape.normals @ R.T, instance, material,
                      R.copy(), t.copy())


def object_meshes(shape, T: np.ndarray, instance: int, materials: list[Material]) -> list[RenderMesh]:
    """Place ``shape`` at pose T (4, 4) T_world_body as one RenderMesh per appearance part, all with
    ``instance``. materials: one per part (``shape.n_parts``); a shape without parts (``tri_part`` None) or a
    single material gives one mesh, as :func:`posed_mesh`."""
    n_parts = 1 if getattr(shape, "tri_part", None) is None else shape.n_parts
    if len(materials) not in (1, n_parts):
        raise ValueError(f"need 1 or {n_parts} materials for this shape, got {len(materials)}")
    if n_parts == 1 or len(materials) == 1:
        return [posed_mesh(shape, T, instance, materials[0])]
    R, t = T[:3, :3], T[:3, 3]
    out = []
    for k in range(n_parts):
        tris = shape.triangles[shape.tri_part == k]
        if len(tris) == 0:
            continue
        used, inv = np.unique(tris.reshape(-1), return_inverse=True)
        out.append(RenderMesh(shape.vertices[used] @ R.T + t, inv.reshape(-1, 3).astype(np.int32),
                              shape.normals[used] @ R.T, instance, materials[k], R.copy(), t.copy(), k))
    return out


class Scene:
    """All meshes of one static scene, with a BVH ready for ray casting (built once, reused per view)."""

    def __init__(self, meshes: list[RenderMesh]):
        import open3d as o3d
        import open3d.core as o3c

        self.meshes = meshes
        self.rc = o3d.t.geometry.RaycastingScene()
        gids = []
        for m in meshes:
            gids.append(self.rc.add_triangles(o3c.Tensor(np.ascontiguousarray(m.vertices, np.float32)),
                                              o3c.Tensor(np.ascontiguousarray(m.triangles, np.uint32))))
        if gids != list(range(len(meshes))):
            raise RuntimeError("RaycastingScene geometry ids are not consecutive")
        self.instance_of_geom = np.array([m.instance for m in meshes] + [0], dtype=np.int32)
        # flat arrays for normal interpolation: triangle offset per geometry
        self.tri_offset = np.cumsum([0] + [len(m.triangles) for m in meshes]).astype(np.int64)
        self.vert_offset = np.cumsum([0] + [len(m.vertices) for m in meshes]).astype(np.int64)
        self.all_tris = np.vstack([m.triangles.astype(np.int64) + o for m, o in zip(meshes, self.vert_offset[:-1])])
        self.all_normals = np.ascontiguousarray(np.vstack([m.normals for m in meshes]), np.float32)
        self.all_vertices = np.vstack([m.vertices for m in meshes]).astype(np.float64)
        self.tri_geom = np.repeat(np.arange(len(meshes), dtype=np.int64), [len(m.triangles) for m in meshes])
        # objects only, for the amodal rasteriser: vertices, triangles grouped by object, triangle -> object
        # index into obj_instances (unique instance ids in order of first appearance: the parts of one object
        # are one object)
        objs = [m for m in meshes if m.instance > 0]
        uniq, first, inv = np.unique(np.array([m.instance for m in objs], np.int64), return_index=True,
                                     return_inverse=True)
        by_first = np.argsort(first)
        self.obj_instances = uniq[by_first]
        rank = np.empty(len(uniq), np.int64)
        rank[by_first] = np.arange(len(uniq))
        obj_of_mesh = rank[inv.reshape(-1)]
        order = np.argsort(obj_of_mesh, kind="stable")
        objs = [objs[i] for i in order]
        voff = np.cumsum([0] + [len(m.vertices) for m in objs]).astype(np.int64)
        self.obj_vertices = np.vstack([m.vertices for m in objs]) if objs else np.zeros((0, 3))
        self.obj_tris = (np.vstack([m.triangles.astype(np.int64) + o for m, o in zip(objs, voff[:-1])])
                         if objs else np.zeros((0, 3), np.int64))
        self.obj_tri_obj = np.repeat(np.asarray(obj_of_mesh, np.int64)[order], [len(m.triangles) for m in objs])
        self._objects_rc = None

    def objects_only(self):
        """A second RaycastingScene with only the objects (instance > 0); maps its ids to instances."""
        if self._objects_rc is None:
            import open3d as o3d
            import open3d.core as o3c

            rc = o3d.t.geometry.RaycastingScene()
            inst = []
            for m in self.meshes:
                if m.instance > 0:
                    rc.add_triangles(o3c.Tensor(np.ascontiguousarray(m.vertices, np.float32)),
                                     o3c.Tensor(np.ascontiguousarray(m.triangles, np.uint32)))
                    inst.append(m.instance)
            self._objects_rc = (rc, np.array(inst + [0], dtype=np.int32))
        return self._objects_rc


def camera_rays(K: np.ndarray, T_wc: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """World-frame rays: origins float32 (H*W, 3) and directions float32 (H*W, 3) with camera z = 1."""
    R = np.asarray(T_wc[:3, :3], np.float32)
    x = ((np.arange(width, dtype=np.float32) - np.float32(K[0, 2])) / np.float32(K[0, 0]))
    y = ((np.arange(height, dtype=np.float32) - np.float32(K[1, 2])) / np.float32(K[1, 1]))
    d = (x[None, :, None] * R[:, 0] + y[:, None, None] * R[:, 1] + R[:, 2]).reshape(-1, 3)
    o = np.broadcast_to(np.asarray(T_wc[:3, 3], np.float32), d.shape)
    return o, d


def cast(scene: Scene, K: np.ndarray, T_wc: np.ndarray, width: int, height: int, method: str = "embree") -> dict:
    """Render geometry buffers.

    Returns dict: "depth" float32 (H, W) z-depth metres (0 = no hit); "geom" int32 (H, W) geometry index
    (-1 = none); "instance" int32 (H, W) (0 = background / none); "normal" float32 (H, W, 3) world-frame
    smooth normal facing the camera; "point" float32 (H, W, 3) world hit point; "cos" float32 (H, W) |cos| of
    the normal-ray angle (0 = no hit).

    method: "embree" casts every pixel's ray with Open3D's RaycastingScene; "raster" finds the same nearest
    hits by rasterising the triangles and intersecting each covered pixel's ray exactly with the triangle
    (:func:`_kernels.raster_buffers`; same buffers, ~3x faster at 640x480, checked against "embree" in tests).
    """
    if method not in ("embree", "raster"):
        raise ValueError(f"method must be 'embree' or 'raster', got {method!r}")
    import open3d.core as o3c

    from instseg_ros.data import _kernels

    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    R = np.ascontiguousarray(T_wc[:3, :3], np.float64)
    o = np.ascontiguousarray(T_wc[:3, 3], np.float64)
    if method == "raster":
        T_cw = np.linalg.inv(T_wc)
        vc = scene.all_vertices @ T_cw[:3, :3].T + T_cw[:3, 3]
        depth, geom, inst, normal, point, cosang = _kernels.raster_buffers(
            vc, scene.all_tris, scene.tri_geom, fx, fy, cx, cy, width, height, RASTER_NEAR, R, o,
            scene.all_normals, scene.instance_of_geom, True)
    else:
        rays = _kernels.make_rays(fx, fy, cx, cy, R, o, width, height)
        r = {k: v.numpy() for k, v in scene.rc.cast_rays(o3c.Tensor(rays), nthreads=1).items()}
        depth, geom, inst, normal, point, cosang = _kernels.finish_cast(
            r["t_hit"], r["geometry_ids"], r["primitive_ids"], r["primitive_uvs"], r["primitive_normals"],
            fx, fy, cx, cy, R, o, width, scene.tri_offset, scene.all_tris,
            scene.all_normals, scene.instance_of_geom)
    return {"depth": depth.reshape(height, width), "geom": geom.reshape(height, width),
            "instance": inst.reshape(height, width), "normal": normal.reshape(height, width, 3),
            "point": point.reshape(height, width, 3), "cos": cosang.reshape(height, width)}


def amodal_counts(scene: Scene, K: np.ndarray, T_wc: np.ndarray, width: int, height: int,
                  labels: np.ndarray | None = None) -> dict[int, int]:
    """Pixels each object would cover if rendered alone (no other object, no bin or table).

    Rasterises every object's camera-facing triangles (no depth test; object meshes are closed, so these
    cover the silhouette) and counts the pixel centres inside its projected silhouette, united with its visible
    pixels in ``labels`` (int (H, W), optional) so that amodal >= visible.
    Same pixel convention as :func:`cast`; agrees with the exhaustive ray listing of
    :func:`amodal_counts_raycast` up to pixels whose centre lies on a silhouette edge. Falls back to that
    ray listing when an object reaches behind the camera plane. Returns {instance id: pixel count > 0}.
    """
    from instseg_ros.data import _kernels

    n_obj = len(scene.obj_instances)
    if n_obj == 0:
        return {}
    T_cw = np.linalg.inv(T_wc)
    pc = scene.obj_vertices @ T_cw[:3, :3].T + T_cw[:3, 3]
    if (pc[:, 2] <= 1e-3).any():
        return amodal_counts_raycast(scene, K, T_wc, width, height)
    uv = np.empty((len(pc), 2))
    uv[:, 0] = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
    uv[:, 1] = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
    if labels is None:
        vis_order, vis_start = np.zeros(0, np.int64), np.zeros(n_obj + 1, np.int64)
    else:
        if labels.shape != (height, width):
            raise ValueError(f"labels must be ({height}, {width}), got {labels.shape}")
        # visible pixels grouped by object index (instances -> position in scene.obj_instances)
        lut = np.full(max(int(scene.obj_instances.max()), int(labels.max())) + 1, -1, np.int64)
        lut[scene.obj_instances] = np.arange(n_obj)
        k = lut[labels.reshape(-1)]
        vis_order = np.nonzero(k >= 0)[0]
        kk = k[vis_order]
        srt = np.argsort(kk, kind="stable")
        vis_order = vis_order[srt].astype(np.int64)
        vis_start = np.concatenate([[0], np.cumsum(np.bincount(kk, minlength=n_obj))]).astype(np.int64)
    # object meshes are closed and wound outward: back faces are skipped (their front faces cover the silhouette)
    counts = _kernels.amodal_raster(uv, scene.obj_tris, scene.obj_tri_obj, n_obj, vis_order, vis_start,
                                    height, width, np.ascontiguousarray(pc))
    return {int(i): int(c) for i, c in zip(scene.obj_instances, counts) if c > 0}


def amodal_counts_raycast(scene: Scene, K: np.ndarray, T_wc: np.ndarray, width: int, height: int,
                          candidates: np.ndarray | None = None) -> dict[int, int]:
    """Reference for :func:`amodal_counts` (slow): pixels each object would cover if rendered alone.

    Every intersection along each candidate pixel's ray with the objects-only scene is listed, so an
    object hidden behind others (or behind bin walls) still counts. ``candidates``: bool (H, W) pixels that
    may contain any object (default: the projected bounding boxes of all objects); exact as long as it
    covers every object's projection. Returns {instance id: pixel count}.
    """
    import open3d.core as o3c

    rc, inst_of = scene.objects_only()
    if candidates is None:
        candidates = object_bbox_mask(scene, K, T_wc, width, height)
    pix = np.nonzero(candidates.reshape(-1))[0]
    if len(pix) == 0:
        return {}
    o, d = camera_rays(K, T_wc, width, height)
    rays = o3c.Tensor(np.ascontiguousarray(np.concatenate([o[pix], d[pix]], 1)))
    li = rc.list_intersections(rays, nthreads=1)
    ray_ids = li["ray_ids"].numpy().astype(np.int64)
    gid = li["geometry_ids"].numpy().astype(np.int64)
    t = li["t_hit"].numpy()
    keep = t > 0
    ray_ids, inst = ray_ids[keep], inst_of[gid[keep]].astype(np.int64)
    key = np.unique(inst * (len(pix) + 1) + ray_ids)  # a pixel counts once per object, whatever part it hits
    counts = np.bincount(key // (len(pix) + 1))
    return {int(i): int(c) for i, c in enumerate(counts) if c > 0}


def object_bbox_mask(scene: Scene, K, T_wc, width, height) -> np.ndarray:
    """bool (H, W): union of the image-space bounding boxes of all objects in front of the camera."""
    mask = np.zeros((height, width), bool)
    T_cw = np.linalg.inv(T_wc)
    for m in scene.meshes:
        if m.instance <= 0:
            continue
        pc = m.vertices @ T_cw[:3, :3].T + T_cw[:3, 3]
        if (pc[:, 2] <= 1e-3).any():
            if (pc[:, 2] > 1e-3).any():
                mask[:] = True  # straddles the camera plane: be safe
            continue
        u = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
        v = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
        u0, u1 = int(np.clip(np.floor(u.min()), 0, width)), int(np.clip(np.ceil(u.max()) + 1, 0, width))
        v0, v1 = int(np.clip(np.floor(v.min()), 0, height)), int(np.clip(np.ceil(v.max()) + 1, 0, height))
        mask[v0:v1, u0:u1] = True
    return mask


# ------------------------------------------------------------------------------------------ textures

def _value_noise(rng, size, octaves, base):
    from scipy.ndimage import zoom

    out = np.zeros((size, size))
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        n = base * 2 ** o
        g = rng.random((n + 1, n + 1))
        g[-1, :] = g[0, :]
        g[:, -1] = g[:, 0]
        z = zoom(g, size / n, order=3, mode="grid-wrap")[:size, :size]
        out += amp * z
        tot += amp
        amp *= 0.5
    out /= tot
    return (out - out.min()) / max(out.max() - out.min(), 1e-9)


#: texture kinds of the bank and how many of each; grey kinds are mixed between two material colours at
#: render time, coloured kinds ("package", "label", "photo") carry their own colours (Material.printed).
TEXTURE_KINDS: tuple[tuple[str, int, bool], ...] = (
    ("noise", 4, False), ("wood", 5, False), ("planks", 4, False), ("stripes", 3, False), ("checker", 2, False),
    ("speckle", 3, False), ("fabric", 3, False), ("carpet", 4, False), ("marble", 2, False),
    ("package", 22, True), ("label", 10, True), ("photo", 4, True),
)


def texture_kinds() -> np.ndarray:
    """str (n,): the kind of every bank entry, in bank order (see :data:`TEXTURE_KINDS`)."""
    return np.array([k for k, n, _ in TEXTURE_KINDS for _ in range(n)])


def _rand_color(rng, dark_light: float = 0.5) -> np.ndarray:
    """A packaging-like colour: saturated hues, or near white / near black."""
    import colorsys

    u = rng.random()
    if u < 0.2:
        return np.full(3, rng.uniform(0.85, 1.0))
    if u < 0.35:
        return np.full(3, rng.uniform(0.0, 0.15))
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)))


def _draw_text(img, rng, x0, y0, width, h, color):
    """Rows of glyph-like marks (1-3 strokes in a box of height ``h`` px) from (x0, y0), ``width`` px wide."""
    S = img.shape[0]
    x = x0
    stroke = max(1, int(round(h / 5)))
    while x < x0 + width:
        if rng.random() < 0.15:  # word gap
            x += int(h * rng.uniform(0.4, 0.8))
            continue
        gw = max(1, int(h * rng.uniform(0.4, 0.9)))
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:  # vertical stroke
                sx = x + int(rng.integers(0, max(gw - stroke, 0) + 1))
                img[y0 % S:(y0 % S) + h, sx % S:(sx % S) + stroke] = color
            else:  # horizontal stroke at the top, middle or bottom
                sy = y0 + int(rng.choice([0, h // 2, max(h - stroke, 0)]))
                img[sy % S:(sy % S) + stroke, x % S:(x % S) + gw] = color
        x += gw + max(1, stroke)


def _package_texture(rng, S, kind):
    """Printed packaging (cereal / cracker boxes: big title, logo, photo patch, text blocks, barcode) or a can
    label (horizontal bands with text). float (S, S, 3) in [0, 1]."""
    yy, xx = np.mgrid[0:S, 0:S] / S
    bgc = _rand_color(rng)
    img = np.ones((S, S, 3)) * bgc
    if rng.random() < 0.5:  # gradient background
        img = img * (1 - 0.35 * (yy if rng.random() < 0.5 else xx))[..., None] + 0.35 * _rand_color(rng) * (
            yy if rng.random() < 0.5 else xx)[..., None]
    if kind == "label":
        y = 0
        while y < S:
            h = int(rng.integers(S // 16, S // 3))
            if rng.random() < 0.6:
                img[y:y + h] = _rand_color(rng)
            if rng.random() < 0.6:
                th = int(rng.integers(3, max(4, h // 2)))
                _draw_text(img, rng, int(rng.integers(0, S // 4)), y + (h - th) // 2, int(rng.integers(S // 4, S)), th,
                           _rand_color(rng))
            y += h
    else:
        # photo-like patch (food picture): smooth colour noise in an ellipse or rectangle
        if rng.random() < 0.8:
            cx, cy, rx, ry = rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.8), rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.3)
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1 if rng.random() < 0.6 else (
                (abs(xx - cx) < rx) & (abs(yy - cy) < ry))
            c1, c2 = _rand_color(rng), _rand_color(rng)
            nz = _value_noise(rng, S, 4, int(rng.integers(3, 8)))[..., None]
            img[m] = (c1 * nz + c2 * (1 - nz))[m]
        # title: big bold glyphs, sometimes on a banner
        ty = int(rng.integers(S // 16, S // 3))
        th = int(rng.integers(S // 12, S // 5))
        if rng.random() < 0.5:
            img[max(ty - th // 4, 0):ty + th + th // 4] = _rand_color(rng)
        _draw_text(img, rng, int(rng.integers(4, S // 5)), ty, int(rng.integers(S // 2, S - S // 8)), th,
                   _rand_color(rng))
        # logo: a filled circle / ellipse
        if rng.random() < 0.7:
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.12)
            img[((xx - cx) / r) ** 2 + ((yy - cy) / (r * rng.uniform(0.6, 1.4))) ** 2 < 1] = _rand_color(rng)
        # small print: several lines of text
        for _ in range(int(rng.integers(2, 12))):
            h = int(rng.integers(2, 7))
            _draw_text(img, rng, int(rng.integers(0, S // 2)), int(rng.integers(0, S - h)),
                       int(rng.integers(S // 8, S // 2)), h,
                       _rand_color(rng) if rng.random() < 0.5 else np.full(3, float(bgc.mean() < 0.5)))
        if rng.random() < 0.4:  # barcode
            bx, by = int(rng.integers(0, S - 40)), int(rng.integers(0, S - 24))
            img[by:by + 24, bx:bx + 36] = 1.0
            for x in range(bx + 2, bx + 34):
                if rng.random() < 0.5:
                    img[by + 2:by + 22, x] = 0.0
    return 0.92 * img + 0.08 * _value_noise(rng, S, 2, 16)[..., None]


def make_texture_bank(seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Procedural textures, float32 (n, S, S, 3) in [0, 1], plus bool (n,) "printed" flags, in the order of
    :func:`texture_kinds`.

    Grey-valued kinds (value noise, wood grain, wooden planks, stripes, checker, speckle, fabric, carpet,
    marble) are mixed between two material colours at render time; printed kinds (packaging with titles,
    logos, photos, small print and barcodes; can labels; smooth colour photos) carry their own colour.
    """
    rng = np.random.default_rng(seed)
    S = TEX_SIZE
    y, x = np.mgrid[0:S, 0:S] / S
    bank, printed = [], []
    for kind, count, is_printed in TEXTURE_KINDS:
        for _ in range(count):
            if kind == "noise":
                t = _value_noise(rng, S, 4, int(rng.integers(2, 6)))
            elif kind in ("wood", "planks"):
                # grain along x: fine streaks (per-row noise displaced by a slow warp) + faint distorted rings
                nz = _value_noise(rng, S, 3, 4)
                r0 = rng.random(S)  # per-row fibre value, smoothed cyclically so the texture still tiles
                rows = (r0 + np.roll(r0, 1) + np.roll(r0, -1)) / 3
                fib = rows[(np.arange(S)[:, None] + (nz * S * rng.uniform(0.04, 0.12)).astype(int)) % S]
                f = rng.integers(3, 10)
                rings = 0.5 + 0.5 * np.sin(2 * np.pi * (f * y + rng.uniform(0.2, 0.6) * nz))
                t = 0.45 * fib + 0.35 * rings ** 3 + 0.2 * _value_noise(rng, S, 2, 3)
                if kind == "planks":  # boards of random shade separated by dark seams
                    n_b = int(rng.choice([2, 4]))
                    band = np.floor(y * n_b).astype(int)
                    shade = rng.uniform(0.75, 1.15, n_b)[band]
                    t = t * shade
                    t[(y * n_b) % 1.0 < 0.012] *= 0.3
            elif kind == "stripes":
                f = rng.integers(2, 16)
                phase = x + (y if rng.random() < 0.3 else 0)
                t = (np.sin(2 * np.pi * f * phase) > rng.uniform(-0.5, 0.5)).astype(float)
            elif kind == "checker":
                f = rng.integers(2, 10)
                t = ((np.floor(f * x) + np.floor(f * y)) % 2).astype(float)
            elif kind == "speckle":
                t = 0.7 * rng.random((S, S)) + 0.3 * _value_noise(rng, S, 3, 8)
            elif kind == "fabric":
                f = rng.integers(30, 80)
                t = 0.5 + 0.25 * np.sin(2 * np.pi * f * x) + 0.25 * np.sin(2 * np.pi * f * y)
                t = 0.7 * t + 0.3 * rng.random((S, S))
            elif kind == "carpet":  # loop pile: high-frequency speckle in streaks, low-frequency wear
                t = rng.random((S, S))
                t = 0.5 * t + 0.5 * np.roll(t, 1, axis=int(rng.integers(0, 2)))
                t = 0.6 * (t > rng.uniform(0.4, 0.6)) + 0.2 * t + 0.2 * _value_noise(rng, S, 2, 6)
            elif kind == "marble":
                nz = _value_noise(rng, S, 5, 3)
                t = 0.5 + 0.5 * np.sin(2 * np.pi * (2 * x + 6 * nz))
            elif kind in ("package", "label"):
                img = _package_texture(rng, S, kind)
            elif kind == "photo":
                img = np.stack([_value_noise(rng, S, 4, int(rng.integers(2, 6))) for _ in range(3)], -1)
            else:  # pragma: no cover - TEXTURE_KINDS and this switch are edited together
                raise ValueError(f"unknown texture kind {kind}")
            if not is_printed:
                t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
                img = np.repeat(t[..., None], 3, axis=2)
            bank.append(np.clip(img, 0, 1).astype(np.float32))
            printed.append(is_printed)
    return np.stack(bank), np.array(printed)


_BANK_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def texture_bank(seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Cached :func:`make_texture_bank` (built once per process)."""
    if seed not in _BANK_CACHE:
        _BANK_CACHE[seed] = make_texture_bank(seed)
    return _BANK_CACHE[seed]


# ------------------------------------------------------------------------------------------ shading

@dataclass
class Lighting:
    """Directional key light + fill light + ambient, world frame. dirs point *towards* the light."""
    key_dir: np.ndarray
    key_color: np.ndarray
    fill_dir: np.ndarray
    fill_color: np.ndarray
    ambient: np.ndarray
    shadows: bool = True
    shadow_strength: float = 0.7
    shadow_blur: float = 0.0  #: Gaussian sigma (px) of the shadow mask: penumbrae of area lights


def shade(scene: Scene, buf: dict, light: Lighting, cam_pos: np.ndarray, rng: np.random.Generator,
          bank: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Linear-light RGB float32 (H, W, 3): textured albedo x (ambient + key (shadowed) + fill) + specular.

    Shadow rays toward the key light are cast once per 2x2 block of pixels that all show the same geometry
    and per pixel elsewhere (see :func:`_kernels.shadow_rays`): a quarter of the rays, sharp silhouettes.
    """
    import open3d.core as o3c

    from instseg_ros.data import _kernels

    H, W = buf["depth"].shape
    tex = bank[0]
    geom = buf["geom"].reshape(-1)
    n = buf["normal"].reshape(-1, 3)
    p = buf["point"].reshape(-1, 3)
    ms = scene.meshes
    # per-geometry material tables (last row = no hit)
    Rs = np.stack([m.R for m in ms] + [np.eye(3)]).astype(np.float32)
    ts = np.stack([m.t for m in ms] + [np.zeros(3)]).astype(np.float32)
    c0 = np.stack([m.material.colors[0] for m in ms] + [np.zeros(3)]).astype(np.float32)
    c1 = np.stack([m.material.colors[1] for m in ms] + [np.zeros(3)]).astype(np.float32)
    tid = np.array([m.material.texture for m in ms] + [-1], np.int64)
    inv_scale = np.array([TEX_SIZE / m.material.scale for m in ms] + [1.0], np.float32)
    prn = np.array([m.material.printed for m in ms] + [False])
    spw = np.array([m.material.specular for m in ms] + [0.0], np.float32)
    # Blinn-Phong exponent rounded to a power of two 2^k (evaluated by k squarings in the kernel)
    shn = np.array([max(int(round(np.log2(max(m.material.shininess, 1.0)))), 0) for m in ms] + [0], np.int64)
    mapping = np.array([m.material.mapping for m in ms] + [0], np.int64)
    band = np.array([m.material.band for m in ms] + [0.0], np.float32)
    band_spec = np.array([m.material.band_specular for m in ms] + [0.0], np.float32)
    spec_cut = (1e-3 ** (1.0 / 2.0 ** shn)).astype(np.float32)
    key = np.asarray(light.key_dir, np.float32)
    vis = np.ones(H * W, np.float32)
    if light.shadows:
        rays, ray_of = _kernels.shadow_rays(geom, n, p, key, H, W)
        if len(rays):
            occ = scene.rc.test_occlusions(o3c.Tensor(rays), tnear=1e-4, tfar=10.0, nthreads=1).numpy()
            vis = _kernels.scatter_visibility(ray_of, occ, np.float32(1.0 - light.shadow_strength))
            if light.shadow_blur > 0:  # penumbra: two box filters ~ a Gaussian of sigma shadow_blur px
                w = max(int(round(np.sqrt(6 * light.shadow_blur ** 2 + 1))) | 1, 1)
                vis = _kernels.box_blur_twice(vis.reshape(H, W), w).reshape(-1)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    rgb = _kernels.shade(geom, n, p, vis, f32(cam_pos), Rs, ts, c0, c1, tid, inv_scale, prn, spw, shn, mapping,
                         band, band_spec, spec_cut, tex, key,
                         f32(light.key_color), f32(light.fill_dir), f32(light.fill_color), f32(light.ambient))
    return rgb.reshape(H, W, 3)


_GAMMA_LUT = None


def camera_effects(lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear RGB float32 (H, W, 3) -> uint8 sRGB-ish camera image: auto-exposure, white balance, optics blur,
    vignetting, gamma, saturation, sensor noise, black level (one fused pass, :func:`_kernels.develop`)."""
    from instseg_ros.data import _kernels

    global _GAMMA_LUT
    if _GAMMA_LUT is None:
        _GAMMA_LUT = _kernels.gamma_lut(1 / 2.2)
    lum = lin[::4, ::4].mean(2)  # exposure statistic on a subsampled image
    expo = rng.uniform(0.2, 0.55) / max(float(np.percentile(lum, 60)), 1e-4)
    # white balance error: a colour-temperature tilt (blue <-> amber) and a small green / magenta one
    tilt, gm = rng.normal(0, 0.07), rng.normal(0, 0.03)
    wb = np.array([1 + tilt, 1 + gm, 1 - tilt]) * rng.uniform(0.95, 1.05, 3)
    gain = (expo * wb).astype(np.float32)
    vignette = np.float32(rng.uniform(0.0, 0.35))
    sigma = rng.uniform(0.3, 1.1)
    sat = np.float32(rng.uniform(0.75, 1.15))
    # sensor noise: per-pixel luminance noise + chroma noise on 2x2 blocks (as after demosaicing), drawn in the
    # kernel from a counter-based stream (no image-sized random arrays)
    amp = np.float32(rng.uniform(0.004, 0.02))
    seed = np.uint64(rng.integers(0, 2 ** 63))
    offset = (rng.normal(0, 0.01, 3) + rng.uniform(0.0, 0.04)).astype(np.float32)  # black level / haze
    return _kernels.develop(np.ascontiguousarray(lin, np.float32), gaussian_taps(sigma), gain, vignette, _GAMMA_LUT,
                            sat, amp, amp * np.float32(0.6), seed, offset)


def gaussian_taps(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """float32 (2r+1,) normalised Gaussian weights, r = int(truncate * sigma + 0.5) (scipy.ndimage's rule)."""
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)
