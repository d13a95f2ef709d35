"""A run's status line that works on a terminal and in a log.

On a terminal (rich decides: a TTY that is not "dumb") it is one live line with a progress bar,
``t / total``; anywhere else (CI, ``tee``, a file) it prints one ordinary line every
``log_every_s`` seconds, so a log gets readable lines instead of one line of carriage returns.
"""

from __future__ import annotations

import time
from typing import TextIO


class StatusLine:
    def __init__(self, total: float | None, unit: str = "s", *, label: str = "t", log_every_s: float = 5.0,
                 file: TextIO | None = None, force_terminal: bool | None = None):
        from rich.console import Console

        self.console = Console(file=file, force_terminal=force_terminal, highlight=False, soft_wrap=True)
        self.total, self.unit, self.label = total, unit, label
        self.log_every_s = log_every_s
        self._next_log = time.monotonic() + log_every_s
        self._progress = self._task = None
        self._last_text = ""
        self._done_value = 0.0
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.fields[where]}"), BarColumn(bar_width=20),
                                      TextColumn("{task.fields[text]}"), console=self.console, transient=False,
                                      refresh_per_second=4)
            self._task = self._progress.add_task("", total=total, where=self._where(0.0), text="")
            self._progress.start()

    @property
    def live(self) -> bool:
        return self._progress is not None

    def _where(self, value: float) -> str:
        shown = f"{value:5.1f}" if isinstance(self.total, float) or self.total is None else f"{int(value):5d}"
        return f"{self.label}={shown}{'' if self.total is None else f'/{self.total:g}'} {self.unit}"  # None: open-ended

    def update(self, value: float, text: str) -> None:
        self._last_text, self._done_value = text, value
        if self._progress is not None:
            self._progress.update(self._task, completed=value, where=self._where(value), text=text)
            return
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + self.log_every_s
            self.console.print(f"{self._where(value)}  {text}")

    def close(self, final_value: float | None = None) -> None:
        """Stop the live line (it stays on screen); in a log, print the last state once more."""
        if final_value is not None:
            self._done_value = final_value
            if self._progress is not None:
                self._progress.update(self._task, completed=final_value, where=self._where(final_value))
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self._last_text:
            self.console.print(f"{self._where(self._done_value)}  {self._last_text}")
            self._last_text = ""
