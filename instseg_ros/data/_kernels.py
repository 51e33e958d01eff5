"""Numba kernels of the renderer: per-pixel loops that numpy would run as many full-image temporaries.

All kernels are single-threaded (the generator parallelises over processes) and cached on disk
(``cache=True``), so a worker pays the JIT compile once per machine, not once per process.
Array conventions follow :mod:`instseg_ros.data.render`: images flattened row-major to (H*W, ...),
world frame metres, rays with camera-frame z component 1 (ray parameter = z-depth).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def make_rays(fx, fy, cx, cy, R, t, W, H):
    """float32 (H*W, 6) world rays [origin, direction] of an optical-frame camera, direction camera z = 1:
    d = R @ ((u - cx) / fx, (v - cy) / fy, 1) for pixel (u, v) (row-major), origin t. R (3, 3), t (3,)."""
    rays = np.empty((H * W, 6), np.float32)
    for v in range(H):
        y = (np.float32(v) - np.float32(cy)) / np.float32(fy)
        for u in range(W):
            x = (np.float32(u) - np.float32(cx)) / np.float32(fx)
            i = v * W + u
            for k in range(3):
                rays[i, k] = t[k]
                rays[i, 3 + k] = x * R[k, 0] + y * R[k, 1] + R[k, 2]
    return rays


@njit(cache=True, inline="always")
def _smooth_normal(all_normals, a, b, c, w1, w2):
    """Vertex normals of triangle (a, b, c) interpolated at barycentrics (w1, w2); returns (nx, ny, nz, length)."""
    w0 = 1.0 - w1 - w2
    nx = w0 * all_normals[a, 0] + w1 * all_normals[b, 0] + w2 * all_normals[c, 0]
    ny = w0 * all_normals[a, 1] + w1 * all_normals[b, 1] + w2 * all_normals[c, 1]
    nz = w0 * all_normals[a, 2] + w1 * all_normals[b, 2] + w2 * all_normals[c, 2]
    return nx, ny, nz, np.sqrt(nx * nx + ny * ny + nz * nz)


@njit(cache=True, inline="always")
def _write_hit(i, t, nx, ny, nz, ln, fx, fy, cx, cy, W, R, o, normal, point, cosang):
    """Pixel i's unit normal (turned to face the camera), |cos| to its ray and world hit point at ray length t."""
    x = (i % W - cx) / fx
    y = (i // W - cy) / fy
    d0 = R[0, 0] * x + R[0, 1] * y + R[0, 2]
    d1 = R[1, 0] * x + R[1, 1] * y + R[1, 2]
    d2 = R[2, 0] * x + R[2, 1] * y + R[2, 2]
    nx, ny, nz = nx / ln, ny / ln, nz / ln
    nd = nx * d0 + ny * d1 + nz * d2
    if nd > 0:
        nx, ny, nz = -nx, -ny, -nz
    cosang[i] = abs(nd) / np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
    normal[i, 0], normal[i, 1], normal[i, 2] = nx, ny, nz
    point[i, 0] = o[0] + d0 * t
    point[i, 1] = o[1] + d1 * t
    point[i, 2] = o[2] + d2 * t


@njit(cache=True)
def finish_cast(t_hit, gid, prim, uv, prim_normal, fx, fy, cx, cy, R, o, W, tri_offset, all_tris, all_normals,
                inst_of_geom):
    """Turn Open3D ``cast_rays`` outputs into render buffers (:func:`raster_buffers` makes the same directly).

    Args: t_hit float32 (N,) (inf = miss); gid, prim uint32 (N,); uv float32 (N, 2) barycentrics of vertices 1
    and 2; prim_normal float32 (N, 3) world face normals; fx, fy, cx, cy intrinsics; R (3, 3) camera-to-world
    rotation and o (3,) camera centre: pixel i = v * W + u has the ray o + t R ((u - cx) / fx, (v - cy) / fy, 1);
    tri_offset int64 (G + 1,); all_tris int64 (T, 3) global vertex ids; all_normals float32 (V, 3);
    inst_of_geom int32 (G + 1,) (last = no hit).
    Returns depth float32 (N,), geom int32 (N,) (-1 = none), instance int32 (N,), normal float32 (N, 3)
    (unit, facing the camera, 0 where no hit), point float32 (N, 3) world hit point (0 where no hit),
    cos float32 (N,) |cos| of the angle between normal and ray (0 where no hit).
    """
    n = t_hit.shape[0]
    G = inst_of_geom.shape[0] - 1
    depth = np.zeros(n, np.float32)
    geom = np.full(n, -1, np.int32)
    inst = np.zeros(n, np.int32)
    normal = np.zeros((n, 3), np.float32)
    point = np.zeros((n, 3), np.float32)
    cosang = np.zeros(n, np.float32)
    for i in range(n):
        t = t_hit[i]
        if not np.isfinite(t):
            inst[i] = inst_of_geom[G]
            continue
        g = np.int64(gid[i])
        depth[i] = t
        geom[i] = g
        inst[i] = inst_of_geom[g]
        tri = tri_offset[g] + np.int64(prim[i])
        a, b, c = all_tris[tri, 0], all_tris[tri, 1], all_tris[tri, 2]
        nx, ny, nz, ln = _smooth_normal(all_normals, a, b, c, uv[i, 0], uv[i, 1])
        if not np.isfinite(ln) or ln < 1e-6:
            nx, ny, nz = prim_normal[i, 0], prim_normal[i, 1], prim_normal[i, 2]
            ln = max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-9)
        _write_hit(i, t, nx, ny, nz, ln, fx, fy, cx, cy, W, R, o, normal, point, cosang)
    return depth, geom, inst, normal, point, cosang


@njit(cache=True)
def shadow_rays(geom, normal, point, key, H, W):
    """Shadow rays toward the key light: one per 2x2 block whose pixels all show the same geometry, one per
    lit pixel in mixed blocks (silhouettes stay sharp). A pixel is lit when it has a hit and n . key > 0.
    geom int32 (H*W,), normal / point float32 (H*W, 3) world, key (3,) unit direction towards the light.
    Returns (rays float32 (R, 6) [origin 2 mm off the surface, key], ray_of_pixel int64 (H*W,), -1 = unlit)."""
    ray_of = np.full(H * W, -1, np.int64)
    rays = np.empty((H * W, 6), np.float32)
    r = 0
    for by in range(0, H, 2):
        for bx in range(0, W, 2):
            g0 = geom[by * W + bx]
            uniform = g0 >= 0
            for dy in range(2):
                for dx in range(2):
                    y, x = by + dy, bx + dx
                    if y < H and x < W and geom[y * W + x] != g0:
                        uniform = False
            rep = -1
            for dy in range(2):
                for dx in range(2):
                    y, x = by + dy, bx + dx
                    if y >= H or x >= W:
                        continue
                    p = y * W + x
                    if geom[p] < 0:
                        continue
                    if normal[p, 0] * key[0] + normal[p, 1] * key[1] + normal[p, 2] * key[2] <= 0:
                        continue
                    if uniform and rep >= 0:
                        ray_of[p] = rep
                    else:
                        for k in range(3):
                            rays[r, k] = point[p, k] + normal[p, k] * 2e-3
                            rays[r, 3 + k] = key[k]
                        ray_of[p] = r
                        rep = r
                        r += 1
    return rays[:r], ray_of


@njit(cache=True)
def scatter_visibility(ray_of, occluded, dark):
    """float32 (N,): ``dark`` where the pixel's shadow ray is occluded, 1 elsewhere (unlit pixels too)."""
    n = ray_of.shape[0]
    vis = np.ones(n, np.float32)
    for i in range(n):
        r = ray_of[i]
        if r >= 0 and occluded[r]:
            vis[i] = dark
    return vis


@njit(cache=True)
def _box_rows(src, dst, h):
    """dst[y, x] = mean of src[y, clamp(x - h .. x + h)] (running sum in float64), float32 (H, W)."""
    H, W = src.shape
    w = 2 * h + 1
    for y in range(H):
        s = 0.0
        for j in range(-h, h + 1):
            s += src[y, min(max(j, 0), W - 1)]
        for x in range(W):
            dst[y, x] = s / w
            s += src[y, min(x + h + 1, W - 1)] - src[y, max(x - h, 0)]


@njit(cache=True)
def _box_cols(src, dst, h):
    """dst[y, x] = mean of src[clamp(y - h .. y + h), x], a whole row at a time (vectorises over x)."""
    H, W = src.shape
    w = 2 * h + 1
    s = np.zeros(W)
    for j in range(-h, h + 1):
        s += src[min(max(j, 0), H - 1)]
    for y in range(H):
        for x in range(W):
            dst[y, x] = s[x] / w
        a, b = src[min(y + h + 1, H - 1)], src[max(y - h, 0)]
        for x in range(W):
            s[x] += a[x] - b[x]


@njit(cache=True)
def box_blur_twice(img, size):
    """Two passes of a ``size`` x ``size`` mean filter (odd size, edges clamped: scipy.ndimage
    ``uniform_filter(uniform_filter(img, size, mode="nearest"), size, mode="nearest")``), float32 (H, W)."""
    h = size // 2
    a = np.empty_like(img)
    b = np.empty_like(img)
    _box_rows(img, a, h)
    _box_rows(a, b, h)
    _box_cols(b, a, h)
    _box_cols(a, b, h)
    return b


@njit(cache=True, fastmath=True)
def shade(geom, normal, point, vis, cam_pos, Rs, ts, c0, c1, tid, inv_scale, printed, spec_w, shininess,
          mapping, band, band_spec, spec_cut, tex, key_dir, key_col, fill_dir, fill_col, ambient):
    """Linear RGB float32 (N, 3): textured albedo x (hemispheric ambient + shadowed key + fill) + Blinn-Phong.

    Per-geometry tables are indexed by geom (last row = no hit): Rs (G+1, 3, 3) body rotation, ts (G+1, 3)
    body origin (texture coordinates are body-frame positions so textures stick to objects), c0 / c1
    (G+1, 3) material colours, tid texture index (-1 plain), inv_scale texels per metre, printed flags,
    spec_w / shininess. tex float32 (n, S, S, 3). vis float32 (N,) key-light visibility (shadows).
    mapping / band / band_spec per geometry: see :class:`render.Material`; shininess: int k, the highlight is
    (n . h)^(2^k); spec_cut: 1e-3^(1 / 2^k). Triplanar-like projection drops the
    body axis most aligned with the normal; cylindrical wraps (arc length, -z) around the body z axis.
    """
    n = geom.shape[0]
    S = tex.shape[1]
    out = np.empty((n, 3), np.float32)
    for i in range(n):
        g = geom[i]
        if g < 0:
            for k in range(3):
                out[i, k] = ambient[k] * 0.5
            continue
        px, py, pz = point[i, 0] - ts[g, 0], point[i, 1] - ts[g, 1], point[i, 2] - ts[g, 2]
        nx, ny, nz = normal[i, 0], normal[i, 1], normal[i, 2]
        # body frame: R^T v
        l0 = Rs[g, 0, 0] * px + Rs[g, 1, 0] * py + Rs[g, 2, 0] * pz
        l1 = Rs[g, 0, 1] * px + Rs[g, 1, 1] * py + Rs[g, 2, 1] * pz
        l2 = Rs[g, 0, 2] * px + Rs[g, 1, 2] * py + Rs[g, 2, 2] * pz
        m0 = abs(Rs[g, 0, 0] * nx + Rs[g, 1, 0] * ny + Rs[g, 2, 0] * nz)
        m1 = abs(Rs[g, 0, 1] * nx + Rs[g, 1, 1] * ny + Rs[g, 2, 1] * nz)
        m2 = abs(Rs[g, 0, 2] * nx + Rs[g, 1, 2] * ny + Rs[g, 2, 2] * nz)
        plain = False
        sw = spec_w[g]
        if mapping[g] == 1 and m2 < 0.75:  # side of a body of revolution
            rad = np.sqrt(l0 * l0 + l1 * l1)
            a, b = np.arctan2(l1, l0) * rad, -l2
            if band[g] > 0 and abs(l2) > band[g]:
                plain, sw = True, band_spec[g]
        elif mapping[g] == 1:  # cap
            a, b = l0, l1
            if band[g] > 0:
                plain, sw = True, band_spec[g]
        elif m0 >= m1 and m0 >= m2:
            a, b = l1, l2
        elif m1 >= m2:
            a, b = l0, l2
        else:
            a, b = l0, l1
        tv0 = tv1 = tv2 = 0.0
        t = tid[g]
        if plain:
            t = -1
        if t >= 0:
            iu = np.int64(np.floor(a * inv_scale[g])) % S
            iv = np.int64(np.floor(b * inv_scale[g])) % S
            tv0, tv1, tv2 = tex[t, iv, iu, 0], tex[t, iv, iu, 1], tex[t, iv, iu, 2]
        if printed[g] and not plain:
            al0, al1, al2 = tv0 * c1[g, 0], tv1 * c1[g, 1], tv2 * c1[g, 2]
        else:
            al0 = c0[g, 0] * (1 - tv0) + c1[g, 0] * tv0
            al1 = c0[g, 1] * (1 - tv1) + c1[g, 1] * tv1
            al2 = c0[g, 2] * (1 - tv2) + c1[g, 2] * tv2
        ndk = max(nx * key_dir[0] + ny * key_dir[1] + nz * key_dir[2], 0.0)
        ndf = max(nx * fill_dir[0] + ny * fill_dir[1] + nz * fill_dir[2], 0.0)
        v = vis[i]
        spec = 0.0
        if ndk > 0 and sw > 0.05:  # matte surfaces (walls, floors) skip the highlight
            vx, vy, vz = cam_pos[0] - point[i, 0], cam_pos[1] - point[i, 1], cam_pos[2] - point[i, 2]
            lv = max(np.sqrt(vx * vx + vy * vy + vz * vz), 1e-9)
            hx, hy, hz = vx / lv + key_dir[0], vy / lv + key_dir[1], vz / lv + key_dir[2]
            lh = max(np.sqrt(hx * hx + hy * hy + hz * hz), 1e-9)
            ndh = min(max((nx * hx + ny * hy + nz * hz) / lh, 0.0), 1.0)
            if ndh > spec_cut[g]:  # below it ndh^shininess < 1e-3
                # ndh^(2^k) by k squarings: the shininess exponent rounded to a power of two (no pow call)
                for _ in range(shininess[g]):
                    ndh *= ndh
                spec = sw * ndh * v
        sky = 0.6 + 0.4 * (0.5 + 0.5 * nz)  # hemispheric ambient: surfaces facing up get more light
        out[i, 0] = al0 * (ambient[0] * sky + key_col[0] * ndk * v + fill_col[0] * ndf) + spec * key_col[0]
        out[i, 1] = al1 * (ambient[1] * sky + key_col[1] * ndk * v + fill_col[1] * ndf) + spec * key_col[1]
        out[i, 2] = al2 * (ambient[2] * sky + key_col[2] * ndk * v + fill_col[2] * ndf) + spec * key_col[2]
    return out


@njit(cache=True)
def amodal_raster(uv, tris, tri_obj, n_obj, vis_order, vis_start, H, W, pc=None):
    """Unoccluded pixel count per object by rasterising its triangles' silhouettes (no depth test).

    A pixel (u, v) counts for object k when its centre (integer u, v: the ray convention of
    :func:`render.camera_rays`) lies inside (edges included) a projected triangle of k, or when k is
    visible there (so amodal >= visible exactly, whatever happens at silhouette edges).
    uv float64 (V, 2) projected vertices (all in front of the camera); tris int64 (T, 3) sorted by object;
    tri_obj int64 (T,) object index 0..n_obj-1; vis_order int64 (P,) pixel indices sorted by visible object,
    vis_start int64 (n_obj + 1,) offsets into it. pc: None, or float64 (V, 3) the camera-frame vertices: then
    triangles facing away from the camera are skipped (about half the work; exact for closed meshes wound
    counter-clockwise seen from outside, as every object mesh is: the front faces cover the silhouette).
    Returns int64 (n_obj,).
    """
    stamp = np.full(H * W, -1, np.int64)
    counts = np.zeros(n_obj, np.int64)
    T = tris.shape[0]
    j = 0
    for k in range(n_obj):
        c = 0
        while j < T and tri_obj[j] == k:
            a, b, cc = tris[j, 0], tris[j, 1], tris[j, 2]
            ax, ay, bx, by, cx, cy = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1], uv[cc, 0], uv[cc, 1]
            j += 1
            if pc is not None:  # n . v0 >= 0 with n = (v1 - v0) x (v2 - v0): back face
                e1x, e1y, e1z = pc[b, 0] - pc[a, 0], pc[b, 1] - pc[a, 1], pc[b, 2] - pc[a, 2]
                e2x, e2y, e2z = pc[cc, 0] - pc[a, 0], pc[cc, 1] - pc[a, 1], pc[cc, 2] - pc[a, 2]
                nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
                if nx * pc[a, 0] + ny * pc[a, 1] + nz * pc[a, 2] >= 0:
                    continue
            area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            if abs(area) < 1e-12:
                continue
            s = 1.0 if area > 0 else -1.0
            eps = -1e-9 * abs(area)
            u0 = max(int(np.ceil(min(ax, bx, cx))), 0)
            u1 = min(int(np.floor(max(ax, bx, cx))), W - 1)
            v0 = max(int(np.ceil(min(ay, by, cy))), 0)
            v1 = min(int(np.floor(max(ay, by, cy))), H - 1)
            for y in range(v0, v1 + 1):
                for x in range(u0, u1 + 1):
                    e0 = s * ((bx - ax) * (y - ay) - (by - ay) * (x - ax))
                    e1 = s * ((cx - bx) * (y - by) - (cy - by) * (x - bx))
                    e2 = s * ((ax - cx) * (y - cy) - (ay - cy) * (x - cx))
                    if e0 >= eps and e1 >= eps and e2 >= eps:
                        p = y * W + x
                        if stamp[p] != k:
                            stamp[p] = k
                            c += 1
        for q in range(vis_start[k], vis_start[k + 1]):
            p = vis_order[q]
            if stamp[p] != k:
                stamp[p] = k
                c += 1
        counts[k] = c
    return counts


# ------------------------------------------------------------------------------------ counter-based noise
# Per-pixel noise drawn inside the kernels that use it (no image-sized random arrays): sample i of a stream is
# splitmix64(seed + (i + 1) * golden), and a standard-normal-like value is the sum of the hash's four 16-bit
# fields (Irwin-Hall with n = 4: mean 0, variance 1, tails cut at +-3.46, excess kurtosis -0.3), rescaled.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW16 = np.uint64(0xFFFF)
_IH_MEAN = 4 * 65535 / 2.0
_IH_SCALE = 1.0 / np.sqrt(4 * (65536.0 ** 2 - 1) / 12.0)


@njit(cache=True, inline="always")
def _hash64(seed, i):
    z = seed + np.uint64(i + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def hash_normal(seed, i):
    """Sample ``i`` (int >= 0) of the unit-variance noise stream ``seed`` (uint64); see the comment above."""
    z = _hash64(seed, i)
    s = (z & _LOW16) + ((z >> np.uint64(16)) & _LOW16) + ((z >> np.uint64(32)) & _LOW16) + (z >> np.uint64(48))
    return np.float32((np.float64(s) - _IH_MEAN) * _IH_SCALE)


@njit(cache=True)
def hash_normals(seed, n):
    """float32 (n,): samples 0..n-1 of the noise stream ``seed`` (uint64), for tests and statistics."""
    out = np.empty(n, np.float32)
    for i in range(n):
        out[i] = hash_normal(seed, i)
    return out


GAMMA_LUT_N = 4096
GAMMA_LUT_MAX_SQRT = 1.5  #: the table covers linear values up to 1.5^2 (brighter clips after gamma anyway)


def gamma_lut(inv_gamma: float) -> np.ndarray:
    """float32 (GAMMA_LUT_N + 1,): x^inv_gamma tabulated on s = sqrt(x) (dense where the curve is steep)."""
    s = np.linspace(0.0, GAMMA_LUT_MAX_SQRT, GAMMA_LUT_N + 1)
    return (s ** (2.0 * inv_gamma)).astype(np.float32)


@njit(cache=True, fastmath=True)
def _gamma(v, lut):
    s = np.sqrt(max(v, 0.0)) * (GAMMA_LUT_N / GAMMA_LUT_MAX_SQRT)
    i = min(int(s), GAMMA_LUT_N - 1)
    f = min(s - i, 1.0)
    return lut[i] * (1.0 - f) + lut[i + 1] * f


@njit(cache=True)
def label_bboxes(labels, n):
    """Per id 0..n-1 of int (H, W) labels: [x, y, w, h] of its pixels (zeros when absent), int64 (n, 4)."""
    H, W = labels.shape
    lo = np.full((n, 2), 1 << 30, np.int64)
    hi = np.full((n, 2), -1, np.int64)
    for y in range(H):
        for x in range(W):
            k = labels[y, x]
            if k < 0 or k >= n:
                continue
            lo[k, 0] = min(lo[k, 0], x)
            lo[k, 1] = min(lo[k, 1], y)
            hi[k, 0] = max(hi[k, 0], x)
            hi[k, 1] = max(hi[k, 1], y)
    out = np.zeros((n, 4), np.int64)
    for k in range(n):
        if hi[k, 0] >= 0:
            out[k, 0], out[k, 1] = lo[k, 0], lo[k, 1]
            out[k, 2], out[k, 3] = hi[k, 0] - lo[k, 0] + 1, hi[k, 1] - lo[k, 1] + 1
    return out


@njit(cache=True)
def _sat_separated(a, na, ax_, ay_, b, nb, bx_, by_, gap):
    """Whether convex polygons a + (ax_, ay_) and b + (bx_, by_) are at least ``gap`` apart along one of the
    edge normals na / nb (a separating axis)."""
    for side in range(2):
        nrm = na if side == 0 else nb
        for k in range(nrm.shape[0]):
            nx, ny = nrm[k, 0], nrm[k, 1]
            amin, amax = np.inf, -np.inf
            for i in range(a.shape[0]):
                q = (a[i, 0] + ax_) * nx + (a[i, 1] + ay_) * ny
                amin, amax = min(amin, q), max(amax, q)
            bmin, bmax = np.inf, -np.inf
            for i in range(b.shape[0]):
                q = (b[i, 0] + bx_) * nx + (b[i, 1] + by_) * ny
                bmin, bmax = min(bmin, q), max(bmax, q)
            if amin >= bmax + gap or bmin >= amax + gap:
                return True
    return False


@njit(cache=True)
def footprint_hits(foot, nrm, px, py, polys, norms, starts, centres, radii, rad, gap):
    """Whether the footprint ``foot`` (k, 2) (edge normals ``nrm``) moved to (px, py) comes closer than ``gap``
    (m) to any placed footprint: polygon j is polys[starts[j]:starts[j + 1]] (world xy, normals alike), with
    bounding circle centres (n, 2) / radii (n,); ``rad`` bounds ``foot`` about its origin. Same test as
    :func:`instseg_ros.data.scene.footprints_overlap`, circles first."""
    for j in range(centres.shape[0]):
        dx, dy = centres[j, 0] - px, centres[j, 1] - py
        if dx * dx + dy * dy >= (radii[j] + rad + gap) ** 2:
            continue
        s, e = starts[j], starts[j + 1]
        if not _sat_separated(foot, nrm, px, py, polys[s:e], norms[s:e], 0.0, 0.0, gap):
            return True
    return False


@njit(cache=True)
def _raster_zbuffer(vc, tris, fx, fy, cx, cy, W, H, near, cull_back):
    """Nearest triangle per pixel (see :func:`raster_buffers`): z-depth float64 (H*W,) (inf = none), triangle
    index int64 (-1 = none), barycentrics of the triangle's vertices 1 and 2, float32."""
    n = H * W
    zbuf = np.full(n, np.inf)
    tri_of = np.full(n, -1, np.int64)
    b1s = np.zeros(n, np.float32)
    b2s = np.zeros(n, np.float32)
    ifx, cxf = 1.0 / fx, cx / fx
    poly = np.empty((4, 3))
    pu = np.empty(4)
    pv = np.empty(4)
    for k in range(tris.shape[0]):
        v0, v1, v2 = vc[tris[k, 0]], vc[tris[k, 1]], vc[tris[k, 2]]
        if v0[2] < near and v1[2] < near and v2[2] < near:
            continue
        # Sutherland-Hodgman against z >= near: at most 4 vertices
        m = 0
        for e in range(3):
            a = vc[tris[k, e]]
            b = vc[tris[k, (e + 1) % 3]]
            ain, bin_ = a[2] >= near, b[2] >= near
            if ain:
                poly[m] = a
                m += 1
            if ain != bin_:
                s = (near - a[2]) / (b[2] - a[2])
                for c in range(3):
                    poly[m, c] = a[c] + s * (b[c] - a[c])
                m += 1
        # project the clipped (convex) polygon; per row, the x interval inside all its edges (padded by a
        # pixel: the exact ray/triangle test below decides, the interval only skips pixels far outside)
        vmin, vmax, area = np.inf, -np.inf, 0.0
        for i in range(m):
            pu[i] = fx * poly[i, 0] / poly[i, 2] + cx
            pv[i] = fy * poly[i, 1] / poly[i, 2] + cy
            vmin, vmax = min(vmin, pv[i]), max(vmax, pv[i])
        for i in range(m):
            j = (i + 1) % m
            area += pu[i] * pv[j] - pu[j] * pv[i]
        if abs(area) < 1e-12:
            continue
        sgn = 1.0 if area > 0 else -1.0
        # ray through the camera centre hits the triangle iff d . (v1 x v2), d . (v2 x v0), d . (v0 x v1) share
        # a sign; they are the unnormalised barycentrics, their sum is d . n with n = (v1 - v0) x (v2 - v0),
        # and the hit's ray parameter (= z-depth, d_z = 1) is t = (n . v0) / (d . n)
        c0x, c0y, c0z = v1[1] * v2[2] - v1[2] * v2[1], v1[2] * v2[0] - v1[0] * v2[2], v1[0] * v2[1] - v1[1] * v2[0]
        c1x, c1y, c1z = v2[1] * v0[2] - v2[2] * v0[1], v2[2] * v0[0] - v2[0] * v0[2], v2[0] * v0[1] - v2[1] * v0[0]
        c2x, c2y, c2z = v0[1] * v1[2] - v0[2] * v1[1], v0[2] * v1[0] - v0[0] * v1[2], v0[0] * v1[1] - v0[1] * v1[0]
        nv0 = (c0x + c1x + c2x) * v0[0] + (c0y + c1y + c2y) * v0[1] + (c0z + c1z + c2z) * v0[2]
        if cull_back and nv0 >= 0:  # counter-clockwise seen from outside: this side faces away from the camera
            continue
        y0 = max(int(np.ceil(vmin - 1.0)), 0)
        y1 = min(int(np.floor(vmax + 1.0)), H - 1)
        for y in range(y0, y1 + 1):
            xl, xr = -1.0, W + 0.0
            for i in range(m):
                j = (i + 1) % m
                a = -sgn * (pv[j] - pv[i])
                c = sgn * ((pu[j] - pu[i]) * (y - pv[i]) + (pv[j] - pv[i]) * pu[i])
                if a > 1e-12:
                    xl = max(xl, -c / a)
                elif a < -1e-12:
                    xr = min(xr, -c / a)
            if not (xl - 1.0 <= xr + 1.0):
                continue
            u0 = max(int(np.floor(xl - 1.0)), 0)
            u1 = min(int(np.ceil(xr + 1.0)), W - 1)
            dy = (y - cy) / fy
            # e_i = d . c_i for d = (dx, dy, 1): linear in dx along the row
            r0, r1, r2 = c0y * dy + c0z, c1y * dy + c1z, c2y * dy + c2z
            for x in range(u0, u1 + 1):
                dx = x * ifx - cxf
                e0, e1, e2 = c0x * dx + r0, c1x * dx + r1, c2x * dx + r2
                den = e0 + e1 + e2
                tol = -1e-9 * abs(den)
                if den > 0:
                    if e0 < tol or e1 < tol or e2 < tol:
                        continue
                elif den < 0:
                    if -e0 < tol or -e1 < tol or -e2 < tol:
                        continue
                else:
                    continue
                inv = 1.0 / den
                t = nv0 * inv
                if t >= near:
                    p = y * W + x
                    if t < zbuf[p]:
                        zbuf[p] = t
                        tri_of[p] = k
                        b1s[p] = e1 * inv
                        b2s[p] = e2 * inv
    return zbuf, tri_of, b1s, b2s


def raster_buffers(vc, tris, tri_geom, fx, fy, cx, cy, W, H, near, R, o, all_normals, inst_of_geom, cull_back):
    """Primary visibility by rasterisation, straight into the render buffers of :func:`finish_cast`.

    Each triangle (camera-frame vertices ``vc`` float64 (V, 3), optical frame) is clipped to z >= ``near``,
    projected, and every pixel centre (integer u, v) inside its projection is intersected exactly with the
    triangle along the pixel's ray ((u - cx) / fx, (v - cy) / fy, 1) (so t = z-depth, as in
    :func:`render.cast`); the nearest hit per pixel wins: the hits Open3D ``RaycastingScene.cast_rays``
    finds. ``cull_back`` skips triangles facing away from the camera (exact for closed meshes wound
    counter-clockwise seen from outside with the camera outside them, which the shape and background
    builders guarantee; about halves the work). tris int64 (T, 3) global vertex ids (scene order),
    tri_geom int64 (T,) geometry index; R (3, 3), o (3,) camera-to-world rotation and centre; all_normals,
    inst_of_geom as in :func:`finish_cast`. Returns its six buffers; the face normal (from ``vc``, rotated
    by R) stands in where the interpolated vertex normal degenerates.
    """
    # two kernels called from Python: numba compiled the z-buffer loop called inside the finishing kernel
    # 3x slower than on its own
    zbuf, tri_of, b1s, b2s = _raster_zbuffer(vc, tris, fx, fy, cx, cy, W, H, near, cull_back)
    return _raster_finish(zbuf, tri_of, b1s, b2s, vc, tris, tri_geom, fx, fy, cx, cy, W, R, o, all_normals,
                          inst_of_geom)


@njit(cache=True)
def _raster_finish(zbuf, tri_of, b1s, b2s, vc, tris, tri_geom, fx, fy, cx, cy, W, R, o, all_normals, inst_of_geom):
    """The per-pixel part of :func:`raster_buffers`."""
    n = zbuf.shape[0]
    G = inst_of_geom.shape[0] - 1
    depth = np.zeros(n, np.float32)
    geom = np.full(n, -1, np.int32)
    inst = np.zeros(n, np.int32)
    normal = np.zeros((n, 3), np.float32)
    point = np.zeros((n, 3), np.float32)
    cosang = np.zeros(n, np.float32)
    for i in range(n):
        k = tri_of[i]
        if k < 0:
            inst[i] = inst_of_geom[G]
            continue
        g = tri_geom[k]
        t = np.float32(zbuf[i])
        depth[i] = t
        geom[i] = g
        inst[i] = inst_of_geom[g]
        a, b, c = tris[k, 0], tris[k, 1], tris[k, 2]
        nx, ny, nz, ln = _smooth_normal(all_normals, a, b, c, b1s[i], b2s[i])
        if not np.isfinite(ln) or ln < 1e-6:  # the face normal, camera frame -> world
            ax, ay, az = vc[b, 0] - vc[a, 0], vc[b, 1] - vc[a, 1], vc[b, 2] - vc[a, 2]
            bx, by, bz = vc[c, 0] - vc[a, 0], vc[c, 1] - vc[a, 1], vc[c, 2] - vc[a, 2]
            qx, qy, qz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
            nx = R[0, 0] * qx + R[0, 1] * qy + R[0, 2] * qz
            ny = R[1, 0] * qx + R[1, 1] * qy + R[1, 2] * qz
            nz = R[2, 0] * qx + R[2, 1] * qy + R[2, 2] * qz
            ln = max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-30)
        _write_hit(i, t, nx, ny, nz, ln, fx, fy, cx, cy, W, R, o, normal, point, cosang)
    return depth, geom, inst, normal, point, cosang


@njit(cache=True, fastmath=True)
def develop(lin, taps, gain, vignette, lut, sat, lum_amp, chroma_amp, seed, offset):
    """Camera development in two passes: separable blur (``taps`` (2r+1,) normalised, edges clamped) of the
    linear image float32 (H, W, 3), then gain (3,) (exposure x white balance), vignetting
    (1 - vignette * r^2, applied after the blur, which it commutes with up to its own smooth slope),
    gamma (``lut``), saturation around the grey value, noise and black-level offset (3,). Noise (after
    gamma, in [0, 1] units): luminance ``lum_amp`` * n per pixel (n of stream ``seed``, index y * W + x) plus
    chroma ``chroma_amp`` * n per channel on 2x2 blocks (as after demosaicing; stream ``seed`` + 1, index
    ((y // 2) * ((W + 1) // 2) + x // 2) * 3 + channel). Returns uint8 (H, W, 3)."""
    H, W = lin.shape[0], lin.shape[1]
    r = (taps.shape[0] - 1) // 2
    W3 = 3 * W
    # horizontal pass on rows seen as flat (3 W,) arrays: clamped borders apart, the inner loop has no
    # index clamping, so it vectorises
    flat = lin.reshape(H, W3)
    tmp = np.empty((H, W3), np.float32)
    for y in range(H):
        row = flat[y]
        trow = tmp[y]
        for x in range(W):
            if r <= x < W - r:
                continue
            for k in range(3):
                acc = np.float32(0.0)
                for j in range(-r, r + 1):
                    acc += taps[j + r] * row[3 * min(max(x + j, 0), W - 1) + k]
                trow[3 * x + k] = acc
        lo, hi = 3 * r, 3 * (W - r)
        for i in range(lo, hi):
            trow[i] = taps[r] * row[i]
        for j in range(-r, r + 1):
            if j == 0:
                continue
            w = taps[j + r]
            d = 3 * j
            for i in range(lo, hi):
                trow[i] += w * row[i + d]
    out = np.empty((H, W, 3), np.uint8)
    cx, cy = W / 2.0, H / 2.0
    inv = 1.0 / (cx * cx + cy * cy)
    W2 = (W + 1) // 2
    chroma = np.zeros((W2, 3), np.float32)
    seed_c = seed + np.uint64(1)
    use_noise = lum_amp != 0 or chroma_amp != 0
    acc = np.empty(W3, np.float32)
    for y in range(H):
        # vertical pass for this row: weighted sum of (clamped) rows of tmp
        src = tmp[min(max(y - r, 0), H - 1)]
        w = taps[0]
        for i in range(W3):
            acc[i] = w * src[i]
        for j in range(-r + 1, r + 1):
            src = tmp[min(max(y + j, 0), H - 1)]
            w = taps[j + r]
            for i in range(W3):
                acc[i] += w * src[i]
        if use_noise and y % 2 == 0:  # chroma of this row of 2x2 blocks
            for b in range(W2):
                for k in range(3):
                    chroma[b, k] = chroma_amp * hash_normal(seed_c, ((y // 2) * W2 + b) * 3 + k)
        dy2 = (y - cy) ** 2
        for x in range(W):
            a0, a1, a2 = acc[3 * x], acc[3 * x + 1], acc[3 * x + 2]
            f = 1.0 - vignette * ((x - cx) ** 2 + dy2) * inv
            rr = _gamma(a0 * gain[0] * f, lut)
            gg = _gamma(a1 * gain[1] * f, lut)
            bb = _gamma(a2 * gain[2] * f, lut)
            m = (rr + gg + bb) / 3.0
            ln = lum_amp * hash_normal(seed, y * W + x) if use_noise else 0.0
            base = m * (1.0 - sat) + ln
            v0 = min(max(base + rr * sat + chroma[x // 2, 0] + offset[0], 0.0), 1.0)
            v1 = min(max(base + gg * sat + chroma[x // 2, 1] + offset[1], 0.0), 1.0)
            v2 = min(max(base + bb * sat + chroma[x // 2, 2] + offset[2], 0.0), 1.0)
            out[y, x, 0] = np.uint8(v0 * 255.0 + 0.5)
            out[y, x, 1] = np.uint8(v1 * 255.0 + 0.5)
            out[y, x, 2] = np.uint8(v2 * 255.0 + 0.5)
    return out
