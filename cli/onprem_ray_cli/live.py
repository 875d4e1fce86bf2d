"""Showing a run's progress as it goes: on a terminal one line per host, redrawn in place;
otherwise (a log, a pipe) a line each time a host moves to another step."""

from __future__ import annotations

import sys
from typing import TextIO

from onprem_ray_cli.progress import Progress, render_line


class LiveView:
    def __init__(self, progress: Progress, stream: TextIO = sys.stdout,
                 redraw: bool | None = None) -> None:
        self.progress = progress
        self.stream = stream
        self.redraw = stream.isatty() if redraw is None else redraw
        self.drawn = 0  # lines of the block on screen (redraw mode)

    def show(self, changed: list[str]) -> None:
        if not changed:
            return
        lines = self.progress.hosts
        width = max(len(host) for host in lines)
        if not self.redraw:
            for host in changed:
                self.stream.write(render_line(lines[host], width) + "\n")
        else:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")  # back to the block's first line
            for line in lines.values():
                self.stream.write("\x1b[2K" + render_line(line, width) + "\n")
            self.drawn = len(lines)
        self.stream.flush()
