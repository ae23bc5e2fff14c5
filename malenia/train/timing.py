"""Where a training step's time goes: `PhaseTimer` adds up wall time per named phase (`malenia bench train`).

Phases nest (matching runs inside the forward): a phase's own time excludes its children's. On CUDA each
boundary synchronises the device, so a phase is charged with its kernels rather than with whichever later
call waits for them (the bench's steps are therefore slightly slower than the training loop's).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class PhaseTimer:
    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._children: list[float] = []  # per open phase, the time of the phases nested in it

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._sync()
        start = time.perf_counter()
        self._children.append(0.0)
        try:
            yield
        finally:
            self._sync()
            spent = time.perf_counter() - start
            children = self._children.pop()
            self.seconds[name] += spent - children
            if self._children:
                self._children[-1] += spent

    def wrap(self, name: str, fn):
        """`fn` timed as phase `name` whenever it is called."""
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed


@contextlib.contextmanager
def untimed(name: str):
    yield
