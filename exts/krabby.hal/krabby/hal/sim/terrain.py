"""Seeded parkour courses for the MuJoCo backend: obstacles as boxes plus goal waypoints.

A course runs along world +x from the spawn point at the origin. It is a row of obstacles
(hurdles, steps up and down, gaps, slopes, stepping stones, or flat stretches), each after a flat
run-up, with one goal waypoint just past each obstacle, like the 8 goals per sub-terrain that
training steers the teacher with (spec §1.1). Everything is a MuJoCo box (ramps are tilted boxes)
on a floor plane, all in geom group 0 so that the height scanner and the depth camera, which see
terrain only in training, can filter on that group. Courses with gaps or stones stand on a
walkway over a pit, so missing a stone means falling. The same (preset, seed, difficulty) always
gives the same course: all randomness comes from one numpy Generator seeded here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

#: MuJoCo geom group of every terrain geom; sensors cast rays against this group only.
TERRAIN_GEOM_GROUP = 0

OBSTACLE_KINDS = ("flat", "hurdle", "step", "gap", "slope", "stones")
_PIT_KINDS = ("gap", "stones")


@dataclass(frozen=True)
class TerrainBox:
    """One static box of the course: world centre, half extents, tilt about world y (ramps)."""

    name: str
    kind: str
    center_m: tuple[float, float, float]
    half_extents_m: tuple[float, float, float]
    pitch_rad: float = 0.0  # rotation about world +y; positive tilts the +x end down

    def rotation_world_from_box(self) -> np.ndarray:
        c, s = math.cos(self.pitch_rad), math.sin(self.pitch_rad)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class CourseSegment:
    """One obstacle of the course, for logs and videos: kind, x extent and its main size."""

    kind: str
    x_start_m: float
    x_end_m: float
    size: float  # height (hurdle, step), gap width, slope angle in rad, stone size (m); 0 for flat


@dataclass(frozen=True)
class CoursePreset:
    """A named course family: which obstacles it draws from and how hard it is by default."""

    obstacle_kinds: tuple[str, ...]
    default_difficulty: float
    lateral_goal_jitter_m: float
    description: str


PRESETS: dict[str, CoursePreset] = {
    "flat": CoursePreset(("flat",), 0.0, 0.0, "flat ground, 8 goals straight ahead"),
    "hurdles": CoursePreset(("hurdle",), 0.0, 0.0, "hurdles across the track, 5 cm at difficulty 0"),
    "steps": CoursePreset(("step",), 0.0, 0.0, "platforms: steps up then down, 5 cm rise at difficulty 0"),
    "gaps": CoursePreset(("gap",), 0.2, 0.0, "gaps in a walkway over a 1 m pit, 0.2 m at difficulty 0.2"),
    "stones": CoursePreset(("stones",), 0.2, 0.0, "fields of stepping stones over a pit"),
    "slopes": CoursePreset(("slope",), 0.3, 0.0, "ramps up, a plateau, ramps down; 11 deg at difficulty 0.3"),
    "parkour": CoursePreset(
        ("hurdle", "step", "gap", "slope", "stones"), 0.5, 0.3, "every obstacle kind, mixed, goals zig-zag"
    ),
}


@dataclass(frozen=True)
class CourseConfig:
    """What to generate. difficulty None means the preset's default; it runs 0 (easy) to 1 (hard)."""

    preset: str = "flat"
    seed: int = 0
    difficulty: Optional[float] = None
    num_goals: int = 8  # training has 8 goals per sub-terrain (spec §1.1)
    track_width_m: float = 3.0
    pit_depth_m: float = 1.0  # depth of the pit under gaps and stones (below the walkway top)
    first_run_up_m: float = 2.0  # flat ground between the spawn point and the first obstacle
    run_out_m: float = 3.0  # flat ground after the last goal


@dataclass(frozen=True, eq=False)  # holds arrays: compare .boxes and .goals_xy_m instead
class Course:
    """A generated (or hand-made) course: terrain boxes over a floor plane, goal waypoints, spawn pose."""

    config: CourseConfig
    difficulty: float
    floor_z_m: float  # height of the infinite floor plane (the pit bottom on pit courses)
    boxes: tuple[TerrainBox, ...]
    goals_xy_m: np.ndarray  # (G, 2) world
    segments: tuple[CourseSegment, ...] = ()
    spawn_xy_m: tuple[float, float] = (0.0, 0.0)
    spawn_yaw_rad: float = 0.0
    spawn_ground_z_m: float = 0.0
    x_end_m: Optional[float] = None  # end of the run-out; None = the last goal

    def __post_init__(self) -> None:
        goals = np.array(self.goals_xy_m, dtype=np.float64).reshape(-1, 2)
        if len(goals) == 0:
            raise ValueError("a course needs at least one goal")
        goals.setflags(write=False)
        object.__setattr__(self, "goals_xy_m", goals)
        points = [np.asarray(self.spawn_xy_m, dtype=np.float64)[None, :], goals]
        if self.x_end_m is not None and self.x_end_m > goals[-1, 0]:
            points.append(np.array([[self.x_end_m, goals[-1, 1]]]))
        object.__setattr__(self, "_polyline_xy", np.vstack(points))
        # progress_m runs every control step: its per-segment constants are computed once
        a = self._polyline_xy[:-1]
        ab = self._polyline_xy[1:] - a
        seg_len = np.linalg.norm(ab, axis=1)
        object.__setattr__(self, "_segments", (a, ab, seg_len, np.maximum(seg_len**2, 1e-12)))

    @property
    def preset(self) -> str:
        return self.config.preset

    @property
    def is_flat(self) -> bool:
        """No obstacles: training's obs[11:13] flags tell "parkour_flat" sub-terrains apart (spec §1.1)."""
        return all(s.kind == "flat" for s in self.segments) and all(b.kind == "walkway" for b in self.boxes)

    @property
    def num_goals(self) -> int:
        return int(self.goals_xy_m.shape[0])

    def path_xy_m(self) -> np.ndarray:
        """The course centreline: spawn, then every goal, then the run-out end, (P, 2)."""
        return self._polyline_xy  # type: ignore[attr-defined]

    def length_m(self) -> float:
        seg = np.diff(self._polyline_xy, axis=0)
        return float(np.linalg.norm(seg, axis=1).sum())

    def progress_m(self, xy_m: np.ndarray) -> float:
        """Distance along the centreline of the point on it closest to xy (how far the robot got)."""
        p = np.asarray(xy_m, dtype=np.float64)[:2]
        a, ab, seg_len, seg_len_sq = self._segments  # type: ignore[attr-defined]
        t = np.minimum(np.maximum(np.einsum("ij,ij->i", p - a, ab) / seg_len_sq, 0.0), 1.0)  # = np.clip
        closest = a + t[:, None] * ab
        i = int(np.argmin(np.linalg.norm(closest - p, axis=1)))
        return float(seg_len[:i].sum() + t[i] * seg_len[i])

    def surface_height_m(self, xy_m: np.ndarray) -> np.ndarray:
        """Top terrain height under each xy point, computed from the boxes analytically, (N,).

        An independent oracle for the ray-cast sensors (and a terrain lookup for scripted
        controllers): a vertical line is clipped against each box's slabs.
        """
        xy = np.atleast_2d(np.asarray(xy_m, dtype=np.float64))
        top = np.full(xy.shape[0], self.floor_z_m)
        for box in self.boxes:
            r = box.rotation_world_from_box()
            e = np.asarray(box.half_extents_m)
            # line p(t) = (x, y, t); in box coordinates q(t) = a + t * b
            rel = np.column_stack([xy[:, 0] - box.center_m[0], xy[:, 1] - box.center_m[1], -np.full(len(xy), box.center_m[2])])
            a = rel @ r  # R^T rel, row-wise
            b = r[2, :]  # R^T e_z
            t_lo = np.full(len(xy), -np.inf)
            t_hi = np.full(len(xy), np.inf)
            inside = np.ones(len(xy), dtype=bool)
            for i in range(3):
                if abs(b[i]) < 1e-12:
                    inside &= np.abs(a[:, i]) <= e[i]
                else:
                    t1 = (-e[i] - a[:, i]) / b[i]
                    t2 = (e[i] - a[:, i]) / b[i]
                    t_lo = np.maximum(t_lo, np.minimum(t1, t2))
                    t_hi = np.minimum(t_hi, np.maximum(t1, t2))
            hit = inside & (t_hi >= t_lo)
            top = np.where(hit, np.maximum(top, t_hi), top)
        return top


# ----------------------------------------------------------------------------------- generation


def make_course(config: CourseConfig | str = "flat", seed: Optional[int] = None, difficulty: Optional[float] = None) -> Course:
    """Generate a course; ``make_course("hurdles", seed=3)`` is shorthand for a CourseConfig."""
    if isinstance(config, str):
        config = CourseConfig(preset=config)
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    if difficulty is not None:
        config = dataclasses.replace(config, difficulty=difficulty)
    if config.preset not in PRESETS:
        raise ValueError(f"unknown course preset {config.preset!r}; known: {', '.join(PRESETS)}")
    if config.num_goals < 1:
        raise ValueError(f"num_goals must be >= 1, got {config.num_goals}")
    preset = PRESETS[config.preset]
    d = preset.default_difficulty if config.difficulty is None else float(config.difficulty)
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {d}")
    return _Builder(config, preset, d).build()


class _Builder:
    """Lays obstacles out one after another along +x; one goal after each."""

    def __init__(self, config: CourseConfig, preset: CoursePreset, difficulty: float) -> None:
        self.cfg = config
        self.preset = preset
        self.d = difficulty
        self.rng = np.random.default_rng(config.seed)
        self.kinds = [str(self.rng.choice(preset.obstacle_kinds)) for _ in range(config.num_goals)]
        self.pit = any(k in _PIT_KINDS for k in self.kinds)
        self.floor_z = -config.pit_depth_m if self.pit else 0.0
        self.boxes: list[TerrainBox] = []
        self.holes: list[tuple[float, float]] = []  # x intervals with no walkway (pit courses)
        self.segments: list[CourseSegment] = []
        self.half_w = config.track_width_m / 2.0

    # difficulty with a little per-obstacle spread, kept inside [0, 1]
    def _level(self) -> float:
        return float(np.clip(self.d + self.rng.uniform(-0.1, 0.1) * self.d, 0.0, 1.0))

    def _box(self, kind: str, x0: float, x1: float, z0: float, z1: float, y_c: float = 0.0, half_y: Optional[float] = None, pitch: float = 0.0) -> None:
        hy = self.half_w if half_y is None else half_y
        self.boxes.append(
            TerrainBox(
                name=f"{kind}_{len(self.boxes)}",
                kind=kind,
                center_m=((x0 + x1) / 2.0, y_c, (z0 + z1) / 2.0),
                half_extents_m=((x1 - x0) / 2.0, hy, (z1 - z0) / 2.0),
                pitch_rad=pitch,
            )
        )

    def _ramp(self, x0: float, z0: float, x1: float, z1: float) -> None:
        """A tilted box whose top face runs from (x0, z0) to (x1, z1); its body hangs below."""
        length = math.hypot(x1 - x0, z1 - z0)
        pitch = -math.atan2(z1 - z0, x1 - x0)  # rotation about +y that lifts the +x end for a rise
        thick = 0.1
        n = np.array([math.sin(pitch), 0.0, math.cos(pitch)])  # top-face normal: the box's +z in world
        c = np.array([(x0 + x1) / 2.0, 0.0, (z0 + z1) / 2.0]) - thick * n
        self.boxes.append(
            TerrainBox(f"slope_{len(self.boxes)}", "slope", (float(c[0]), 0.0, float(c[2])), (length / 2.0, self.half_w, thick), pitch)
        )

    def _obstacle(self, kind: str, x: float, y_goal: float) -> tuple[float, float]:
        """Place one obstacle starting at x; return (x where it ends, its main size)."""
        lv = self._level()
        rng = self.rng
        base = self.floor_z if self.pit else 0.0
        if kind == "flat":
            return x + float(rng.uniform(1.0, 2.0)), 0.0
        if kind == "hurdle":
            h = 0.05 + 0.30 * lv
            t = float(rng.uniform(0.10, 0.20))
            self._box("hurdle", x, x + t, base, h)
            return x + t, h
        if kind == "step":
            rise = 0.05 + 0.15 * lv
            n_up = 1 + int(rng.integers(0, 1 + int(lv >= 0.5)))
            tread = float(rng.uniform(0.4, 0.6))
            plateau = float(rng.uniform(0.8, 1.2))
            # nested platforms: level k spans the inner part of level k-1
            total = 2 * (n_up - 1) * tread + plateau
            for k in range(n_up):
                self._box("step", x + k * tread, x + total - k * tread, base, (k + 1) * rise)
            return x + total, rise
        if kind == "gap":
            g = 0.10 + 0.50 * lv
            self.holes.append((x, x + g))
            return x + g, g
        if kind == "slope":
            angle = math.radians(5.0 + 20.0 * lv)
            rise = 0.10 + 0.20 * lv
            run = rise / math.tan(angle)
            plateau = float(rng.uniform(0.6, 1.0))
            self._ramp(x, 0.0, x + run, rise)
            self._box("slope", x + run, x + run + plateau, base, rise)
            self._ramp(x + run + plateau, rise, x + 2 * run + plateau, 0.0)
            return x + 2 * run + plateau, angle
        if kind == "stones":
            s = 0.45 - 0.20 * lv
            gap = 0.05 + 0.15 * lv
            jitter = 0.02 + 0.06 * lv
            rows = int(rng.integers(4, 7))
            lane_half = 0.6
            cols = max(1, int((2 * lane_half + gap) // (s + gap)))
            width = cols * s + (cols - 1) * gap
            start = x + gap
            for i in range(rows):
                for j in range(cols):
                    sx = start + i * (s + gap)
                    sy = y_goal - width / 2.0 + j * (s + gap) + s / 2.0
                    top = float(rng.uniform(-jitter, jitter))
                    self._box("stone", sx, sx + s, self.floor_z, top, y_c=sy, half_y=s / 2.0)
            end = start + rows * (s + gap)
            self.holes.append((x, end))
            return end, s
        raise ValueError(f"unknown obstacle kind {kind!r}; known: {', '.join(OBSTACLE_KINDS)}")

    def build(self) -> Course:
        cfg, rng = self.cfg, self.rng
        goals = []
        x = cfg.first_run_up_m
        for i, kind in enumerate(self.kinds):
            if i > 0:
                x += float(rng.uniform(1.0, 1.6))  # flat run-up
            jit = self.preset.lateral_goal_jitter_m
            y_goal = float(rng.uniform(-jit, jit)) if jit > 0 else 0.0
            x_end, size = self._obstacle(kind, x, y_goal)
            self.segments.append(CourseSegment(kind, x, x_end, size))
            x = x_end + float(rng.uniform(0.4, 0.6))  # landing zone: the goal sits past the obstacle
            goals.append((x, y_goal))
        x_end = x + cfg.run_out_m
        if self.pit:  # walkway tiles at z = 0 over the pit, everywhere but the holes
            edges = [-2.0]
            for h0, h1 in sorted(self.holes):
                edges += [h0, h1]
            edges.append(x_end)
            for a, b in zip(edges[0::2], edges[1::2]):
                if b - a > 1e-6:
                    self._box("walkway", a, b, self.floor_z, 0.0)
        return Course(
            config=cfg,
            difficulty=self.d,
            floor_z_m=self.floor_z,
            boxes=tuple(self.boxes),
            goals_xy_m=np.array(goals, dtype=np.float64),
            segments=tuple(self.segments),
            x_end_m=x_end,
        )
