"""The run's video: poses kept during the run, rendered after it, one frame at a time into the encoder.

Rendering offscreen costs 15-25 ms a frame on a CPU (Mesa llvmpipe), most of a 20 ms control
period, so doing it inside a real-time loop would change the run being filmed. A pose (qpos,
qvel) and the overlay facts are a few hundred bytes, so the run keeps those; ``write()`` puts
each pose back into MuJoCo, renders it, draws the overlay (sim time, commanded and actual speed,
safety state, and the depth image the student saw) and hands the frame straight to the encoder,
so memory stays flat however long the run. It shows its progress and, when interrupted, closes
the file with the frames written so far.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WIDTH_PX, HEIGHT_PX = 480, 320
GIF_MAX_FRAMES = 200


@dataclass
class FrameFacts:
    """What the overlay shows for one frame."""

    sim_time_s: float
    speed_cmd_m_s: float
    speed_m_s: float
    safety: str
    falls: int
    depth_u8: np.ndarray | None = None  # the policy's depth view, 0 = near, 255 = far or no return


def depth_to_u8(distance_m: np.ndarray, max_m: float) -> np.ndarray:
    d = np.where(np.isfinite(distance_m), distance_m, max_m)
    return (np.clip(d / max_m, 0.0, 1.0) * 255).astype(np.uint8)


class VideoWriter:
    def __init__(self, path: str | Path, fps: int, control_rate_hz: float):
        self.path, self.fps = str(path), fps
        self.every = max(1, int(round(control_rate_hz / fps)))
        self.poses: list[tuple[np.ndarray, np.ndarray, FrameFacts | None]] = []
        self.error: str | None = None
        self.frames_written = 0

    def maybe_capture(self, backend: Any, step: int, facts: FrameFacts | None = None) -> None:
        if step % self.every == 0:
            self.poses.append((backend.data.qpos.copy(), backend.data.qvel.copy(), facts))

    def write(self, backend: Any, *, show_progress: bool = True) -> str | None:
        """Render every kept pose into the file; returns the path, or None (``error`` says why)."""
        import imageio.v2 as imageio
        import mujoco

        from krabby.hal.backends.mujoco_backend import RenderingUnavailableError

        if not self.poses:
            self.error = "no frames"
            return None
        gif = self.path.lower().endswith(".gif")
        poses = self.poses[:: max(1, len(self.poses) // GIF_MAX_FRAMES)] if gif else self.poses
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        status = None
        if show_progress:
            from .status_line import StatusLine

            status = StatusLine(len(poses), "frames", label="video", file=sys.stderr, log_every_s=2.0)
        writer = None
        try:
            for i, (qpos, qvel, facts) in enumerate(poses):
                backend.data.qpos[:], backend.data.qvel[:] = qpos, qvel
                mujoco.mj_forward(backend.model, backend.data)
                try:
                    frame = backend.render_rgb(WIDTH_PX, HEIGHT_PX)
                except RenderingUnavailableError as e:
                    self.error = str(e)
                    print(f"video: not written, {e}", file=sys.stderr)
                    return None
                if writer is None:
                    writer = (imageio.get_writer(self.path, mode="I", duration=1000 / self.fps, loop=0) if gif
                              else imageio.get_writer(self.path, fps=self.fps, macro_block_size=16))
                writer.append_data(overlay(frame, facts) if facts is not None else frame)
                self.frames_written += 1
                if status is not None:
                    status.update(i + 1, self.path)
        finally:
            if writer is not None:
                writer.close()  # on Ctrl-C too: the frames so far make a playable file
            if status is not None:
                status.close()
        return self.path


def overlay(frame: np.ndarray, f: FrameFacts) -> np.ndarray:
    """Draw the run's facts on a frame: a text bar on top, the depth view bottom-right."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img, "RGBA")
    font = ImageFont.load_default(size=13)
    text = (f"t {f.sim_time_s:5.1f} s   cmd {f.speed_cmd_m_s:.2f} m/s   speed {f.speed_m_s:.2f} m/s   "
            f"{f.safety}   falls {f.falls}")
    draw.rectangle((0, 0, img.width, 20), fill=(0, 0, 0, 150))
    draw.text((6, 3), text, fill=(255, 255, 255, 255), font=font)
    if f.depth_u8 is not None:
        d = Image.fromarray(f.depth_u8).convert("RGB")
        scale = max(1, (img.width // 3) // d.width)
        d = d.resize((d.width * scale, d.height * scale), Image.NEAREST)
        x, y = img.width - d.width - 6, img.height - d.height - 6
        img.paste(d, (x, y))
        draw.rectangle((x - 1, y - 1, x + d.width, y + d.height), outline=(255, 255, 255, 255))
        draw.text((x + 3, y + 2), "policy depth", fill=(255, 255, 0, 255), font=font)
    return np.asarray(img)
