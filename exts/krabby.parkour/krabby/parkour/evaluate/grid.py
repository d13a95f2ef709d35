"""What to evaluate: terrains x difficulties x seeds x perturbations, each episode reproducible from its seed.

Perturbation ranges are the training randomisation (spec ../shared/spec/parkour_policy.md §1.3,
§8 and the upstream task's EventCfg): base mass +U(-1, 3) kg, base CoM U(-0.02, 0.02) m per axis,
robot friction U(0.6, 2.0), pushes of U(-0.5, 0.5) m/s in world x and y every 8 s. Motor strength,
extra action latency, extra depth latency and depth noise were not randomised by that task (the
action delay and the one-frame depth staleness are modelled in the observation builder and the
action mapper, every run), so their training range is the nominal value; a grid file can widen them.
When the run's ``params/env.yaml`` names these events, its numbers replace the spec's.

Friction: PhysX averages the robot's and the terrain's coefficients (training terrain 1.0, combine
"average"), so a robot friction f acts as (1 + f) / 2; the MuJoCo foot gets that value.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from krabby.hal.sim.perturbation import SimPerturbation

TRAINING_TERRAIN_FRICTION = 1.0  # spec §8: training terrain friction, "average" combine


@dataclass(frozen=True)
class PerturbationRanges:
    """Uniform ranges (low, high) sampled once per episode; (x, x) is a fixed value."""

    name: str
    base_mass_offset_kg: tuple[float, float] = (0.0, 0.0)
    base_com_offset_m: tuple[float, float] = (0.0, 0.0)  # each axis independently
    robot_friction: Optional[tuple[float, float]] = None  # training semantics; None = the model's foot friction
    motor_strength: tuple[float, float] = (1.0, 1.0)
    push_vel_m_s: float = 0.0  # pushes add U(-v, v) to world x and y
    push_interval_s: float = 8.0
    action_latency_steps: tuple[int, int] = (0, 0)
    depth_latency_frames: tuple[int, int] = (0, 0)
    depth_noise_m: tuple[float, float] = (0.0, 0.0)

    def scaled(self, factor: float, name: Optional[str] = None) -> "PerturbationRanges":
        """Each range widened by ``factor`` about its centre (x1.5: past training, to find where it breaks).

        Physical floors are kept: friction and motor strength stay > 0.05, latencies and noise >= 0.
        """
        def widen(r: tuple[float, float], floor: Optional[float] = None) -> tuple[float, float]:
            c, h = (r[0] + r[1]) / 2.0, (r[1] - r[0]) / 2.0 * factor
            lo, hi = c - h, c + h
            return (lo, hi) if floor is None else (max(floor, lo), max(floor, hi))

        def widen_int(r: tuple[int, int]) -> tuple[int, int]:
            lo, hi = widen((float(r[0]), float(r[1])), 0.0)
            return (int(np.floor(lo)), int(np.ceil(hi)))

        return dataclasses.replace(
            self, name=name or f"{self.name}_x{factor:g}",
            base_mass_offset_kg=widen(self.base_mass_offset_kg), base_com_offset_m=widen(self.base_com_offset_m),
            robot_friction=None if self.robot_friction is None else widen(self.robot_friction, 0.05),
            motor_strength=widen(self.motor_strength, 0.05), push_vel_m_s=self.push_vel_m_s * factor,
            action_latency_steps=widen_int(self.action_latency_steps),
            depth_latency_frames=widen_int(self.depth_latency_frames),
            depth_noise_m=widen(self.depth_noise_m, 0.0),
        )

    def sample(self, rng: np.random.Generator, seed: int) -> SimPerturbation:
        """One episode's values; ``seed`` drives the pushes and the depth noise inside the backend."""
        def u(r: tuple[float, float]) -> float:
            return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))

        def ui(r: tuple[int, int]) -> int:
            return int(r[0]) if r[0] == r[1] else int(rng.integers(r[0], r[1] + 1))

        friction = None
        if self.robot_friction is not None:
            friction = (TRAINING_TERRAIN_FRICTION + u(self.robot_friction)) / 2.0
        return SimPerturbation(
            base_mass_offset_kg=u(self.base_mass_offset_kg),
            base_com_offset_m=(u(self.base_com_offset_m), u(self.base_com_offset_m), u(self.base_com_offset_m)),
            foot_friction=friction, motor_strength=u(self.motor_strength),
            push_interval_s=self.push_interval_s if self.push_vel_m_s > 0 else 0.0, push_vel_m_s=self.push_vel_m_s,
            action_latency_steps=ui(self.action_latency_steps), depth_latency_frames=ui(self.depth_latency_frames),
            depth_noise_m=u(self.depth_noise_m), seed=seed,
        )


NOMINAL = PerturbationRanges("nominal")
SPEC_TRAINING = PerturbationRanges(
    "train", base_mass_offset_kg=(-1.0, 3.0), base_com_offset_m=(-0.02, 0.02), robot_friction=(0.6, 2.0),
    push_vel_m_s=0.5, push_interval_s=8.0,
)


def training_ranges(checkpoint: Optional[str | Path]) -> tuple[PerturbationRanges, str]:
    """The training ranges of this run: its ``params/env.yaml`` events when present, else the spec's.

    Returns the ranges and where they came from (for the card).
    """
    env = _find_env_yaml(checkpoint) if checkpoint else None
    if env is None:
        return SPEC_TRAINING, "spec (../shared/spec/parkour_policy.md; no params/env.yaml events)"
    events = _read_events(env)
    if not events:
        return SPEC_TRAINING, "spec (the run's params/env.yaml names no randomisation events)"
    r = SPEC_TRAINING
    changes: dict[str, Any] = {}
    mass = _param(events, "mass", "mass_distribution_params")
    if mass is not None:
        changes["base_mass_offset_kg"] = (float(mass[0]), float(mass[1]))
    com = _param(events, "com", "com_range")
    if isinstance(com, dict) and "x" in com:
        changes["base_com_offset_m"] = (float(com["x"][0]), float(com["x"][1]))
    friction = _param(events, "material", "static_friction_range")
    if friction is not None:
        changes["robot_friction"] = (float(friction[0]), float(friction[1]))
    push = _param(events, "push", "velocity_range")
    if isinstance(push, dict) and "x" in push:
        changes["push_vel_m_s"] = float(max(abs(push["x"][0]), abs(push["x"][1])))
    interval = _param(events, "push", "interval_range_s")
    if interval is not None:
        changes["push_interval_s"] = float(interval[0])
    return dataclasses.replace(r, **changes), "the run's params/env.yaml (events), the spec for the rest"


def _find_env_yaml(checkpoint: str | Path) -> Optional[Path]:
    p = Path(checkpoint).resolve()
    for d in [p if p.is_dir() else p.parent, *p.parents][:3]:
        if (d / "params" / "env.yaml").is_file():
            return d / "params" / "env.yaml"
    return None


def _read_events(path: Path) -> dict[str, Any]:
    """The ``events`` mapping of an Isaac Lab env.yaml (its python/* tags read as plain YAML)."""
    try:
        import yaml
    except ImportError:
        return {}

    class _Loader(yaml.SafeLoader):
        pass

    def plain(loader: Any, suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_scalar(node)

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", plain)
    _Loader.add_multi_constructor("!", plain)
    try:
        data = yaml.load(path.read_text(errors="replace"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError:
        return {}
    events = data.get("events") if isinstance(data, dict) else None
    return events if isinstance(events, dict) else {}


def _param(events: dict[str, Any], hint: str, key: str) -> Any:
    """``key`` of the first event term whose name or function mentions ``hint`` (a reset event also has a
    velocity_range: only the push's counts)."""
    for name, term in events.items():
        if not isinstance(term, dict) or hint not in f"{name} {term.get('func', '')}":
            continue
        if key in term and term[key] is not None:
            return term[key]
        params = term.get("params")
        if isinstance(params, dict) and params.get(key) is not None:
            return params[key]
    return None


@dataclass(frozen=True)
class EpisodeTask:
    """One episode of the grid: everything a worker needs, picklable (processes and Ray)."""

    index: int
    checkpoint: str
    backend: str
    terrain: str
    difficulty: Optional[float]
    seed: int
    perturbation_name: str
    perturbation: SimPerturbation
    duration_s: float
    speed_m_s: float
    device: str = "cpu"


@dataclass
class Grid:
    terrains: list[str]
    difficulties: list[Optional[float]] = field(default_factory=lambda: [None])  # None = the preset's default
    seeds: list[int] = field(default_factory=lambda: [0])
    perturbations: list[PerturbationRanges] = field(default_factory=lambda: [NOMINAL])
    duration_s: float = 20.0
    speed_m_s: float = 0.5

    def tasks(self, checkpoint: str, backend: str, device: str = "cpu") -> list[EpisodeTask]:
        out = []
        for i, (t, d, s, p) in enumerate(itertools.product(self.terrains, self.difficulties, self.seeds, self.perturbations)):
            # seeded by the cell's identity, never by Python's salted hash(): the same cell samples the same values anywhere
            key = [s, zlib.crc32(t.encode()), 0 if d is None else 1 + int(round(d * 1e6)), zlib.crc32(p.name.encode())]
            ss = np.random.SeedSequence(key)
            values = p.sample(np.random.default_rng(ss), seed=int(ss.generate_state(1)[0]))
            out.append(EpisodeTask(i, checkpoint, backend, t, d, s, p.name, values, self.duration_s, self.speed_m_s, device))
        return out


def load_grid_toml(path: str | Path, base: Grid, ranges: dict[str, PerturbationRanges]) -> Grid:
    """A user grid: top-level terrains/difficulties/seeds/duration_s/speed_m_s, and [perturbations.NAME] tables.

    A perturbation table may start from ``base = "train"`` (or "nominal", or any name defined earlier)
    and override any ``PerturbationRanges`` field; ``scale = 1.5`` widens it.
    """
    from krabby.hal.robot_profile import read_config_toml  # one TOML reader for the project

    _, data = read_config_toml("eval", Path(path).resolve(), "evaluation grid", error=ValueError)
    known = {f.name for f in dataclasses.fields(PerturbationRanges)} - {"name"}
    grid = dataclasses.replace(base)
    for key in ("terrains", "seeds", "difficulties"):
        if key in data:
            setattr(grid, key, list(data[key]) if isinstance(data[key], list) else data[key])
    if isinstance(grid.seeds, int):  # seeds = N means 0..N-1
        grid.seeds = list(range(grid.seeds))
    for key in ("duration_s", "speed_m_s"):
        if key in data:
            setattr(grid, key, float(data[key]))
    tables = data.get("perturbations", {})
    if tables:
        pool = dict(ranges)
        chosen = []
        for name, spec in tables.items():
            spec = dict(spec)
            start = pool.get(spec.pop("base", "nominal"))
            if start is None:
                raise ValueError(f"{path}: perturbation {name!r} starts from an unknown base")
            scale = spec.pop("scale", None)
            unknown = set(spec) - known
            if unknown:
                raise ValueError(f"{path}: perturbation {name!r} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
            fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
            r = dataclasses.replace(start, name=name, **fixed)
            if scale is not None:
                r = r.scaled(float(scale), name=name)
            pool[name] = r
            chosen.append(r)
        grid.perturbations = chosen
    return grid
