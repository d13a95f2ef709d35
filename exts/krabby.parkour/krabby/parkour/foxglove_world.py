"""What only a simulator knows, on Foxglove channels: where the robot is, its links, and the course.

A robot reports joints and an IMU; MuJoCo also knows the base position and every link's pose.
``WorldChannels`` reads them from a MuJoCo model/data pair (no Krabby backend API needed) and logs:

| topic | schema | content |
|---|---|---|
| ``/tf`` | ``foxglove.FrameTransforms`` | ``world`` -> every robot body (the base is ``base_link``), and ``world`` -> ``base_yaw`` (the base position, yaw only: the height scan's frame) |
| ``/scene/robot`` | ``foxglove.SceneUpdate`` | the robot's geoms, locked to their body frames |
| ``/scene/course`` | ``foxglove.SceneUpdate`` | the course's geoms (boxes; the floor plane is Foxglove's grid) in ``world`` |
| ``/sim`` | JSON ``krabby.Sim`` | sim time, episode, distance, falls, goals, commanded and actual speed, base position |
| ``/safety/events`` | ``foxglove.Log`` | every supervisor event (arm, watchdog, refusals, ...) |

With ``sim_clock`` the session's log times follow simulated time (see ``foxglove_log``). The two
scenes are re-sent every ``scene_period_s`` so a live viewer that connects late sees them.
Runners without a simulator get ``/tf`` and ``/scene/robot`` from ``JointKinematics`` instead.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from krabby.hal.sim.go2_model import BASE_BODY, ROBOT_GEOM_GROUP

from .foxglove_log import FoxgloveSession, _num, _ts, json_schema, rpy_from_quat_wxyz

SIM_SCHEMA = json_schema("krabby.Sim", {
    "sim_time_s": _num("simulated time since the start of the run"),
    "episode": {"type": "integer"}, "falls": {"type": "integer"}, "goals_reached": {"type": "integer"},
    "distance_m": _num("progress along the course, all episodes"),
    "speed_cmd_m_s": _num("commanded forward speed"), "speed_m_s": _num("base speed over ground"),
    "base_pos_w_m": {"type": "array", "items": {"type": "number"}, "description": "base position, world frame"},
}, "simulator truth for one control step")

BASE_FRAME = "base_link"
YAW_FRAME = "base_yaw"  # the base position with yaw only: the yaw-aligned height-scan grid lives here


def _geom_primitives(model: Any, geom_ids: list[int]) -> dict[str, list]:
    """Foxglove primitives for MuJoCo geoms, posed in their body frame (or the world for static geoms)."""
    import mujoco
    from foxglove.messages import Color, CubePrimitive, CylinderPrimitive, Pose, Quaternion, SpherePrimitive, Vector3

    G = mujoco.mjtGeom
    out: dict[str, list] = {"cubes": [], "cylinders": [], "spheres": []}
    for g in geom_ids:
        t, size = model.geom_type[g], model.geom_size[g]
        pos, quat = model.geom_pos[g], model.geom_quat[g]  # body frame; for world geoms, the world
        mat = model.geom_matid[g]
        r, gr, b, a = (model.mat_rgba[mat] if mat >= 0 else model.geom_rgba[g]).tolist()
        color = Color(r=r, g=gr, b=b, a=a if a > 0 else 1.0)
        pose = Pose(position=Vector3(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])),
                    orientation=Quaternion(w=float(quat[0]), x=float(quat[1]), y=float(quat[2]), z=float(quat[3])))
        if t == G.mjGEOM_BOX:
            out["cubes"].append(CubePrimitive(pose=pose, size=Vector3(x=2 * size[0], y=2 * size[1], z=2 * size[2]), color=color))
        elif t == G.mjGEOM_SPHERE:
            d = 2 * float(size[0])
            out["spheres"].append(SpherePrimitive(pose=pose, size=Vector3(x=d, y=d, z=d), color=color))
        elif t in (G.mjGEOM_CYLINDER, G.mjGEOM_CAPSULE):
            d, length = 2 * float(size[0]), 2 * float(size[1])
            out["cylinders"].append(CylinderPrimitive(pose=pose, size=Vector3(x=d, y=d, z=length), bottom_scale=1.0,
                                                      top_scale=1.0, color=color))
            if t == G.mjGEOM_CAPSULE:  # the two end caps
                rot = np.zeros(9)
                mujoco.mju_quat2Mat(rot, quat)
                axis = rot.reshape(3, 3)[:, 2] * size[1]
                for sgn in (-1.0, 1.0):
                    c = pos + sgn * axis
                    out["spheres"].append(SpherePrimitive(
                        pose=Pose(position=Vector3(x=float(c[0]), y=float(c[1]), z=float(c[2])), orientation=pose.orientation),
                        size=Vector3(x=d, y=d, z=d), color=color))
    return out


class LinkChannels:
    """Where the robot's links are: ``/tf`` (world -> every body, and ``base_yaw``) and ``/scene/robot``."""

    def __init__(self, session: FoxgloveSession, model: Any, *, base_body: str = BASE_BODY,
                 robot_geom_group: int = ROBOT_GEOM_GROUP, scene_period_s: float = 2.0):
        import mujoco

        self.model = model
        self.tf = session.typed("FrameTransformsChannel", "/tf")
        self.robot_scene = session.typed("SceneUpdateChannel", "/scene/robot")
        name = lambda b: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b)  # noqa: E731
        robot_geoms = [g for g in range(model.ngeom) if model.geom_group[g] == robot_geom_group]
        self.bodies = sorted({int(model.geom_bodyid[g]) for g in robot_geoms})
        self.frames = {b: (BASE_FRAME if name(b) == base_body else name(b)) for b in self.bodies}
        self.base = next(b for b in self.bodies if self.frames[b] == BASE_FRAME)
        self._robot_geoms = {b: [g for g in robot_geoms if model.geom_bodyid[g] == b] for b in self.bodies}
        self.scene_period_ns = int(scene_period_s * 1e9)
        self._next_scene_ns = 0

    def scene_due(self, log_ns: int) -> bool:
        """True once every ``scene_period_s`` (log time): the static scenes are re-sent for late live viewers."""
        if log_ns < self._next_scene_ns:
            return False
        self._next_scene_ns = log_ns + self.scene_period_ns
        return True

    def update(self, data: Any, log_ns: int, scene: bool) -> None:
        from foxglove.messages import FrameTransform, FrameTransforms, Quaternion, SceneEntity, SceneUpdate, Vector3

        ts = _ts(log_ns)
        if scene:
            self.robot_scene.log(SceneUpdate(entities=[
                SceneEntity(timestamp=ts, frame_id=self.frames[b], id=self.frames[b], frame_locked=True,
                            **_geom_primitives(self.model, self._robot_geoms[b]))
                for b in self.bodies]), log_time=log_ns)

        def tf(child: str, p: Any, q: Any) -> Any:
            return FrameTransform(timestamp=ts, parent_frame_id="world", child_frame_id=child,
                                  translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                                  rotation=Quaternion(w=float(q[0]), x=float(q[1]), y=float(q[2]), z=float(q[3])))

        yaw = rpy_from_quat_wxyz(data.xquat[self.base])[2]
        self.tf.log(FrameTransforms(transforms=[tf(self.frames[b], data.xpos[b], data.xquat[b]) for b in self.bodies] + [
            tf(YAW_FRAME, data.xpos[self.base], (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)))]), log_time=log_ns)


class WorldChannels:
    """Simulator truth for the run log / live view; call ``update`` once per control step."""

    def __init__(self, session: FoxgloveSession, model: Any, *, scene_period_s: float = 2.0, sim_clock: bool = False):
        import mujoco

        self.model, self.session = model, session
        if sim_clock:  # log times = start + simulated time (a --fast run is not paced by the wall clock)
            t0_ns, self._sim_ns = time.time_ns(), 0
            session.clock = lambda: t0_ns + self._sim_ns
        self.links = LinkChannels(session, model, scene_period_s=scene_period_s)
        self.course_scene = session.typed("SceneUpdateChannel", "/scene/course")
        self.sim = session.channel("/sim", SIM_SCHEMA)
        self.events = session.typed("LogChannel", "/safety/events")
        self._course_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == 0
                              and model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE]
        self._last_event_ns = -1

    def update(self, data: Any, sim: dict[str, Any], events: Any = ()) -> None:
        from foxglove.messages import Log, LogLevel, SceneEntity, SceneUpdate

        self._sim_ns = int(round(sim["sim_time_s"] * 1e9))
        log_ns = self.session.now_ns()
        scene = self.links.scene_due(log_ns)
        if scene:
            self.course_scene.log(SceneUpdate(entities=[SceneEntity(
                timestamp=_ts(log_ns), frame_id="world", id="course", **_geom_primitives(self.model, self._course_geoms))]),
                log_time=log_ns)
        self.links.update(data, log_ns, scene)
        self.sim.log(sim, log_time=log_ns)
        for e in list(events):  # the supervisor keeps the last 1000; send the ones newer than the last sent
            if e.stamp_ns <= self._last_event_ns:
                continue
            self._last_event_ns = e.stamp_ns
            calm = e.kind.endswith(("->ARMED", "->ACTIVE", "->DISARMED"))
            self.events.log(Log(timestamp=_ts(e.stamp_ns), level=LogLevel.Info if calm else LogLevel.Warning,
                                name="krabby.hal.safety", message=f"{e.kind} {e.detail}".strip()), log_time=log_ns)


class JointKinematics:
    """The robot's links from what a HAL client receives: the measured joints and the IMU orientation,
    through MuJoCo forward kinematics on the robot's model, for runners with no simulator truth to log
    (the robot, Isaac Lab behind the HAL). A robot does not know where it is, so the base stays at the
    origin at its standing height; the legs and the base's attitude move as measured."""

    def __init__(self, session: FoxgloveSession, profile: Any):
        import mujoco

        from krabby.hal.sim.go2_model import BASE_JOINT, build_go2_model
        from krabby.hal.sim.terrain import make_course

        self._mujoco = mujoco
        self.model = build_go2_model(profile, make_course("flat"))
        self.data = mujoco.MjData(self.model)
        jid = lambda n: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
        self._qadr = np.array([self.model.jnt_qposadr[jid(n)] for n in profile.joint_names])
        self._base_q = int(self.model.jnt_qposadr[jid(BASE_JOINT)])
        self._height_m = profile.spawn_base_height_m
        self.links = LinkChannels(session, self.model)

    def update(self, state: Any, log_ns: int) -> None:
        q, b = self.data.qpos, self._base_q
        q[b:b + 3] = (0.0, 0.0, self._height_m)
        q[b + 3:b + 7] = state.base_quat_wxyz
        q[self._qadr] = state.joint_pos_rad
        self._mujoco.mj_kinematics(self.model, self.data)
        self.links.update(self.data, log_ns, self.links.scene_due(log_ns))
