"""One synthetic scene: background (table or bin), a physically dropped pile, cameras, rendered frames.

World frame: z up, metres, the surface the objects rest on (table top or bin floor) at z = 0.
Instance ids are 1..N in the order of the scene's objects and stay the same in every view of a scene.
An object may be rendered from several meshes (its appearance parts: a bottle and its cap, a drill's body,
battery and chuck), all with its one instance id. Table scenes are dense tabletops (objects packed until they
touch, seen from 0.35-0.75 m, like real RealSense table frames), side-by-side arrangements or dropped piles.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from instseg_ros.data import noise as noise_mod
from instseg_ros.data import render
from instseg_ros.data.physics import PhysicsConfig, Support, drop
from instseg_ros.data.shapes import Shape, box_mesh, sample_shape

SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


@dataclass
class SceneConfig:
    """Scene sampling ranges. Lengths in metres, angles in degrees."""
    width: int = 640
    height: int = 480
    min_objects: int = 1
    max_objects: int = 30
    bin_prob: float = 0.45
    cam_distance: tuple[float, float] = (0.35, 1.2)
    cam_elevation: tuple[float, float] = (30.0, 88.0)
    roll_std: float = 8.0
    wrist_roll_prob: float = 0.2
    views_per_scene: int = 4
    decal_max: int = 1
    furniture_max: int = 6
    arranged_prob: float = 0.5  #: table scenes whose objects are put down side by side (mostly upright)
    arranged_max_objects: int = 14
    upright_prob: float = 0.75  #: objects of an arranged scene that stand upright (if their shape can)
    arranged_sizes: tuple[float, float] = (0.05, 0.25)  #: largest dimension (m) of arranged objects
    #: probability that an object whose kind has natural parts (box lid / band, jar lid, bottle cap, mug handle,
    #: combo primitives, tools) is rendered from 2-3 parts of distinct materials, one instance id; about 2/3 of
    #: the drawn objects have such a kind, so 0.55 gives ~35 % multi-part objects
    multipart_prob: float = 0.55
    dense_prob: float = 0.35  #: table scenes that are dense tabletops (as real RealSense table frames)
    dense_objects: tuple[int, int] = (8, 20)  #: object count of a dense tabletop (clipped to max_objects)
    dense_gap: tuple[float, float] = (0.002, 0.03)  #: footprint gap (m) between packed objects (~touching)
    dense_distance: tuple[float, float] = (0.35, 0.75)  #: camera distance (m) to a dense tabletop's centre
    dense_elevation: tuple[float, float] = (30.0, 70.0)  #: camera elevation (deg) over a dense tabletop
    primary: str = "raster"  #: primary visibility: "raster" (fast, exact ray/triangle hits) or "embree"
    #: relative frequency per shape family (None: :data:`~instseg_ros.data.shapes.FAMILY_WEIGHTS`)
    family_weights: dict[str, float] | None = None
    bin_rim_prob: float = 0.0  #: bins with a flat rim (flange) around the top of their walls
    #: bin wall colours: "v1" (blue, grey, any saturated hue, white; the first generator) or "wide" (v1 plus
    #: yellow, red, orange, green and black plastic, and varied gloss)
    bin_palette: str = "v1"
    seq_elevation: tuple[float, float] = (40.0, 80.0)  #: multi-view sequences: camera elevation range (deg)
    seq_distance: tuple[float, float] = (0.4, 0.8)  #: multi-view sequences: camera distance range (m)

    def __post_init__(self) -> None:
        if self.bin_palette not in ("v1", "wide"):
            raise ValueError(f"bin_palette must be 'v1' or 'wide', got {self.bin_palette!r}")
        if not 0.0 <= self.bin_rim_prob <= 1.0:
            raise ValueError(f"bin_rim_prob must be in [0, 1], got {self.bin_rim_prob}")
        if not (0.0 < self.seq_elevation[0] <= self.seq_elevation[1] <= 90.0):
            raise ValueError(f"seq_elevation must satisfy 0 < lo <= hi <= 90 deg, got {self.seq_elevation}")
        if not (0.0 < self.seq_distance[0] <= self.seq_distance[1]):
            raise ValueError(f"seq_distance must satisfy 0 < lo <= hi (m), got {self.seq_distance}")
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)


@dataclass
class SceneState:
    """A settled scene: render meshes (objects first), their shapes and poses, workspace bounds."""
    meshes: list[render.RenderMesh]
    shapes: list[Shape]
    poses: list[np.ndarray]
    kind: str
    region: np.ndarray  # (2, 2) xy [[min], [max]] where the objects are
    bounds: np.ndarray  # (2, 3) workspace box for voxel GT
    info: dict


def rng_for(split: str, seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent generator per (split, seed, scene index, stream); splits never share seeds."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {list(SPLIT_CODES)}, got {split!r}")
    return np.random.default_rng([SPLIT_CODES[split], int(seed), int(index), int(stream)])


# ------------------------------------------------------------------------------------------ materials

def _hsv(h, s, v):
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _lin(c):
    return np.asarray(c, float) ** 2.2


def _tex(rng, *kinds: str) -> int:
    """A random bank index among the given texture kinds (see :data:`render.TEXTURE_KINDS`)."""
    names = render.texture_kinds()
    return int(rng.choice(np.nonzero(np.isin(names, kinds))[0]))


_GREY_KINDS = ("noise", "wood", "stripes", "checker", "speckle", "fabric", "marble")


def object_material(rng: np.random.Generator, n_tex: int, printed: np.ndarray,
                    shape: Shape | None = None) -> render.Material:
    """Random object appearance: plain, patterned (two colours) or printed, aware of the shape when given:
    boxes often get one packaging design per face (cereal / cracker boxes), tall cylinders and bottles a
    wrapped label with metal ends (cans), bodies of revolution wrap their texture around their axis.
    ``n_tex`` / ``printed`` describe the texture bank (kept for callers; kinds come from the bank layout)."""
    base = _hsv(rng.random(), rng.uniform(0.0, 1.0) ** 0.7, rng.uniform(0.15, 1.0))
    spec = float(rng.choice([0.02, 0.1, 0.3, 0.6], p=[0.3, 0.3, 0.25, 0.15]))
    shin = float(rng.uniform(8, 80))
    fam = shape.family if shape is not None else ""
    kind = shape.params.get("kind", "") if shape is not None else ""
    revolve = fam in ("cylinder", "cone") or kind in ("bottle", "cup", "mug")
    mapping = render.MAP_CYLINDER if revolve else render.MAP_TRIPLANAR
    u = rng.random()
    if fam == "box" and u < 0.6:  # packaging: one design spans a face
        face = float(max(shape.params["dims"]))
        return render.Material(np.stack([_lin(base), np.ones(3)]), _tex(rng, "package"),
                               face * float(rng.uniform(0.9, 1.5)), float(rng.uniform(0.05, 0.35)), shin, printed=True)
    if revolve and shape.extent > 0.05 and u < 0.45 and kind not in ("cup", "mug"):
        # can / bottle label: printed band, metal (or plastic) ends
        zs = shape.vertices[:, 2]
        half_h = float(zs.max() - zs.min()) / 2
        radius = float(np.abs(shape.vertices[:, :2]).max())
        metal = _hsv(rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.5), rng.uniform(0.5, 0.9))
        return render.Material(np.stack([_lin(metal), np.ones(3)]), _tex(rng, "label", "package"),
                               2 * np.pi * radius * float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.1, 0.4)), shin,
                               printed=True, mapping=mapping, band=half_h * float(rng.uniform(0.6, 0.95)),
                               band_specular=float(rng.uniform(0.3, 0.9)))
    if kind == "tool" and u < 0.8:  # power tools, sprayers: saturated plain plastic
        col = _hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
        return render.Material(np.stack([_lin(col), _lin(col)]), -1, 0.1, float(rng.uniform(0.1, 0.4)),
                               float(rng.uniform(15, 60)), mapping=mapping)
    if kind in ("cup", "mug", "bowl") and u < 0.6:  # glazed ceramics: plain glossy colour
        return render.Material(np.stack([_lin(base), _lin(base)]), -1, 0.1, float(rng.uniform(0.2, 0.7)),
                               float(rng.uniform(20, 90)), mapping=mapping)
    u = rng.random()
    if u < 0.3:
        tex = _tex(rng, *_GREY_KINDS)
        c2 = base * rng.uniform(0.8, 1.0)
        return render.Material(np.stack([_lin(base), _lin(c2)]), tex, float(rng.uniform(0.05, 0.3)), spec, shin,
                               mapping=mapping)
    if u < 0.6:
        return render.Material(np.stack([_lin(base), np.ones(3)]), _tex(rng, "package", "label", "photo"),
                               float(rng.uniform(0.08, 0.3)), spec, shin, printed=True, mapping=mapping)
    if u < 0.8:  # plain plastic / painted
        return render.Material(np.stack([_lin(base), _lin(base)]), -1, 0.1, spec, shin, mapping=mapping)
    c2 = _hsv(rng.random(), rng.uniform(0, 1), rng.uniform(0.2, 1.0))
    return render.Material(np.stack([_lin(base), _lin(c2)]), _tex(rng, *_GREY_KINDS),
                           float(rng.uniform(0.02, 0.15)), spec, shin, mapping=mapping)


_PART_STYLE = {  # role -> (P(near black), P(metal), P(white)); the rest: a random colour
    "battery": (0.6, 0.0, 0.05), "grip": (0.55, 0.0, 0.05), "chuck": (0.45, 0.45, 0.0), "head": (0.3, 0.6, 0.0),
    "nozzle": (0.35, 0.0, 0.25), "handle": (0.2, 0.0, 0.25), "inside": (0.1, 0.0, 0.5), "cap": (0.2, 0.1, 0.25),
    "lid": (0.15, 0.1, 0.2), "band": (0.15, 0.05, 0.2), "part": (0.15, 0.1, 0.15),
}


def part_material(rng: np.random.Generator, role: str, body: render.Material) -> render.Material:
    """Material of a secondary appearance part (cap, lid, band, handle, battery, chuck ...): plain plastic,
    rubber, metal or ceramic whose colour differs clearly from the body's (linear RGB distance >= 0.08 from
    ``body.colors[0]`` unless 8 draws fail); bands are sometimes printed (a sleeve)."""
    p_black, p_metal, p_white = _PART_STYLE.get(role, _PART_STYLE["part"])
    ref = np.asarray(body.colors[0], float)
    if role == "band" and rng.random() < 0.35:
        return render.Material(np.stack([_lin(_hsv(rng.random(), 0.5, 0.8)), np.ones(3)]),
                               _tex(rng, "package", "label"), float(rng.uniform(0.08, 0.25)),
                               float(rng.uniform(0.05, 0.3)), 30.0, printed=True)
    for _ in range(8):
        u = rng.random()
        spec, shin = float(rng.uniform(0.05, 0.35)), float(rng.uniform(10, 60))
        if u < p_black:
            col = _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.05, 0.22))
        elif u < p_black + p_metal:
            col = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0, 0.12), rng.uniform(0.45, 0.85))
            spec, shin = float(rng.uniform(0.4, 0.9)), float(rng.uniform(30, 90))
        elif u < p_black + p_metal + p_white:
            col = _hsv(rng.random(), rng.uniform(0, 0.08), rng.uniform(0.85, 0.97))
        else:
            col = _hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0))
        lin = _lin(col)
        if np.linalg.norm(lin - ref) >= 0.08:
            break
    return render.Material(np.stack([lin, lin]), -1, 0.1, spec, shin)


def object_materials(rng: np.random.Generator, n_tex: int, printed: np.ndarray, shape: Shape,
                     multipart: bool = True) -> list[render.Material]:
    """One material per appearance part of ``shape`` (:attr:`Shape.n_parts`): the body from
    :func:`object_material`, the other parts from :func:`part_material`. ``multipart`` False gives one material."""
    body = object_material(rng, n_tex, printed, shape)
    if not multipart or shape.n_parts == 1:
        return [body]
    return [body] + [part_material(rng, shape.part_roles[k] if k < len(shape.part_roles) else "part", body)
                     for k in range(1, shape.n_parts)]


def _surface_material(rng, kind: str, printed: np.ndarray) -> render.Material:
    """Background appearance of kind "table", "bin", "floor", "decal", "poster", or "wall" (walls, furniture)."""
    if kind == "table":
        style = rng.choice(["wood", "planks", "laminate", "dark", "white", "marble"],
                           p=[0.35, 0.15, 0.2, 0.12, 0.1, 0.08])
        if style in ("wood", "planks"):
            c1 = _hsv(rng.uniform(0.04, 0.11), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.85))
            c2 = c1 * rng.uniform(0.55, 0.85)
            return render.Material(np.stack([_lin(c1), _lin(c2)]), _tex(rng, style),
                                   float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.05, 0.4)), 30.0)
        c1 = {"laminate": _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.9)),
              "dark": _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.1, 0.3)),
              "white": _hsv(rng.random(), rng.uniform(0, 0.08), rng.uniform(0.8, 0.95)),
              "marble": _hsv(rng.random(), rng.uniform(0, 0.1), rng.uniform(0.6, 0.9))}[style]
        tex = _tex(rng, "marble" if style == "marble" else rng.choice(["noise", "speckle"]))
        return render.Material(np.stack([_lin(c1), _lin(c1 * rng.uniform(0.8, 0.95))]), tex,
                               float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.05, 0.5)), 40.0)
    if kind == "bin":
        c1 = rng.choice(4)
        col = [_hsv(rng.uniform(0.55, 0.65), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.8)),
               _hsv(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.1, 0.8)),
               _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9)),
               _hsv(rng.random(), rng.uniform(0, 0.1), rng.uniform(0.75, 0.95))][c1]
        return render.Material(np.stack([_lin(col), _lin(col * 0.9)]), _tex(rng, "noise"),
                               float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.1, 0.5)), 25.0)
    if kind == "bin_wide":
        style = rng.choice(["v1", "yellow", "red", "orange", "green", "black"], p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.1])
        if style == "v1":
            return _surface_material(rng, "bin", printed)
        hue = {"yellow": (0.11, 0.17), "red": (-0.03, 0.02), "orange": (0.05, 0.1), "green": (0.25, 0.42),
               "black": (0.0, 1.0)}[style]
        col = (_hsv(rng.uniform(*hue) % 1.0, rng.uniform(0.0, 0.2), rng.uniform(0.03, 0.15)) if style == "black"
               else _hsv(rng.uniform(*hue) % 1.0, rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0)))
        return render.Material(np.stack([_lin(col), _lin(col * 0.9)]), _tex(rng, "noise"),
                               float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.05, 0.7)), float(rng.uniform(10, 60)))
    if kind == "floor":  # carpet, concrete, wooden floor, tiles
        style = rng.choice(["carpet", "concrete", "planks", "tiles", "fabric"], p=[0.35, 0.25, 0.2, 0.1, 0.1])
        tex = _tex(rng, {"carpet": "carpet", "concrete": "noise", "planks": "planks", "tiles": "checker",
                         "fabric": rng.choice(["fabric", "speckle"])}[style])
        if style == "planks":
            c1 = _hsv(rng.uniform(0.04, 0.11), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8))
        elif style == "concrete":
            c1 = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0, 0.15), rng.uniform(0.35, 0.7))
        else:
            c1 = _hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.15, 0.6))
        c2 = (c1 * rng.uniform(0.4, 0.85) if rng.random() < 0.6
              else _hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.5)))
        scale = {"carpet": (0.15, 0.5), "concrete": (0.5, 2.0), "planks": (0.6, 1.5), "tiles": (0.6, 1.5),
                 "fabric": (0.3, 1.0)}[style]
        return render.Material(np.stack([_lin(c1), _lin(c2)]), tex, float(rng.uniform(*scale)),
                               0.03 if style != "planks" else 0.2, 10.0)
    if kind == "decal":  # paper sheets, mats: low-contrast flat patches
        c1 = _hsv(rng.random(), rng.uniform(0, 0.25), rng.uniform(0.5, 0.95))
        return render.Material(np.stack([_lin(c1), _lin(c1 * rng.uniform(0.85, 0.97))]),
                               _tex(rng, *_GREY_KINDS), float(rng.uniform(0.1, 0.5)), 0.05, 10.0)
    if kind == "poster":  # posters, doors, windows on walls
        return render.Material(np.stack([np.zeros(3), np.ones(3)]), _tex(rng, "photo", "package"),
                               float(rng.uniform(0.5, 2.0)), 0.05, 10.0, printed=True)
    # wall / furniture: mostly paint (low-contrast noise), sometimes wood or patterns
    c1 = _hsv(rng.random(), rng.uniform(0, 0.5) ** 1.5, rng.uniform(0.2, 0.95))
    tex = _tex(rng, "noise") if rng.random() < 0.6 else _tex(rng, *_GREY_KINDS, "planks")
    return render.Material(np.stack([_lin(c1), _lin(c1 * rng.uniform(0.75, 0.95))]), tex,
                           float(rng.uniform(0.2, 2.0)), 0.05, 10.0)


def _box_rm(center, half, material, inst=0) -> render.RenderMesh:
    v, f, n = box_mesh(np.asarray(half, float))
    return render.RenderMesh(v + center, f, n, inst, material, np.eye(3), np.asarray(center, float))


# ------------------------------------------------------------------------------------------ scene

def build_scene(rng: np.random.Generator, split: str, cfg: SceneConfig, n_objects: int | None = None,
                kind: str | None = None) -> SceneState:
    """Sample background + objects, drop them with pybullet, return the settled scene."""
    _, printed = render.texture_bank()
    kind = kind or ("bin" if rng.random() < cfg.bin_prob else "table")
    # table scenes: dense tabletop (packed, close camera), arranged (side by side) or a dropped pile
    dense = kind == "table" and rng.random() < cfg.dense_prob
    arranged = dense or (kind == "table" and rng.random() < cfg.arranged_prob)
    if n_objects is None and dense:
        lo = int(np.clip(cfg.dense_objects[0], cfg.min_objects, cfg.max_objects))
        n_objects = int(rng.integers(lo, int(np.clip(cfg.dense_objects[1], lo, cfg.max_objects)) + 1))
    if n_objects is None and arranged:
        n_objects = int(rng.integers(max(cfg.min_objects, 2), min(cfg.arranged_max_objects, cfg.max_objects) + 1))
    if n_objects is None:  # mostly cluttered (uniform count), sometimes sparse (log-uniform)
        if rng.random() < 0.7:
            n_objects = int(rng.integers(max(cfg.min_objects, 3), cfg.max_objects + 1))
        else:
            n_objects = int(np.exp(rng.uniform(np.log(cfg.min_objects), np.log(cfg.max_objects + 1))))
    n = int(np.clip(n_objects, cfg.min_objects, cfg.max_objects))
    if dense:  # pack first: the table is then sized and placed around the cluster (visible at the borders)
        shapes = [sample_shape(rng, split, size_range=cfg.arranged_sizes, multipart=cfg.multipart_prob,
                               weights=cfg.family_weights) for _ in range(n)]
        spawn, dense_region, centre, radius = _pack(rng, shapes, 0.0, cfg)
    tx, ty = rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.55)  # table half sizes
    table_h = rng.uniform(0.4, 0.8)
    bg: list[render.RenderMesh] = []
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    if kind == "bin":
        bx, by = rng.uniform(0.14, 0.32), rng.uniform(0.1, 0.23)
        wall_h, th = rng.uniform(0.06, 0.25), rng.uniform(0.005, 0.015)
        mat = _surface_material(rng, "bin_wide" if cfg.bin_palette == "wide" else "bin", printed)
        parts = [(np.array([0, 0, -th / 2]), np.array([bx + th, by + th, th / 2]))]
        for sx in (-1, 1):
            parts.append((np.array([sx * (bx + th / 2), 0, wall_h / 2]), np.array([th / 2, by + th, wall_h / 2])))
        for sy in (-1, 1):
            parts.append((np.array([0, sy * (by + th / 2), wall_h / 2]), np.array([bx + th, th / 2, wall_h / 2])))
        if cfg.bin_rim_prob > 0 and rng.random() < cfg.bin_rim_prob:
            # a flat flange around the top, outwards (totes, storage boxes): a bright band at a depth edge
            rw = rng.uniform(0.008, 0.03)
            for sx in (-1, 1):
                parts.append((np.array([sx * (bx + th + rw / 2), 0, wall_h - th / 2]),
                              np.array([rw / 2, by + th + rw, th / 2])))
            for sy in (-1, 1):
                parts.append((np.array([0, sy * (by + th + rw / 2), wall_h - th / 2]),
                              np.array([bx + th, rw / 2, th / 2])))
        for c, h in parts:
            bg.append(_box_rm(c, h, mat))
            boxes.append((c, h))
        table_top = -th
        region = np.array([[-bx, -by], [bx, by]]) * 0.8
        table_c = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)])
    else:
        table_top = 0.0
        r = rng.uniform(0.12, 0.35) if not arranged else (rng.uniform(0.3, 0.4) if dense else rng.uniform(0.2, 0.45))
        region = np.array([[-r, -r * rng.uniform(0.6, 1.0)], [r, r * rng.uniform(0.6, 1.0)]])
        table_c = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)])
        tx, ty = max(tx, r + 0.1), max(ty, r + 0.1)
        if dense:
            region = dense_region
            table_c = centre + rng.uniform(-0.05, 0.05, 2)
            reach = np.abs(region - table_c).max(0)
            tx, ty = max(tx, reach[0] + 0.08), max(ty, reach[1] + 0.08)
    tthick = 0.03
    tcen = np.array([table_c[0], table_c[1], table_top - tthick / 2])
    bg.append(_box_rm(tcen, [tx, ty, tthick / 2], _surface_material(rng, "table", printed)))
    boxes.append((tcen, np.array([tx, ty, tthick / 2])))
    floor_z = table_top - table_h
    bg.append(_box_rm([0, 0, floor_z - 0.01], [4.0, 4.0, 0.01], _surface_material(rng, "floor", printed)))
    # table legs
    legm = _surface_material(rng, "wall", printed)
    lw = rng.uniform(0.02, 0.04)
    for sx in (-1, 1):
        for sy in (-1, 1):
            c = [table_c[0] + sx * (tx - 0.06), table_c[1] + sy * (ty - 0.06), floor_z + (table_h - tthick) / 2]
            bg.append(_box_rm(c, [lw, lw, (table_h - tthick) / 2], legm))
    # a room: four walls at random distances (so oblique views see walls, not the void), posters / doors on
    # them, furniture-like boxes and cylinders standing on the floor; all background
    room = rng.uniform([1.4, 1.4], [3.8, 3.8])
    wall_h = rng.uniform(2.2, 3.0)
    wall_mat = _surface_material(rng, "wall", printed)
    for axis in (0, 1):
        for sgn in (-1, 1):
            half = np.array([0.02, room[1 - axis], wall_h / 2]) if axis == 0 else np.array([room[0], 0.02, wall_h / 2])
            c = np.array([0.0, 0.0, floor_z + wall_h / 2])
            c[axis] = sgn * room[axis]
            mat = wall_mat if rng.random() < 0.7 else _surface_material(rng, "wall", printed)
            bg.append(_box_rm(c, half, mat))
            for _ in range(int(rng.integers(0, 3))):  # posters, doors, windows, shelves flush with the wall
                ph = rng.uniform([0.2, 0.2], [0.9, 1.6])
                pc = c.copy()
                pc[axis] -= sgn * 0.025
                pc[1 - axis] = rng.uniform(-room[1 - axis] + ph[0], room[1 - axis] - ph[0])
                pc[2] = floor_z + rng.uniform(ph[1] / 2, wall_h - ph[1] / 2)  # whole poster between floor and ceiling
                phalf = np.array([0.005, ph[0], ph[1] / 2]) if axis == 0 else np.array([ph[0], 0.005, ph[1] / 2])
                bg.append(_box_rm(pc, phalf, _surface_material(rng, "poster" if rng.random() < 0.6 else "wall",
                                                               printed)))
    for _ in range(int(rng.integers(0, cfg.furniture_max + 1))):
        ang = rng.uniform(0, 2 * np.pi)
        near = max(tx, ty) + 0.4
        dist = rng.uniform(near, max(near, min(room.min(), 2.5)))
        c = np.array([dist * np.cos(ang), dist * np.sin(ang), 0.0])
        if rng.random() < 0.7:
            half = rng.uniform([0.15, 0.15, 0.1], [0.6, 0.6, 0.8])
            c[2] = floor_z + half[2]
            bg.append(_box_rm(c, half, _surface_material(rng, "wall", printed)))
        else:  # bins, stools, pipes
            from instseg_ros.data.shapes import lathe_mesh

            rr, hh = rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.9)
            v, f, nn = lathe_mesh(np.array([rr, rr]), np.array([0.0, hh]), 24, False, True)
            c[2] = floor_z
            bg.append(render.RenderMesh(v + c, f, nn, 0, _surface_material(rng, "wall", printed), np.eye(3), c))
    # flat decals on the support surface (paper, mats): background texture edges
    for _ in range(int(rng.integers(0, cfg.decal_max + 1)) if rng.random() < 0.4 else 0):
        half = np.array([rng.uniform(0.04, 0.15), rng.uniform(0.04, 0.2), 0.0005])
        lim = region[1] + 0.05 if kind == "bin" else np.array([tx, ty]) - half[:2]
        c = np.array([rng.uniform(-lim[0], lim[0]) + (0 if kind == "bin" else table_c[0]),
                      rng.uniform(-lim[1], lim[1]) + (0 if kind == "bin" else table_c[1]), 0.0005])
        a = rng.uniform(0, np.pi)
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        v, f, nn = box_mesh(half)
        bg.append(render.RenderMesh(v @ R.T + c, f, nn @ R.T, 0, _surface_material(rng, "decal", printed), R, c))
    # objects
    # household objects put down on a table are bigger than the clutter of a bin (cereal boxes, bottles)
    dense_info = {}
    if dense:
        dense_info = {"dense_centre": centre.tolist(), "dense_radius": radius}
    else:
        shapes = [sample_shape(rng, split, size_range=cfg.arranged_sizes if arranged else None,
                               multipart=cfg.multipart_prob, weights=cfg.family_weights) for _ in range(n)]
        # scale the drop region with the pile size so big piles spread and small ones touch
        spawn = _arrange(rng, shapes, region, table_top, cfg) if arranged else None
    poses, info = drop(shapes, Support(boxes), region, rng, cfg.physics, spawn=spawn)
    bank_n = len(printed)
    keep_s, keep_p = [], []
    lim = region * 1.0 + np.array([[-0.02, -0.02], [0.02, 0.02]])
    for s, T in zip(shapes, poses):
        if T[2, 3] < table_top - 0.03:  # fell off the table
            continue
        if kind == "bin" and not (np.abs(T[:2, 3]) < np.abs(region[1]) / 0.8 + 0.01).all():
            continue
        keep_s.append(s)
        keep_p.append(T)
    meshes = [m for i, (s, T) in enumerate(zip(keep_s, keep_p))
              for m in render.object_meshes(s, T, i + 1, object_materials(rng, bank_n, printed, s))]
    meshes += bg
    if kind == "bin":
        xy = np.abs(region[1]) / 0.8
    else:
        xy = np.abs(region).max(0) + 0.05
    bounds = np.array([[-xy[0] - 0.05, -xy[1] - 0.05, table_top - 0.02], [xy[0] + 0.05, xy[1] + 0.05, 0.5]])
    info.update({"kind": kind, "n_dropped": n, "n_objects": len(keep_s), "arranged": bool(arranged),
                 "dense": bool(dense), **dense_info})
    return SceneState(meshes, keep_s, keep_p, kind, region, bounds, info)


def upright_rotation(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation that stands ``shape`` on its base (body ``up_axis`` -> world z), random yaw; a random
    rotation when the shape has no upright pose. Cups and bowls are sometimes put down upside down."""
    from instseg_ros.data.shapes import _axis_rot, _rand_rot

    if shape.up_axis < 0:
        return _rand_rot(rng)
    base = {0: _axis_rot(1, -np.pi / 2), 1: _axis_rot(0, np.pi / 2), 2: np.eye(3)}[shape.up_axis]
    if shape.params.get("kind") in ("cup", "mug") and rng.random() < 0.1:
        base = _axis_rot(0, np.pi) @ base
    return _axis_rot(2, rng.uniform(0, 2 * np.pi)) @ base


def _arrange(rng, shapes: list[Shape], region: np.ndarray, top: float, cfg: SceneConfig) -> list:
    """Start poses (4, 4) for objects put down side by side in ``region`` (2, 2), just above z = ``top``:
    upright with probability ``cfg.upright_prob``; footprints may touch but rarely overlap. Shapes that find
    no free spot get None (they are dropped onto the others, as in a pile)."""
    placed: list[tuple[np.ndarray, float]] = []
    out = []
    for s in shapes:
        R = upright_rotation(s, rng) if rng.random() < cfg.upright_prob else _rand_rot_np(rng)
        v = s.vertices @ R.T
        rad = float(np.linalg.norm(v[:, :2] - v[:, :2].mean(0), axis=1).max())
        T = None
        for _ in range(40):
            xy = rng.uniform(region[0] + rad * 0.5, region[1] - rad * 0.5)
            if all(np.linalg.norm(xy - q) > (rad + rq) * 0.85 for q, rq in placed):
                T = np.eye(4)
                T[:3, :3] = R
                T[:3, 3] = [xy[0], xy[1], top - v[:, 2].min() + 0.004]
                placed.append((xy, rad))
                break
        out.append(T)
    return out


def _hull2d(p: np.ndarray) -> np.ndarray:
    """Convex hull (k, 2) of points p (n, 2), counter-clockwise; a tiny triangle for degenerate input."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return p[ConvexHull(p).vertices]
    except QhullError:  # all points on a line (a thin part seen edge-on): thicken it
        c = p.mean(0)
        return c + np.array([[-1e-3, -1e-3], [1e-3, -1e-3], [0.0, 1e-3]])


def _edge_normals(poly: np.ndarray) -> np.ndarray:
    e = np.roll(poly, -1, axis=0) - poly
    n = np.stack([e[:, 1], -e[:, 0]], 1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def footprints_overlap(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray, gap: float) -> bool:
    """Whether convex polygons a (k, 2) and b (m, 2) (edge normals na, nb) come closer than ``gap`` metres
    along every edge normal of either (separating-axis test; gap 0 = they overlap)."""
    ax = np.concatenate([na, nb])
    pa, pb = a @ ax.T, b @ ax.T
    sep = (pa.min(0) >= pb.max(0) + gap) | (pb.min(0) >= pa.max(0) + gap)
    return not bool(sep.any())


def _pack(rng, shapes: list[Shape], top: float, cfg: SceneConfig):
    """Start poses of a dense tabletop: objects (upright with ``cfg.upright_prob``) pushed one by one from
    outside towards the cluster centre along a few random directions until their footprints (convex hulls of
    the posed vertices' xy) come within a gap drawn from ``cfg.dense_gap`` of another's; the most central stop is
    kept (of 4), so the cluster grows compact with touching or nearly touching objects.

    Returns (poses: list of (4, 4) T_world_body just above z = ``top``, region (2, 2) xy bounding box of the
    footprints, centre (2,) its centre, radius: largest distance (m) of a footprint vertex from the centre)."""
    from instseg_ros.data import _kernels

    placed: list[tuple[np.ndarray, float, np.ndarray, np.ndarray]] = []  # centre xy, radius, polygon, normals
    out = []
    for s in shapes:
        R = upright_rotation(s, rng) if rng.random() < cfg.upright_prob else _rand_rot_np(rng)
        v = s.vertices @ R.T
        foot = _hull2d(v[:, :2])
        nrm = _edge_normals(foot)
        rad = float(np.linalg.norm(foot, axis=1).max())
        gap = float(cfg.dense_gap[0] + (cfg.dense_gap[1] - cfg.dense_gap[0]) * rng.random() ** 2)  # mostly small
        xy = np.zeros(2)
        if placed:
            cs = np.array([q for q, _, _, _ in placed])
            rs = np.array([r for _, r, _, _ in placed])
            polys = np.concatenate([pl for _, _, pl, _ in placed])
            norms = np.concatenate([nl for _, _, _, nl in placed])
            starts = np.cumsum([0] + [len(pl) for _, _, pl, _ in placed]).astype(np.int64)

            def hits(p):  # called only within this iteration, so the loop variables it reads are current
                return _kernels.footprint_hits(foot, nrm, float(p[0]), float(p[1]), polys, norms,  # noqa: B023
                                               starts, cs, rs, rad, gap)  # noqa: B023

            best = None
            for _ in range(4):
                a = rng.uniform(0, 2 * np.pi)
                d = np.array([np.cos(a), np.sin(a)])
                # start where the bounding circles first touch (the largest root of |t d - c| = r + rad + gap):
                # footprints cannot touch further out
                b = cs @ d
                disc = b * b - (cs * cs).sum(1) + (rs + rad + gap) ** 2
                far = float((b + np.sqrt(np.maximum(disc, 0.0)))[disc > 0].max(initial=0.0))
                t_free, t = far, far
                while t > 0:
                    t = max(t - 0.01, 0.0)
                    if hits(t * d):
                        break
                    t_free = t
                if t_free > t:  # contact between t and t_free: bisect
                    lo, hi = t, t_free
                    for _ in range(5):
                        mid = (lo + hi) / 2
                        lo, hi = (mid, hi) if hits(mid * d) else (lo, mid)
                    t_free = hi
                if best is None or t_free < np.linalg.norm(best):
                    best = t_free * d
            xy = best
        placed.append((xy, rad, foot + xy, nrm))
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = [xy[0], xy[1], top - v[:, 2].min() + 0.004]
        out.append(T)
    allp = np.concatenate([p for _, _, p, _ in placed])
    region = np.stack([allp.min(0), allp.max(0)])
    centre = region.mean(0)
    radius = float(np.linalg.norm(allp - centre, axis=1).max())
    return out, region, centre, radius


def _rand_rot_np(rng):
    from instseg_ros.data.shapes import _rand_rot

    return _rand_rot(rng)


# ------------------------------------------------------------------------------------------ cameras

def sample_intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """RealSense-like K: D435 colour (~615 px at 640 wide), SR300 colour/depth (~475) or D435 depth (~385)."""
    s = width / 640.0
    u = rng.random()
    f = rng.uniform(600, 630) if u < 0.7 else (rng.uniform(460, 490) if u < 0.85 else rng.uniform(380, 395))
    fx = f * s
    fy = fx * rng.uniform(0.997, 1.003)
    cx = width / 2 + rng.uniform(-8, 8) * s
    cy = height / 2 + rng.uniform(-8, 8) * s
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """T_world_camera (4, 4) of an optical-frame camera at ``eye`` looking at ``target`` (world z up)."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0])
    if abs(z @ up) > 0.999:
        up = np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], 1)
    r = np.deg2rad(roll_deg)
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = R @ Rz
    T[:3, 3] = eye
    return T


DENSE_CLEARANCE = 0.33  #: metres between a dense tabletop camera and any object's bounding sphere


def sample_camera(rng: np.random.Generator, st: SceneState, cfg: SceneConfig) -> np.ndarray:
    """A pose looking into the bin / at the pile from 0.35-1.2 m, elevation 30-88 deg, mild roll."""
    if st.poses:
        c = np.mean([T[:3, 3] for T in st.poses], axis=0)
    else:
        c = np.zeros(3)
    target = c + np.array([*rng.normal(0, 0.05, 2), 0.0])
    target[2] = max(target[2] * 0.5, 0.0)
    if st.info.get("dense"):
        # a close view of a crowded table: the cluster fills 70-110 % of the image width (nominal D435 colour
        # half field of view tan = 320 / 615), distance and elevation within the dense ranges
        c = np.array([*st.info["dense_centre"], 0.0])
        target = c + np.array([*rng.normal(0, 0.03, 2), rng.uniform(0.0, 0.06)])
        el = np.deg2rad(rng.uniform(*cfg.dense_elevation))
        d = float(np.clip(st.info["dense_radius"] / (rng.uniform(0.7, 1.1) * 0.52), *cfg.dense_distance))
        az = rng.uniform(0, 2 * np.pi)
        ray = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        # keep every object's bounding sphere >= DENSE_CLEARANCE from the camera (tall objects next to the
        # camera would otherwise fill the view, closer than a D435 measures)
        pos = np.array([T[:3, 3] for T in st.poses]).reshape(-1, 3)
        rad = np.array([sh.extent / 2 for sh in st.shapes])
        for _ in range(4):
            gap = float((np.linalg.norm(target + d * ray - pos, axis=1) - rad).min()) if len(pos) else np.inf
            if gap >= DENSE_CLEARANCE:
                break
            d += DENSE_CLEARANCE - gap
        roll = rng.normal(0, cfg.roll_std) if rng.random() > cfg.wrist_roll_prob else rng.uniform(-90, 90)
        return look_at(target + d * ray, target, roll)
    if st.kind == "table" and rng.random() < 0.7:
        # a person's or robot head's view over a table: oblique, 25-60 deg, room in the background
        el = np.deg2rad(rng.uniform(max(cfg.cam_elevation[0] - 5, 10.0), 60.0))
    else:
        el_lo = cfg.cam_elevation[0] if st.kind == "table" else 55.0  # low views into a bin see only its wall
        el = np.deg2rad(rng.uniform(el_lo, cfg.cam_elevation[1]))
    az = rng.uniform(0, 2 * np.pi)
    if st.info.get("arranged"):  # frame the arrangement: 0.5-1.1 m, as a person or robot head sees a table
        d = rng.uniform(max(cfg.cam_distance[0], 0.5), min(cfg.cam_distance[1], 1.1))
    else:
        d = rng.uniform(cfg.cam_distance[0],
                        cfg.cam_distance[1] if st.kind == "table" else min(cfg.cam_distance[1], 1.0))
    eye = target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    roll = rng.normal(0, cfg.roll_std) if rng.random() > cfg.wrist_roll_prob else rng.uniform(-90, 90)
    return look_at(eye, target, roll)


def sample_lighting(rng: np.random.Generator) -> render.Lighting:
    """Indoor ceiling light (70 %: high key, strong ambient, soft weak shadows) or a lamp / window (30 %:
    lower key, harder shadows); colour temperature shared by all terms."""
    indoor = rng.random() < 0.7
    el = np.deg2rad(rng.uniform(55, 90) if indoor else rng.uniform(20, 70))
    az = rng.uniform(0, 2 * np.pi)
    key = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    fill = rng.normal(size=3)
    fill[2] = abs(fill[2]) + 0.3
    fill /= np.linalg.norm(fill)
    temp = rng.uniform(-0.15, 0.15)
    tint = np.array([1 + temp, 1.0, 1 - temp])
    if indoor:
        ki, amb, fi = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.3)
        strength, blur = float(rng.uniform(0.2, 0.6)), float(rng.uniform(1.0, 5.0))
    else:
        ki, amb, fi = rng.uniform(0.6, 1.4), rng.uniform(0.12, 0.4), rng.uniform(0.05, 0.4)
        strength, blur = float(rng.uniform(0.4, 0.85)), float(rng.uniform(0.0, 2.0))
    return render.Lighting(key, ki * tint, fill, fi * tint, amb * tint, shadows=bool(rng.random() < 0.9),
                           shadow_strength=strength, shadow_blur=blur)


# ------------------------------------------------------------------------------------------ render a view

def render_view(scene: render.Scene, st: SceneState, K: np.ndarray, T_wc: np.ndarray, rng: np.random.Generator,
                cfg: SceneConfig, light: render.Lighting | None = None) -> dict:
    """Render one frame: rgb uint8, depth (noisy) / depth_gt float32 m, labels int32, instances list."""
    W, H = cfg.width, cfg.height
    buf = render.cast(scene, K, T_wc, W, H, cfg.primary)
    depth_gt = buf["depth"]
    depth_gt = np.where(depth_gt * 10000.0 > 65535, 0.0, depth_gt).astype(np.float32)
    labels = buf["instance"].astype(np.int32)
    labels[depth_gt == 0] = 0
    light = light or sample_lighting(rng)
    lin = render.shade(scene, buf, light, T_wc[:3, 3], rng, render.texture_bank())
    rgb = render.camera_effects(lin, rng)
    depth = noise_mod.apply_depth_noise(depth_gt, K, rng, noise_mod.sample_noise_config(rng), labels, buf["cos"])
    instances = frame_instances(scene, st, labels, K, T_wc, W, H)
    return {"rgb": rgb, "depth": depth, "depth_gt": depth_gt, "labels": labels, "K": K, "T_world_camera": T_wc,
            "instances": instances}


def frame_instances(scene: render.Scene, st: SceneState, labels: np.ndarray, K, T_wc, W, H) -> list[dict]:
    """Per instance in view: visible/amodal pixels, occlusion = visible / amodal, visible bbox [x, y, w, h]."""
    from instseg_ros.data import _kernels
    from instseg_ros.data.io import FAMILIES

    amodal = render.amodal_counts(scene, K, T_wc, W, H, labels)
    vis = np.bincount(labels.reshape(-1), minlength=len(st.shapes) + 1)
    boxes = _kernels.label_bboxes(labels, len(st.shapes) + 1)
    out = []
    for i, s in enumerate(st.shapes):
        iid = i + 1
        a = amodal.get(iid, 0)
        v = int(vis[iid]) if iid < len(vis) else 0
        if a == 0 and v == 0:
            continue
        a = max(a, v)
        bbox = [int(x) for x in boxes[iid]]
        out.append({"id": iid, "family": s.family, "family_id": FAMILIES.index(s.family) + 1, "visible_px": v,
                    "amodal_px": int(a), "occlusion": float(v / a), "bbox": bbox})
    return out


def generate_scene_frames(split: str, seed: int, index: int, cfg: SceneConfig) -> list[dict]:
    """``cfg.views_per_scene`` single frames of scene ``index``: one pile, new camera/lighting/noise per view.

    Object colours are re-drawn per view too (the label geometry is what the views share).
    """
    rng = rng_for(split, seed, index)
    st = build_scene(rng, split, cfg)
    scene = render.Scene(st.meshes)
    frames = []
    _, printed = render.texture_bank()
    for v in range(cfg.views_per_scene):
        vr = rng_for(split, seed, index, 1 + v)
        if v > 0:
            mats = {}
            for m in st.meshes:
                if m.instance > 0:
                    if m.instance not in mats:
                        mats[m.instance] = object_materials(vr, len(printed), printed, st.shapes[m.instance - 1])
                    m.material = mats[m.instance][min(m.part, len(mats[m.instance]) - 1)]
        K = sample_intrinsics(vr, cfg.width, cfg.height)
        T = sample_camera(vr, st, cfg)
        fr = render_view(scene, st, K, T, vr, cfg)
        fr["extra"] = {"scene": int(index), "view": v, "kind": st.kind, "dense": bool(st.info.get("dense")),
                       "split": split, "seed": int(seed)}
        frames.append(fr)
    return frames


# ------------------------------------------------------------------------------------------ sequences

def sequence_poses(rng: np.random.Generator, st: SceneState, n_views: int,
                   elevation: tuple[float, float] = (40.0, 80.0),
                   distance: tuple[float, float] = (0.4, 0.8)) -> list[np.ndarray]:
    """A smooth wrist-camera-like arc over the pile: sweeping azimuth, elevation (deg) and distance (m) moving
    between two draws from their ranges."""
    c = np.mean([T[:3, 3] for T in st.poses], axis=0) if st.poses else np.zeros(3)
    c[2] = max(c[2] * 0.5, 0.0)
    a0 = rng.uniform(0, 2 * np.pi)
    sweep = np.deg2rad(rng.uniform(60, 200)) * rng.choice([-1, 1])
    el0, el1 = np.deg2rad(rng.uniform(elevation[0], elevation[1], 2))
    d0, d1 = rng.uniform(distance[0], distance[1], 2)
    roll0 = rng.normal(0, 10)
    poses = []
    for k in range(n_views):
        s = k / max(n_views - 1, 1)
        az = a0 + sweep * s
        el = el0 + (el1 - el0) * (0.5 - 0.5 * np.cos(np.pi * s))
        d = d0 + (d1 - d0) * s
        tgt = c + np.array([0.03 * np.sin(3 * s), 0.03 * np.cos(2 * s), 0.0])
        eye = tgt + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        poses.append(look_at(eye, tgt, roll0 + 5 * np.sin(2 * np.pi * s)))
    return poses


def voxel_ground_truth(views: list[dict], bounds: np.ndarray, voxel_size: float, family_of: dict[int, int]):
    """Per-voxel labels of the surface seen in the views (what a TSDF fusion of them reconstructs).

    Every view's noise-free depth is back-projected to the world with its label; points inside
    ``bounds`` (2, 3) are binned into voxels of ``voxel_size`` metres and each voxel takes its most
    frequent label. Returns coords float32 (V, 3) voxel centres, instance int32 (V,), semantic int32 (V,)
    (family id of the instance, 0 = background).
    """
    from instseg_ros.core.geometry import backproject

    pts, labs = [], []
    for fr in views:
        P = backproject(fr["depth_gt"], fr["K"]).reshape(-1, 3)
        ok = fr["depth_gt"].reshape(-1) > 0
        T = fr["T_world_camera"]
        Pw = P[ok] @ T[:3, :3].T + T[:3, 3]
        pts.append(Pw)
        labs.append(fr["labels"].reshape(-1)[ok])
    P = np.concatenate(pts)
    L = np.concatenate(labs).astype(np.int64)
    inside = np.all((P >= bounds[0]) & (P <= bounds[1]), axis=1)
    P, L = P[inside], L[inside]
    key = np.floor(P / voxel_size).astype(np.int64)
    lo = key.min(0)
    k = key - lo
    dims = k.max(0) + 1
    lin = (k[:, 0] * dims[1] + k[:, 1]) * dims[2] + k[:, 2]
    nl = int(L.max()) + 1
    pair, cnt = np.unique(lin * nl + L, return_counts=True)
    vox, lab = pair // nl, pair % nl
    order = np.lexsort((-cnt, vox))  # per voxel, highest count first
    vox, lab = vox[order], lab[order]
    first = np.ones(len(vox), bool)
    first[1:] = vox[1:] != vox[:-1]
    vox, lab = vox[first], lab[first]
    kz = vox % dims[2]
    ky = (vox // dims[2]) % dims[1]
    kx = vox // (dims[1] * dims[2])
    coords = ((np.stack([kx, ky, kz], 1) + lo + 0.5) * voxel_size).astype(np.float32)
    sem = np.array([family_of.get(int(i), 0) for i in lab], dtype=np.int32)
    return coords, lab.astype(np.int32), sem


def generate_sequence(split: str, seed: int, index: int, cfg: SceneConfig, n_views: int,
                      voxel_sizes: tuple[float, ...]) -> dict:
    """One static scene seen from ``n_views`` poses + voxel GT per voxel size.

    Returns {"views": [frame dicts], "gt_voxels": {size: (coords, instance, semantic)}, "meta": dict}.
    """
    rng = rng_for(split, seed, 1_000_000 + index)
    st = build_scene(rng, split, cfg, n_objects=int(rng.integers(max(cfg.min_objects, 5), cfg.max_objects + 1)))
    scene = render.Scene(st.meshes)
    K = sample_intrinsics(rng, cfg.width, cfg.height)
    light = sample_lighting(rng)
    views = []
    for k, T in enumerate(sequence_poses(rng, st, n_views, cfg.seq_elevation, cfg.seq_distance)):
        vr = rng_for(split, seed, 1_000_000 + index, 1 + k)
        fr = render_view(scene, st, K, T, vr, cfg, light=light)
        fr["extra"] = {"sequence": int(index), "view": k, "kind": st.kind, "dense": bool(st.info.get("dense")),
                       "split": split, "seed": int(seed)}
        views.append(fr)
    fam = {i + 1: s.family_id for i, s in enumerate(st.shapes)}
    gt = {vs: voxel_ground_truth(views, st.bounds, vs, fam) for vs in voxel_sizes}
    kinds = {str(i + 1): str(s.params.get("kind", s.family)) for i, s in enumerate(st.shapes)}
    meta = {"kind": st.kind, "n_objects": len(st.shapes), "bounds": st.bounds.tolist(),
            "families": {str(k): v for k, v in fam.items()}, "kinds": kinds, "split": split, "seed": int(seed),
            "index": int(index)}
    return {"views": views, "gt_voxels": gt, "meta": meta}


#: named scene profiles for ``instseg generate --profile``: "default" is the generator the shipped models were
#: trained with; "real_shapes" widens it towards what real bins hold (issue #15): thin and hollow objects,
#: rimmed bins in saturated colours, camera arcs like a robot's (30-70 deg, 0.45-0.9 m)
PROFILES = ("default", "real_shapes")


def profile_config(name: str, base: SceneConfig | None = None) -> SceneConfig:
    """The :class:`SceneConfig` of a named profile (see :data:`PROFILES`), on top of ``base``."""
    from dataclasses import replace

    from instseg_ros.data.shapes import REAL_SHAPES_WEIGHTS

    base = SceneConfig() if base is None else base
    if name == "default":
        return base
    if name == "real_shapes":
        return replace(base, family_weights=dict(REAL_SHAPES_WEIGHTS), bin_prob=0.6, bin_rim_prob=0.5,
                       bin_palette="wide", seq_elevation=(30.0, 70.0), seq_distance=(0.45, 0.9))
    raise ValueError(f"unknown scene profile {name!r}; known: {PROFILES}")


def seed_hash(text: str) -> int:
    """Stable 31-bit hash of a string (for deriving seeds from names)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF
