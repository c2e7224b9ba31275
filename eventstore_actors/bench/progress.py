"""A progress bar on stderr (tqdm when installed), one tick per finished step."""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO = sys.stderr) -> None:
        self._bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            print("(pip install tqdm for a progress bar)", file=stream)
            return
        self._bar = tqdm(total=total, file=stream, unit="step", dynamic_ncols=True, leave=False)

    def begin(self, description: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(description, refresh=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def write(self, message: str) -> None:
        """A line on stderr that does not garble the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
