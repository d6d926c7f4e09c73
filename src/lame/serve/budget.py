"""A memory budget for requests in flight: request bodies while they are read and parsed, then the
decoded images they hold until they are answered (``--max-inflight-bytes``)."""

from __future__ import annotations

import threading


class Budget:
    """``limit`` bytes shared by every request; ``hold()`` gives one request's :class:`Reservation`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def hold(self) -> "Reservation":
        return Reservation(self)

    def _change(self, old: int, new: int) -> bool:
        with self._lock:
            # growing is refused past the limit, except for a request alone (so any one request can run)
            if new > old and self.used - old > 0 and self.used - old + new > self.limit:
                return False
            self.used += new - old
            return True


class Reservation:
    """What one request holds of a :class:`Budget`."""

    def __init__(self, budget: Budget):
        self.budget, self.bytes = budget, 0

    def set(self, n: int) -> bool:
        """Hold ``n`` bytes instead of what is held now; False (and nothing changed) if the budget
        cannot grow that far."""
        if not self.budget._change(self.bytes, n):
            return False
        self.bytes = n
        return True

    def release(self) -> None:
        self.set(0)
