"""Synthetic RGB-D rooms for semantic segmentation, generated in code (no files), for fusion-level DynMM.

Each scene is a box-shaped room (floor, walls, ceiling) with furniture and objects at random places, seen by a
pinhole camera (70 degree horizontal field of view) at a random height, tilted down. Every pixel's ray is cast
against the analytic geometry (all scenes of a chunk at once, in torch), which gives exact per-pixel labels and
a metric depth map; the RGB image is textured (per-surface stripes and grain), lit (ambient + Lambert term from
the surface normal, random light direction, brightness and colour cast) and noisy, so colour alone is an
imperfect cue. Depth gets noise that grows with distance (Kinect-like, sigma = 1.2 mm + 1.9 mm * (z - 0.4 m)^2)
and holes (value 0): any pixel with probability `hole_rate`, pixels on occlusion edges with `edge_hole_rate`.

The class set is built so that each modality is needed somewhere:
- depth only: `poster` (flat on the back wall) vs `wall_cabinet` (a box protruding 0.2-0.45 m from it), and
  `rug` (1.5 cm on the floor) vs `low_table` (0.3-0.5 m high): each pair is drawn from the same slots with
  the same size, placement, colour and texture distributions; only the geometry differs (and, through the
  shading term, the sides of cabinets and tables are lit differently from their tops and fronts).
- colour only: `red_ball` vs `blue_ball`: identical sphere slots, radii and placement; only the hue differs.
IGNORE (255) marks the ceiling, the one class-less surface; sensor holes keep their labels.

A seeded `plain_room_fraction` of the scenes is drawn without any of the depth-only objects (posters, wall
cabinets, rugs, low tables); flag `depth_pairs` says which scenes hold one. Depth still helps in plain rooms
(geometry sharpens every boundary), only less. A seeded `depth_failure_fraction` of the scenes (default 0) gets
a failed depth sensor (as in sunlight or facing glass): 95 % of its pixels are holes and the rest random
values; flag `depth_failed`. There depth is worthless, which a per-image fusion choice should notice.
A seeded `dark_room_fraction` (default 0) is the opposite case: a dim room (light × DARK_GAIN) filmed by a noisy
camera (RGB noise `dark_rgb_noise` instead of `rgb_noise`); flag `dark`. There colour is a poor cue and depth must
carry the scene, while a lit room without depth-only objects needs little depth: scenes differ in what depth is
worth to them.

Inputs (normalize=True): rgb = ([0, 1] RGB - RGB_MEAN) / RGB_STD with fixed constants, so every split and
size is scaled alike; depth = metres / DEPTH_SCALE, holes exactly 0 (valid depth is never below ~0.25).

Everything is a deterministic function of (seed, options). Scene i of a split is drawn from its own generator
`default_rng([seed, split, i])`, so the splits are independent and growing a split keeps its first scenes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dynmm.data.base import DatasetInfo, MultimodalDataset
from dynmm.data.options import build_options, check_option_types
from dynmm.errors import ConfigError
from dynmm.specs import SEGMENTATION_IGNORE, ModalitySpec, TaskSpec

CLASS_NAMES = (
    "floor",
    "wall",
    "cabinet",
    "poster",
    "wall_cabinet",
    "rug",
    "low_table",
    "red_ball",
    "blue_ball",
    "bin",
)
FLOOR, WALL, CABINET, POSTER, WALL_CABINET, RUG, LOW_TABLE, RED_BALL, BLUE_BALL, BIN = range(len(CLASS_NAMES))
DEPTH_ONLY_PAIRS = ((POSTER, WALL_CABINET), (RUG, LOW_TABLE))
"""Class pairs with the same colour/texture/size/placement distributions: only geometry tells them apart."""
COLOUR_ONLY_PAIRS = ((RED_BALL, BLUE_BALL),)
"""Class pairs with the same geometry distributions: only colour tells them apart."""
IGNORE = SEGMENTATION_IGNORE
"""Label of class-less pixels (the ceiling); pass as ignore_index to losses and JaccardIndex."""
TASK = TaskSpec("segmentation", num_classes=len(CLASS_NAMES))

FOV_DEG = 70.0
"""Horizontal field of view; the focal length scales with the width so every resolution sees the same room."""
RGB_MEAN = (0.44, 0.40, 0.36)
RGB_STD = (0.17, 0.17, 0.19)
"""Fixed per-channel statistics of the [0, 1] RGB images (measured on the default train split, seed 0)."""
DEPTH_SCALE = 4.0
"""Normalised depth = metres / DEPTH_SCALE, so valid pixels lie in about (0.25, 2) and holes stay exactly 0."""
DARK_GAIN = (0.1, 0.25)
"""Range of the factor on the light of a dark scene (drawn per scene)."""
EDGE_RELATIVE_STEP = 0.03
"""A pixel is on a depth edge if a 4-neighbour's clean depth differs by more than this fraction of its depth."""

_SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}
_PIXELS_PER_CHUNK = 1_500_000
"""Rays cast at once: bounds peak memory (a few hundred MB) while keeping torch ops large; many small ops are
far slower on a busy 2-core machine (thread hand-offs), so do not shrink it much."""

# Object table: one row per slot and scene; columns below. Kinds decide how rays hit and how normals are made.
_ROOM, _BOX, _SPHERE, _CYLINDER = range(4)
_PRESENT, _KIND, _CLASS = 0, 1, 2
_CENTER, _HALF, _BASE, _STRIPE = slice(3, 6), slice(6, 9), slice(9, 12), slice(12, 15)
_FREQ, _PHASE, _AMP, _GRAIN = 15, 16, 17, 18
_COLUMNS = 19
# Slots: room surfaces first (their rows share the room box), then the objects, grouped by kind.
_FLOOR_SLOT, _WALL_SLOT, _CEILING_SLOT = 0, 1, 2
_CABINET_SLOTS, _WALL_ITEM_SLOTS, _SLAB_SLOTS = (3, 4), (5, 6, 7), (8, 9)
_BALL_SLOTS, _BIN_SLOTS = (10, 11, 12, 13), (14, 15)
_SLOTS = 16


@dataclass(frozen=True)
class _Look:
    """Distribution of a surface's appearance: HSV base colour, stripe amplitude/frequency (1/m), grain."""

    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]
    amp: tuple[float, float] = (0.05, 0.3)
    freq: tuple[float, float] = (2.0, 10.0)
    grain: tuple[float, float] = (0.02, 0.08)


_ART = _Look((0.0, 1.0), (0.2, 0.9), (0.25, 0.9), amp=(0.1, 0.4), freq=(3.0, 15.0))
_SOFT = _Look((0.0, 1.0), (0.2, 0.7), (0.2, 0.7), amp=(0.05, 0.3), freq=(4.0, 12.0))
_LOOKS: dict[int, _Look] = {
    FLOOR: _Look((0.05, 0.12), (0.3, 0.7), (0.3, 0.7), amp=(0.1, 0.3), freq=(2.0, 6.0)),
    WALL: _Look((0.0, 1.0), (0.0, 0.15), (0.65, 0.95), amp=(0.0, 0.08)),
    IGNORE: _Look((0.0, 1.0), (0.0, 0.05), (0.8, 0.95), amp=(0.0, 0.0), grain=(0.0, 0.02)),
    CABINET: _Look((0.0, 1.0), (0.0, 0.5), (0.2, 0.8)),
    POSTER: _ART,
    WALL_CABINET: _ART,
    RUG: _SOFT,
    LOW_TABLE: _SOFT,
    RED_BALL: _Look((-0.04, 0.06), (0.55, 0.9), (0.45, 0.9), amp=(0.0, 0.15)),
    BLUE_BALL: _Look((0.55, 0.65), (0.55, 0.9), (0.45, 0.9), amp=(0.0, 0.15)),
    BIN: _Look((0.0, 1.0), (0.0, 0.4), (0.2, 0.8)),
}


_FRACTIONS = ("hole_rate", "edge_hole_rate", "plain_room_fraction", "depth_failure_fraction", "dark_room_fraction")
"""Options that are shares or probabilities, in [0, 1]."""


@dataclass(frozen=True)
class RGBDSynthOptions:
    """How the scenes are built; every field is an accepted keyword of load_rgbd_synth."""

    train_size: int = 1500
    valid_size: int = 200
    test_size: int = 300
    height: int = 96
    width: int = 128
    depth_noise: float = 1.0
    """Multiplier of the Kinect-like depth noise sigma (0 = clean depth)."""
    hole_rate: float = 0.01
    """Probability that any pixel's depth is missing (set to 0)."""
    edge_hole_rate: float = 0.5
    """Probability that a depth-edge pixel's depth is missing; edge pixels use max(hole_rate, edge_hole_rate)."""
    rgb_noise: float = 0.02
    """Std of Gaussian sensor noise on the [0, 1] RGB."""
    plain_room_fraction: float = 0.5
    """Fraction of scenes drawn without posters, wall cabinets, rugs and low tables (the depth-only classes)."""
    depth_failure_fraction: float = 0.0
    """Fraction of scenes whose depth sensor failed: 95 % holes, the rest random values in the valid range."""
    dark_room_fraction: float = 0.0
    """Fraction of scenes in a dim room (light × DARK_GAIN) with RGB noise `dark_rgb_noise`: depth matters most."""
    dark_rgb_noise: float = 0.1
    """Std of the Gaussian sensor noise on the [0, 1] RGB of dark scenes (a camera at high gain)."""
    normalize: bool = True
    """True: RGB z-scored with RGB_MEAN/RGB_STD, depth in metres / DEPTH_SCALE; False: RGB in [0, 1], metres."""

    def __post_init__(self) -> None:
        check_option_types(self, "rgbd_synth")
        for name in ("train_size", "valid_size", "test_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rgbd_synth option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("height", "width"):
            if not 8 <= getattr(self, name) <= 1024:
                raise ConfigError(f"rgbd_synth option {name} must be in [8, 1024], got {getattr(self, name)}")
        for name in _FRACTIONS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"rgbd_synth option {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("depth_noise", "rgb_noise", "dark_rgb_noise"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"rgbd_synth option {name} must be finite and >= 0, got {getattr(self, name)}")


def rgbd_synth_options(**options: object) -> RGBDSynthOptions:
    """Options with defaults filled in; unknown names are a ConfigError that lists the accepted ones."""
    return build_options(RGBDSynthOptions, "rgbd_synth", options)


def _focal(width: int) -> float:
    """Focal length in pixels for the horizontal FOV_DEG."""
    return (width / 2) / math.tan(math.radians(FOV_DEG) / 2)


def camera_slopes(height: int, width: int) -> tuple[Tensor, Tensor]:
    """(x right, y up) slopes (a, b) of every pixel's ray in the camera frame, each (height, width).

    A pixel at depth z (metres along the optical axis) lies at camera-frame (a z, b z, z). The world has x to
    the right, y up from the floor and z from the camera towards the back wall; with the camera `h` =
    camera_height_mm above the floor and tilted down by `p` = pitch_mrad (see meta), the pixel's world point is
    (a z, h + z (b cos p - sin p), z (b sin p + cos p)); the back wall is at world z = room_depth_mm.
    """
    focal = _focal(width)
    u = (torch.arange(width, dtype=torch.float32) - (width - 1) / 2) / focal
    v = -(torch.arange(height, dtype=torch.float32) - (height - 1) / 2) / focal
    return u.expand(height, width), v[:, None].expand(height, width)


# ---------------------------------------------------------------------------------------------------- scenes


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (hue wraps around 1) as RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + (h % 1.0) * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _unit(rng: np.random.Generator, horizontal: bool = False) -> np.ndarray:
    d = rng.standard_normal(3)
    if horizontal:
        d[1] = 0.0
    return d / max(float(np.linalg.norm(d)), 1e-6)


_Draw = Callable[[], tuple[np.ndarray, np.ndarray]]


class _Scene:
    """Builds one scene's object table from its generator; objects are placed without overlapping."""

    def __init__(self, rng: np.random.Generator, depth_pairs: bool = True) -> None:
        self.rng = rng
        self.table = np.zeros((_SLOTS, _COLUMNS), np.float32)
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []
        self.depth = rng.uniform(4.0, 7.0)
        self.left, self.right = -rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0)
        self.ceiling = rng.uniform(2.5, 3.0)
        self.camera = np.array([rng.uniform(1.1, 1.6), rng.uniform(0.1, 0.35)])  # height (m), pitch (rad)
        light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.5, 1.2), rng.uniform(-1.0, -0.1)])
        gain = rng.uniform(0.7, 1.3) * np.exp(rng.normal(0.0, 0.08, 3))
        self.lighting = np.concatenate([light / np.linalg.norm(light), [rng.uniform(0.3, 0.6)], gain])
        lo, hi = np.array([self.left, 0.0, -1.0]), np.array([self.right, self.ceiling, self.depth])
        for slot, cls in ((_FLOOR_SLOT, FLOOR), (_WALL_SLOT, WALL), (_CEILING_SLOT, IGNORE)):
            self._put(slot, _ROOM, cls, lo, hi, horizontal_stripes=cls == FLOOR)
        for slot in _CABINET_SLOTS:
            self._cabinet(slot)
        if depth_pairs:  # else: a room that colour labels alone (no depth-only objects)
            for slot in _WALL_ITEM_SLOTS:
                self._wall_item(slot)
            for slot in _SLAB_SLOTS:
                self._floor_slab(slot)
        for slot in _BALL_SLOTS:
            self._ball(slot)
        for slot in _BIN_SLOTS:
            self._bin(slot)

    def has_depth_only_object(self) -> bool:
        """Whether a poster, wall cabinet, rug or low table was placed (colour alone cannot label it)."""
        present = self.table[:, _PRESENT] > 0
        classes = self.table[present, _CLASS].astype(int)
        return bool(np.isin(classes, [c for pair in DEPTH_ONLY_PAIRS for c in pair]).any())

    def _put(
        self, slot: int, kind: int, cls: int, lo: np.ndarray, hi: np.ndarray, horizontal_stripes: bool = False
    ) -> None:
        look, rng, row = _LOOKS[cls], self.rng, self.table[slot]
        row[_PRESENT], row[_KIND], row[_CLASS] = 1.0, kind, cls
        row[_CENTER], row[_HALF] = (lo + hi) / 2, (hi - lo) / 2
        row[_BASE] = _hsv_to_rgb(rng.uniform(*look.hue), rng.uniform(*look.sat), rng.uniform(*look.val))
        row[_STRIPE] = _unit(rng, horizontal_stripes)
        row[_FREQ], row[_PHASE] = rng.uniform(*look.freq), rng.uniform(0.0, 2 * math.pi)
        row[_AMP], row[_GRAIN] = rng.uniform(*look.amp), rng.uniform(*look.grain)

    def _place(self, slot: int, kind: int, cls: int, draw: _Draw, p_present: float) -> None:
        """Try a few draws of (lo, hi) from `draw`; keep the first that overlaps no placed object."""
        if self.rng.random() >= p_present:
            return
        for _ in range(8):
            lo, hi = draw()
            if all((lo >= b_hi - 0.02).any() or (hi <= b_lo + 0.02).any() for b_lo, b_hi in self.boxes):
                self.boxes.append((lo, hi))
                self._put(slot, kind, cls, lo, hi)
                return

    def _floor_xz(self, half_x: float, half_z: float, z_min: float) -> tuple[float, float]:
        rng = self.rng
        return rng.uniform(self.left + half_x, self.right - half_x), rng.uniform(z_min + half_z, self.depth - half_z)

    def _cabinet(self, slot: int) -> None:
        def draw() -> tuple[np.ndarray, np.ndarray]:
            rng = self.rng
            size = np.array([rng.uniform(0.5, 1.2), rng.uniform(0.6, 1.8), rng.uniform(0.35, 0.6)])
            if rng.random() < 0.5:  # against the back wall
                x = rng.uniform(self.left + size[0] / 2, self.right - size[0] / 2)
                z = self.depth - size[2] / 2
            else:  # against a side wall, turned to face the room
                size = size[[2, 1, 0]]
                x = self.left + size[0] / 2 if rng.random() < 0.5 else self.right - size[0] / 2
                z = rng.uniform(2.0 + size[2] / 2, self.depth - size[2] / 2)
            centre = np.array([x, size[1] / 2, z])
            return centre - size / 2, centre + size / 2

        self._place(slot, _BOX, CABINET, draw, 0.6)

    def _wall_item(self, slot: int) -> None:
        """A poster (1 cm thick) or a wall cabinet (0.2-0.45 m deep): same front, only the depth differs."""
        cls = POSTER if self.rng.random() < 0.5 else WALL_CABINET

        def draw() -> tuple[np.ndarray, np.ndarray]:
            rng = self.rng
            w, h = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.8)
            x, y = rng.uniform(self.left + w / 2 + 0.05, self.right - w / 2 - 0.05), rng.uniform(1.0, 1.9)
            protrude = 0.01 if cls == POSTER else rng.uniform(0.2, 0.45)
            return np.array([x - w / 2, y - h / 2, self.depth - protrude]), np.array(
                [x + w / 2, y + h / 2, self.depth + 0.01]
            )

        self._place(slot, _BOX, cls, draw, 0.5)

    def _floor_slab(self, slot: int) -> None:
        """A rug (1.5 cm) or a low table (0.3-0.5 m): same footprint distribution, only the height differs."""
        cls = RUG if self.rng.random() < 0.5 else LOW_TABLE

        def draw() -> tuple[np.ndarray, np.ndarray]:
            rng = self.rng
            half_x, half_z = rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.6)
            x, z = self._floor_xz(half_x, half_z, 1.6)
            top = 0.015 if cls == RUG else rng.uniform(0.3, 0.5)
            return np.array([x - half_x, 0.0, z - half_z]), np.array([x + half_x, top, z + half_z])

        self._place(slot, _BOX, cls, draw, 0.6)

    def _ball(self, slot: int) -> None:
        """A red or a blue ball: the colour is drawn independently of radius and place."""
        cls = RED_BALL if self.rng.random() < 0.5 else BLUE_BALL

        def draw() -> tuple[np.ndarray, np.ndarray]:
            r = self.rng.uniform(0.12, 0.3)
            x, z = self._floor_xz(r, r, 1.6)
            return np.array([x - r, 0.0, z - r]), np.array([x + r, 2 * r, z + r])

        self._place(slot, _SPHERE, cls, draw, 0.5)

    def _bin(self, slot: int) -> None:
        def draw() -> tuple[np.ndarray, np.ndarray]:
            r, h = self.rng.uniform(0.12, 0.25), self.rng.uniform(0.3, 0.8)
            x, z = self._floor_xz(r, r, 1.6)
            return np.array([x - r, 0.0, z - r]), np.array([x + r, h, z + r])

        self._place(slot, _CYLINDER, BIN, draw, 0.4)


# --------------------------------------------------------------------------------------------------- render


def _slab(row: Tensor, origin: list[Tensor], inv: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Per axis, the ray parameters where each ray enters and leaves the slabs of the boxes in `row` (B, columns)."""
    near, far = [], []
    for a in range(3):
        c, h = row[:, _CENTER][:, a, None], row[:, _HALF][:, a, None]
        t1, t2 = (c - h - origin[a]) * inv[a], (c + h - origin[a]) * inv[a]
        near.append(torch.minimum(t1, t2))
        far.append(torch.maximum(t1, t2))
    return near, far


def _object_hits(kind: int, row: Tensor, origin: list[Tensor], d: list[Tensor], inv: list[Tensor]) -> Tensor:
    """Ray parameter of the first hit on one object per scene (row: (B, columns)), inf where the ray misses."""
    h = [row[:, _HALF][:, a, None] for a in range(3)]
    oc = [origin[a] - row[:, _CENTER][:, a, None] for a in range(3)]
    if kind == _BOX:
        near, far = _slab(row, origin, inv)
        t = torch.maximum(torch.maximum(near[0], near[1]), near[2])
        hit = (torch.minimum(torch.minimum(far[0], far[1]), far[2]) >= t) & (t > 0)
    elif kind == _SPHERE:
        a2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]
        disc = b * b - a2 * (oc[0] ** 2 + oc[1] ** 2 + oc[2] ** 2 - h[0] ** 2)
        t = (-b - disc.clamp_min(0).sqrt()) / a2
        hit = (disc >= 0) & (t > 0)
    else:  # vertical cylinder: its side, else its top cap (the camera is always above it)
        a2 = d[0] * d[0] + d[2] * d[2]
        b = oc[0] * d[0] + oc[2] * d[2]
        disc = b * b - a2 * (oc[0] ** 2 + oc[2] ** 2 - h[0] ** 2)
        side = (-b - disc.clamp_min(0).sqrt()) / a2
        side_hit = (disc >= 0) & (side > 0) & ((oc[1] + side * d[1]).abs() <= h[1])
        top = (h[1] - oc[1]) * inv[1]
        top_hit = ((oc[0] + top * d[0]) ** 2 + (oc[2] + top * d[2]) ** 2 <= h[0] ** 2) & (top > 0)
        t = torch.where(side_hit, side, top)
        hit = side_hit | top_hit
    return t.masked_fill(~hit, math.inf)


def _first_hits(table: Tensor, origin_y: Tensor, d: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Ray parameter t (= depth, as the camera-frame z of every direction is 1) and slot of the first hit.

    table (B, slots, columns); origin (0, origin_y, 0) per scene; d: world directions x, y, z, each (B, P).
    Each object slot is only cast for the scenes that have an object there.
    """
    inv = [1.0 / torch.where(c.abs() < 1e-9, torch.full_like(c, 1e-9), c) for c in d]
    zero = torch.zeros_like(origin_y[:, None])
    origin = [zero, origin_y[:, None], zero]

    # The room: the camera is inside, so the ray leaves through the face whose far slab distance is smallest.
    _, room_far = _slab(table[:, _FLOOR_SLOT], origin, inv)
    t, axis = torch.stack(room_far).min(dim=0)
    slot = torch.full_like(axis, _WALL_SLOT)
    slot[(axis == 1) & (d[1] < 0)] = _FLOOR_SLOT
    slot[(axis == 1) & (d[1] > 0)] = _CEILING_SLOT

    for k in range(_CEILING_SLOT + 1, _SLOTS):
        rows = torch.nonzero(table[:, k, _PRESENT] > 0).squeeze(1)
        if len(rows) == 0:
            continue
        kind = int(table[rows[0], k, _KIND])
        tk = _object_hits(kind, table[rows, k], [o[rows] for o in origin], [c[rows] for c in d], [c[rows] for c in inv])
        closer = tk < t[rows]
        t[rows] = torch.where(closer, tk, t[rows])
        slot[rows] = torch.where(closer, k, slot[rows])
    return t, slot


def _normals(rows: Tensor, p: list[Tensor]) -> Tensor:
    """Unit surface normal (B, P, 3) at hit points p, from each pixel's object row (B, P, columns)."""
    q = (torch.stack(p, dim=-1) - rows[..., _CENTER]) / rows[..., _HALF]
    kind = rows[..., _KIND, None]
    # boxes: the face whose axis has the largest |q|; the room is seen from inside, so flip its normal
    face = torch.nn.functional.one_hot(q.abs().argmax(dim=-1), 3).to(q.dtype) * q.sign()
    face = torch.where(kind == _ROOM, -face, face)
    sphere = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    radial = q * torch.tensor([1.0, 0.0, 1.0])
    radial = radial / radial.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(q)
    cylinder = torch.where(q[..., 1:2] > 0.999, up, radial)
    return torch.where(kind == _SPHERE, sphere, torch.where(kind == _CYLINDER, cylinder, face))


def _depth_edges(depth: Tensor, slot: Tensor) -> Tensor:
    """Pixels (B, H, W) on an occlusion edge: a 4-neighbour shows another surface (slot) whose depth differs by
    more than EDGE_RELATIVE_STEP of the nearer one. Smooth depth ramps (a floor seen at a grazing angle) and
    flush surfaces (a poster on its wall) are not edges."""
    edge = torch.zeros_like(depth, dtype=torch.bool)
    for dim in (1, 2):
        n = depth.shape[dim] - 1
        a, b = depth.narrow(dim, 0, n), depth.narrow(dim, 1, n)
        jump = ((a - b).abs() > EDGE_RELATIVE_STEP * torch.minimum(a, b)) & (
            slot.narrow(dim, 0, n) != slot.narrow(dim, 1, n)
        )
        edge.narrow(dim, 0, n).logical_or_(jump)
        edge.narrow(dim, 1, n).logical_or_(jump)
    return edge


def _render(scenes: list[_Scene], noise: Tensor, rgb_noise: Tensor, opts: RGBDSynthOptions) -> dict[str, Tensor]:
    """Cast, shade and corrupt one chunk of scenes; noise (B, 6, P): grain, RGB (3), depth noise, hole uniform;
    rgb_noise (B,): each scene's RGB noise std."""
    table = torch.from_numpy(np.stack([s.table for s in scenes]))
    camera = torch.from_numpy(np.stack([s.camera for s in scenes]).astype(np.float32))
    light = torch.from_numpy(np.stack([s.lighting for s in scenes]).astype(np.float32))
    n, hw = len(scenes), opts.height * opts.width
    sa, sb = (s.reshape(1, hw) for s in camera_slopes(opts.height, opts.width))
    cos, sin = camera[:, 1, None].cos(), camera[:, 1, None].sin()
    # camera-frame direction (a, b, 1), pitched down: forward (0, -sin, cos), up (0, cos, sin)
    d = [sa.expand(n, hw), sb * cos - sin, sb * sin + cos]
    t, slot = _first_hits(table, camera[:, 0], d)

    rows = torch.gather(table, 1, slot[..., None].expand(n, hw, _COLUMNS))
    p = [t * d[0], camera[:, 0, None] + t * d[1], t * d[2]]
    normal = _normals(rows, p)
    shade = light[:, None, 3] + (1 - light[:, None, 3]) * (normal @ light[:, :3, None]).squeeze(-1).clamp_min(0)
    along = (torch.stack(p, dim=-1) * rows[..., _STRIPE]).sum(-1)
    # Average the stripes over the pixel's footprint on the surface (box filter, Gaussian approximation): without
    # it, far and grazing surfaces alias into moire rings, a colour artefact that would leak depth into RGB.
    ray = torch.stack(d, dim=-1)
    distance = ray.norm(dim=-1)
    facing = ((normal * ray).sum(-1).abs() / distance).clamp_min(0.05)
    footprint = t * distance / (_focal(opts.width) * facing)
    blur = torch.exp(-((math.pi * rows[..., _FREQ] * footprint) ** 2) / 6)
    phase = 2 * math.pi * rows[..., _FREQ] * along + rows[..., _PHASE]
    stripes = rows[..., _AMP] * blur * torch.sin(phase)
    texture = 1 + stripes + rows[..., _GRAIN] * noise[:, 0]
    albedo = (rows[..., _BASE] * texture[..., None]).clamp(0, 1)
    rgb = albedo * (shade[..., None] * light[:, None, 4:7]) + rgb_noise[:, None, None] * noise[:, 1:4].transpose(1, 2)
    rgb = rgb.clamp(0, 1).transpose(1, 2).reshape(n, 3, opts.height, opts.width)

    depth = t.reshape(n, opts.height, opts.width)
    edges = _depth_edges(depth, slot.reshape_as(depth))
    sigma = opts.depth_noise * (0.0012 + 0.0019 * (depth - 0.4).clamp_min(0) ** 2)
    noisy = (depth + sigma * noise[:, 4].reshape_as(depth)).clamp_min(0.05)
    hole_prob = torch.where(edges, max(opts.hole_rate, opts.edge_hole_rate), opts.hole_rate)
    holes = noise[:, 5].reshape_as(depth) < hole_prob
    noisy = noisy.masked_fill(holes, 0.0)
    labels = rows[..., _CLASS].reshape(n, opts.height, opts.width).to(torch.int64)
    return {"rgb": rgb, "depth": noisy[:, None], "target": labels, "edges": edges, "holes": holes}


def _generate(seed: int, split: str, size: int, opts: RGBDSynthOptions) -> MultimodalDataset:
    """One split, rendered in chunks. Scene i draws its layout from default_rng([seed, split id, i]) and seeds
    a torch generator from it for its pixel noise (several times faster than numpy's)."""
    hw = opts.height * opts.width
    rgb = torch.empty(size, 3, opts.height, opts.width)
    depth = torch.empty(size, 1, opts.height, opts.width)
    target = torch.empty(size, opts.height, opts.width, dtype=torch.int64)
    meta = {k: torch.empty(size, dtype=torch.int64) for k in ("num_objects", "edge_pixels", "hole_pixels")}
    meta |= {k: torch.empty(size, dtype=torch.int64) for k in ("camera_height_mm", "pitch_mrad", "room_depth_mm")}
    depth_pairs = torch.empty(size, dtype=torch.bool)
    depth_failed = torch.zeros(size, dtype=torch.bool)
    dark = torch.zeros(size, dtype=torch.bool)
    chunk, generator = max(1, _PIXELS_PER_CHUNK // hw), torch.Generator()
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        scenes, noise = [], torch.empty(stop - start, 6, hw)
        for j, i in enumerate(range(start, stop)):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            # its own stream, so that the fraction does not change which rooms the other scenes are
            plain = np.random.default_rng([seed, _SPLIT_IDS[split], i, 1]).random() < opts.plain_room_fraction
            scenes.append(_Scene(rng, depth_pairs=not plain))
            dark[i] = _darken(scenes[-1], np.random.default_rng([seed, _SPLIT_IDS[split], i, 3]), opts)
            generator.manual_seed(int(rng.integers(2**62)))
            noise[j, :5].normal_(generator=generator)
            noise[j, 5].uniform_(generator=generator)
        rgb_noise = torch.where(dark[start:stop], opts.dark_rgb_noise, opts.rgb_noise)
        out = _render(scenes, noise, rgb_noise, opts)
        rgb[start:stop], depth[start:stop], target[start:stop] = out["rgb"], out["depth"], out["target"]
        meta["num_objects"][start:stop] = torch.tensor(
            [int(s.table[_CEILING_SLOT + 1 :, _PRESENT].sum()) for s in scenes]
        )
        meta["edge_pixels"][start:stop] = out["edges"].sum(dim=(1, 2))
        meta["hole_pixels"][start:stop] = out["holes"].sum(dim=(1, 2))
        meta["camera_height_mm"][start:stop] = torch.tensor([round(s.camera[0] * 1000) for s in scenes])
        meta["pitch_mrad"][start:stop] = torch.tensor([round(s.camera[1] * 1000) for s in scenes])
        meta["room_depth_mm"][start:stop] = torch.tensor([round(s.depth * 1000) for s in scenes])
        depth_pairs[start:stop] = torch.tensor([s.has_depth_only_object() for s in scenes])
        for i in range(start, stop):
            failure = np.random.default_rng([seed, _SPLIT_IDS[split], i, 2])
            if failure.random() < opts.depth_failure_fraction:
                depth_failed[i] = True
                generator.manual_seed(int(failure.integers(2**62)))
                depth[i] = _failed_depth(depth[i], generator)
                meta["hole_pixels"][i] = int((depth[i] == 0).sum())
    if opts.normalize:
        rgb.sub_(torch.tensor(RGB_MEAN)[:, None, None]).div_(torch.tensor(RGB_STD)[:, None, None])
        depth.div_(DEPTH_SCALE)
    flags = {"depth_pairs": depth_pairs, "depth_failed": depth_failed, "dark": dark}
    return MultimodalDataset({"rgb": rgb, "depth": depth}, target, flags=flags, meta=meta)


def _darken(scene: _Scene, rng: np.random.Generator, opts: RGBDSynthOptions) -> bool:
    """Dim a `dark_room_fraction` share of the scenes (drawn from their own stream `rng`, so that the fraction
    changes no room); returns whether this one is dark."""
    if rng.random() >= opts.dark_room_fraction:
        return False
    scene.lighting[4:7] *= rng.uniform(*DARK_GAIN)
    return True


def _failed_depth(depth: Tensor, generator: torch.Generator) -> Tensor:
    """A failed sensor's map (metres): 95 % holes, the other pixels uniform in the range the room's depths span."""
    speckle = torch.rand(depth.shape, generator=generator) < 0.05
    values = 0.3 + 6.7 * torch.rand(depth.shape, generator=generator)
    return torch.where(speckle, values, torch.zeros_like(depth))


def load_rgbd_synth(seed: int = 0, **options: object) -> dict[str, MultimodalDataset]:
    """Train/valid/test synthetic RGB-D rooms: inputs `rgb` (3, H, W) and `depth` (1, H, W) (normalised as
    RGBDSynthOptions.normalize says; depth holes are 0), target (H, W) int64 in CLASS_NAMES order, IGNORE = 255.

    flags per sample: depth_pairs (the scene holds a depth-only object), depth_failed (its depth sensor failed),
    dark (a dim room seen through a noisy camera).
    meta per sample: num_objects,
    edge_pixels, hole_pixels, camera_height_mm, pitch_mrad, room_depth_mm.
    """
    opts = rgbd_synth_options(**options)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"rgbd_synth seed must be an int >= 0, got {seed!r}")
    sizes = {"train": opts.train_size, "valid": opts.valid_size, "test": opts.test_size}
    return {split: _generate(seed, split, size, opts) for split, size in sizes.items()}


def rgbd_synth_info(seed: int = 0, **options: object) -> DatasetInfo:
    """Shapes and split sizes from the options alone (no scenes are rendered)."""
    opts = rgbd_synth_options(**options)
    modalities = {
        "rgb": ModalitySpec("rgb", (3, opts.height, opts.width), "image"),
        "depth": ModalitySpec("depth", (1, opts.height, opts.width), "image"),
    }
    sizes = {"train": opts.train_size, "valid": opts.valid_size, "test": opts.test_size}
    return DatasetInfo("rgbd_synth", modalities, TASK, sizes)
