"""The one compute slot: at most one heavy forward pass at a time in the whole server.

A public Space has two CPU cores and a few GB of memory. Gradio runs different concurrency
groups at the same time (Fuse and compare in "compute", stability in its own group, so that
a long analysis never occupies Fuse's queue place), and two large forwards at once would add
up their activations. So every forward (and the full decode before it) runs inside
`COMPUTE.hold(...)`.

The slot is a ticket queue, not a bare Lock (which lets the thread that just released it take
it again at once). It is fair between clients first: a request names its `owner` (the client's
address), and only the waiting owners that have been served least in this busy spell may go
next, so one client with many requests (rotated session hashes, 32 handlers at once) delays
another client's request by at most one hold of their own. Within that, and for a class behind
one school address, it serves the request that serves the most visitors:
a computation's `weight` is the number of requests waiting for its result (a class of 30
pressing Fuse on the same step waits on one computation, `cache.Flights`), plus one for every
`AGE_S` seconds it has waited. So a result that ten students wait for goes before ten
students' own seeds, and among equals, and for any request that has waited long enough, the
order is first come, first served: no request waits forever behind popular ones. A stability
analysis holds it for one intervention at a time and queues again between them, so a Fuse
arriving during an analysis waits for at most one intervention, never for the whole run.

Every hold has a time budget (`HOLD_BUDGET_S`, IVFUSION_HOLD_BUDGET_S): the work inside calls
`check_budget(stage)` between its steps (each drawn-mask layer, each image decode), which
raises `OverBudget` (one line for the page) once the budget has passed. So no request holds
the slot for longer than the budget plus one step; each step is bounded by the Lab's pixel
budgets (a layer or an image of at most 50 MP; a forward at the working size), and a stability
analysis holds it one intervention at a time.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from typing import Callable, Iterator

# Seconds one hold may compute before its next step is refused. A Fuse of a 640x480 pair with a
# drawn mask takes 1-3 s on 2 CPU cores; a decode of a 50 MP image or mask layer about 1 s.
HOLD_BUDGET_S = 15.0
# Seconds of waiting that count as one more waiting visitor: about four 640x480 passes on 2
# cores, so a lone request is overtaken by a result two visitors wait for at most that long.
AGE_S = 2.0


class OverBudget(ValueError):
    """A request passed its compute time budget (shown on the page as one line)."""


class ComputeSlot:
    """A mutual-exclusion slot served fairly between owners, then by weight and age (see the
    module docstring), with a short record of its holders.

    `hold(name, weight, owner)` is a context manager; `waiting` is the number of requests queued for
    it and `holder` the name of the current holder (None when free): the page says when a
    request waits. `history` keeps (name, asked, entered, left) of the last `keep` holds,
    perf_counter seconds: with `asked`, the holds that went first while a request waited can be
    counted.
    """

    def __init__(self, keep: int = 256, budget_s: float = HOLD_BUDGET_S, age_s: float = AGE_S):
        self.budget_s = float(budget_s)  # app.build_demo sets it from IVFUSION_HOLD_BUDGET_S
        self.age_s = float(age_s)
        self._owner: int | None = None  # the holding thread
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._waiting: dict[int, tuple[float, Callable[[], int] | None, str | None]] = {}  # ticket -> (asked, weight, owner)
        self._served: dict[str | None, int] = {}  # holds granted per owner since the slot was last idle
        self._next: int | None = None  # the ticket chosen to enter next
        self.holder: str | None = None
        self.history: collections.deque[tuple[str, float, float, float]] = collections.deque(maxlen=keep)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _least_served(self) -> int:
        """The fewest holds any waiting owner has had in this busy spell (the lock held)."""
        return min(self._served.get(o, 0) for _, _, o in self._waiting.values())

    def _choose(self) -> None:
        """Pick the next holder among the waiting (called with the lock held, the slot free)."""
        if not self._waiting:
            self._next = None
            self._served.clear()  # idle: a new busy spell starts even
            return
        now = time.perf_counter()
        least = self._least_served()

        def score(ticket: int) -> tuple[float, int]:
            asked, weight, _ = self._waiting[ticket]
            return (max(1, weight()) if weight else 1) + (now - asked) / self.age_s, -ticket

        fair = [t for t, (_, _, o) in self._waiting.items() if self._served.get(o, 0) == least]
        self._next = max(fair, key=score)

    def acquire(self, name: str = "compute", weight: Callable[[], int] | None = None, owner: str | None = None) -> float:
        """Wait for the slot; returns the seconds waited. weight: the number of requests this
        computation answers, read whenever the next holder is chosen (default 1). owner: the
        client it is for (None: the Lab's own work and anything unnamed, one owner)."""
        t0 = time.perf_counter()
        with self._cond:
            ticket = next(self._tickets)
            if owner not in self._served and self._waiting:
                # a newcomer joins level with the least-served waiting owner, not ahead of everyone
                self._served[owner] = self._least_served()
            self._waiting[ticket] = (t0, weight, owner)
            try:
                if self.holder is None and self._next is None:
                    self._choose()
                while self.holder is not None or self._next != ticket:
                    self._cond.wait()
            except BaseException:
                del self._waiting[ticket]
                if self._next == ticket:
                    self._choose()
                self._cond.notify_all()
                raise
            del self._waiting[ticket]
            self._next = None
            self._served[owner] = self._served.get(owner, 0) + 1
            self.holder, self._owner = name, threading.get_ident()
            self._asked, self._entered = t0, time.perf_counter()
        return self._entered - t0

    def release(self) -> None:
        with self._cond:
            if self.holder is None:
                raise RuntimeError("the compute slot is not held")
            self.history.append((self.holder, self._asked, self._entered, time.perf_counter()))
            self.holder, self._owner = None, None
            self._choose()
            self._cond.notify_all()

    def check_budget(self, stage: str) -> None:
        """Called by the holder between steps: raises OverBudget once its hold has lasted
        longer than `budget_s` (a no-op in a thread that does not hold the slot)."""
        if self._owner != threading.get_ident():
            return
        held = time.perf_counter() - self._entered
        if held > self.budget_s:
            raise OverBudget(f"this request passed its {self.budget_s:g} s compute budget ({held:.1f} s, at {stage}); "
                             "send fewer or smaller drawn-mask layers, or smaller images")

    @contextlib.contextmanager
    def hold(self, name: str = "compute", weight: Callable[[], int] | None = None,
             owner: str | None = None) -> Iterator[float]:
        """Hold the slot for the block; yields the seconds waited for it. weight, owner: as `acquire`."""
        waited = self.acquire(name, weight, owner)
        try:
            yield waited
        finally:
            self.release()


class ChunkedHold:
    """How a long job (the stability analysis) shares the slot: it holds the slot for one
    step, and `between()` (called between steps) lets anyone queued go first, then queues
    again. `between()` returns True when the job must stop instead: `cancel` is set, or the
    `deadline` (perf_counter seconds) has passed after at least `min_steps` steps; then
    `reason` is "cancelled" or "time budget". cancel: an Event or a callable.
    """

    def __init__(self, slot: ComputeSlot, name: str, cancel=None, deadline: float | None = None, min_steps: int = 1):
        # cancel: a threading.Event, or a callable returning True to stop
        self.cancel = cancel.is_set if hasattr(cancel, "is_set") else cancel
        self.slot, self.name, self.deadline, self.min_steps = slot, name, deadline, min_steps
        self.held, self.steps, self.reason = False, 0, None

    def __enter__(self) -> "ChunkedHold":
        self.slot.acquire(self.name)
        self.held = True
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slot.release()

    def step_done(self) -> None:
        self.steps += 1

    def between(self) -> bool:
        self.release()
        if self.cancel is not None and self.cancel():
            self.reason = "cancelled"
        elif self.deadline is not None and self.steps >= self.min_steps and time.perf_counter() >= self.deadline:
            self.reason = "time budget"
        if self.reason:
            return True
        self.slot.acquire(self.name)
        self.held = True
        return False


COMPUTE = ComputeSlot()  # the process-wide slot every Lab forward holds


def check_budget(stage: str) -> None:
    """`COMPUTE.check_budget`: the steps of the Lab's work call it between steps."""
    COMPUTE.check_budget(stage)
