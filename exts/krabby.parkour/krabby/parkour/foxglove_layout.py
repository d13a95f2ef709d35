"""The Foxglove layout shipped as ``config/foxglove_layout.json``, built with foxglove-sdk's layout types.

    python -m krabby.parkour.foxglove_layout > config/foxglove_layout.json

``build_layout()`` is a ``foxglove.layouts.Layout`` (for the SDK and notebooks). The shipped file is
that layout in the format the Foxglove app imports (Layouts -> Import from file): panel configs by
id (``3D!robot``, ``Plot!…``, ``RosOut!…``, ``Tab!…``) and a mosaic tree of splits, the format the
app exports. ``app_layout()`` converts; the panel configs themselves are the SDK's, unchanged.

Panels: the 3D view (robot, course, height scan; follows ``base_link``), the depth image, joint
positions (measured and target) and torques, timing, the safety state over time, the navigation
command and simulated speed, and the supervisor's event log. Every topic is one that
``foxglove_log`` / ``foxglove_world`` write; a test checks the shipped file against a real run log.
"""

from __future__ import annotations

import re
import sys

#: legs in robot order and the joint kinds, for the plot series
LEGS = ("FR", "FL", "RR", "RL")
KINDS = ("hip", "thigh", "calf")


def _joint_series(fl, topic: str, field: str, kind: str, dashed: bool = False) -> list:
    return [fl.PlotSeries(value=f'{topic}.joints[:]{{name=="{leg}_{kind}_joint"}}.{field}', label=f"{leg} {kind}",
                          line_style="dashed" if dashed else None) for leg in LEGS]


def build_layout():
    import foxglove.layouts as fl

    three_d = fl.ThreeDeePanel(title="Robot and course", config=fl.ThreeDeeConfig(
        follow_tf="base_link", follow_mode="follow-position",
        topics={"/scene/robot": fl.BaseRendererSceneUpdateTopicSettings(visible=True),
                "/scene/course": fl.BaseRendererSceneUpdateTopicSettings(visible=True),
                "/height_scan": fl.BaseRendererPointCloudTopicSettings(visible=True, point_size=6)},
    ))
    depth = fl.ImagePanel(title="Depth the policy sees (m)", config=fl.ImageConfig(image_mode=fl.ImageModeConfig(
        image_topic="/depth", color_mode="colormap", color_map="turbo", min_value=0.0, max_value=2.0)))

    def plot(title: str, series: list, y_label: str) -> object:
        return fl.PlotPanel(title=title, config=fl.PlotConfig(paths=series, y_axis_label=y_label, show_legend=True))

    joints = fl.TabContainer(tabs=[
        fl.TabItem(title=f"{kind} position", content=plot(f"{kind}: measured (solid) vs target (dashed)",
                   _joint_series(fl, "/joint_states", "position", kind) + _joint_series(fl, "/joint_targets", "position", kind, True),
                   "rad")) for kind in KINDS
    ] + [fl.TabItem(title="torque", content=plot("torque", [s for k in KINDS for s in _joint_series(fl, "/joint_states", "effort", k)],
                                                "N·m"))])
    timing = plot("timing", [fl.PlotSeries(value="/timing.compute_ms", label="compute"),
                             fl.PlotSeries(value="/timing.obs_age_ms", label="observation age"),
                             fl.PlotSeries(value="/timing.depth_age_ms", label="depth age"),
                             fl.PlotSeries(value="/timing.loop_period_ms", label="loop period")], "ms")
    motion = plot("speed", [fl.PlotSeries(value="/sim.speed_m_s", label="speed"),
                            fl.PlotSeries(value="/navigation.forward_speed_m_s", label="command"),
                            fl.PlotSeries(value="/imu.yaw_rad", label="yaw (rad)")], "m/s")
    safety = fl.StateTransitionsPanel(title="safety state", config=fl.StateTransitionsConfig(
        paths=[fl.StateTransitionsSeries(value="/safety.state", label="supervisor")]))
    events = fl.LogPanel(title="supervisor events", config=fl.LogConfig(topic_to_render="/safety/events"))

    def split(direction: str, *items: tuple[float, object]) -> object:
        return fl.SplitContainer(direction=direction, items=[fl.SplitItem(proportion=p, content=c) for p, c in items])

    return fl.Layout(content=split(
        "row",
        (3, split("column", (3, three_d), (2, depth))),
        (4, split("column", (3, joints), (2, timing), (2, motion), (1, safety), (2, events))),
    ))


#: foxglove-sdk panel type -> the Foxglove app's panel id prefix
APP_PANEL_IDS = {"ThreeDee": "3D", "Image": "Image", "Plot": "Plot", "StateTransitions": "StateTransitions", "Log": "RosOut"}


def app_layout(sdk: dict) -> dict:
    """An SDK layout (``Layout.to_json()`` parsed) as the app's import/export document."""
    config_by_id: dict[str, dict] = {}

    def panel_id(kind: str, title: str) -> str:
        base = f"{kind}!{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-') or 'panel'}"
        pid, n = base, 1
        while pid in config_by_id:
            n += 1
            pid = f"{base}-{n}"
        return pid

    def node(n: dict):
        if n["type"] == "panel":
            config = dict(n.get("config", {}))
            for series in config.get("paths", []):  # the app's defaults, written out
                series.setdefault("enabled", True)
                series.setdefault("timestampMethod", "receiveTime")
            if n.get("title"):
                config["foxglovePanelTitle"] = n["title"]
            pid = panel_id(APP_PANEL_IDS[n["panelType"]], n.get("title", ""))
            config_by_id[pid] = config
            return pid
        if n["type"] == "tabs":
            pid = panel_id("Tab", "tabs")
            config_by_id[pid] = {"activeTabIdx": n.get("selectedTabIndex", 0),
                                 "tabs": [{"title": t["title"], "layout": node(t["content"])} for t in n["tabs"]]}
            return pid
        if n["type"] == "split":  # n items -> a right-leaning binary tree with the same proportions
            items = n["items"]
            if len(items) == 1:
                return node(items[0]["content"])
            total = sum(i["proportion"] for i in items)
            rest = {"type": "split", "direction": n["direction"], "items": items[1:]}
            return {"first": node(items[0]["content"]), "second": node(rest), "direction": n["direction"],
                    "splitPercentage": round(100.0 * items[0]["proportion"] / total, 3)}
        raise ValueError(f"layout node of type {n['type']!r} has no app equivalent here")

    root = node(sdk["content"])
    return {"configById": config_by_id, "globalVariables": sdk.get("variables") or {}, "userNodes": {},
            "playbackConfig": {"speed": 1}, "layout": root}


def layout_json() -> str:
    import json

    return json.dumps(app_layout(json.loads(build_layout().to_json())), indent=1) + "\n"


if __name__ == "__main__":
    sys.stdout.write(layout_json())
