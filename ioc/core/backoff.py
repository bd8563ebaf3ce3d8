"""Exponential backoff with full jitter, as a tiny object whose constants tests can patch."""

from __future__ import annotations

import random


class Backoff:
    initial_s = 0.1
    maximum_s = 10.0
    factor = 2.0

    def __init__(self) -> None:
        self._next = self.initial_s

    def next_delay(self) -> float:
        """Delay before the next attempt; grows until ``maximum_s``."""
        delay = random.uniform(0, self._next)
        self._next = min(self._next * self.factor, self.maximum_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s
