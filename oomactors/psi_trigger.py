"""PSI triggers (psi_trigger_create / update_triggers): a threshold on stall growth within
a sliding window, polled by the waiting daemon.  :mod:`oomactors.psi` re-exports them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .psi_avgs import NSEC_PER_USEC, UPDATES_PER_WINDOW, STATE_NAMES, PSI_POLL

if TYPE_CHECKING:  # pragma: no cover
    from .psi import PsiGroup


# --- triggers (psi_trigger_create / update_triggers) ----------------------------------------
class PsiTrigger:
    """A threshold on stall growth within a sliding window ("some 150000 1000000": 150 ms
    of some-stall within 1 s).  An event fires at most once per window."""

    def __init__(self, group: PsiGroup, state: int, threshold_us: int, window_us: int, now_j: int) -> None:
        self.group = group
        self.state = state
        self.threshold = threshold_us * NSEC_PER_USEC
        self.win_size = window_us * NSEC_PER_USEC
        self.last_event_time = 0
        self.pending_event = False
        self.events = 0
        now = now_j * group.jiffy_ns
        group.advance(now_j)
        group.collect(PSI_POLL, now)
        total = group.total[PSI_POLL][state]
        self._window_reset(now, total, 0)
        self.polled_total = total

    def __repr__(self) -> str:
        return (f"<PsiTrigger {self.group.path} {STATE_NAMES[self.state]} "
                f"{self.threshold // NSEC_PER_USEC} {self.win_size // NSEC_PER_USEC}>")

    @property
    def poll_period(self) -> int:
        """The poller's period for this trigger, ns (window / UPDATES_PER_WINDOW)."""
        return self.win_size // UPDATES_PER_WINDOW

    def _window_reset(self, now: int, value: int, prev_growth: int) -> None:
        self.start_time = now
        self.start_value = value
        self.prev_growth = prev_growth

    def window_update(self, now: int, value: int) -> int:
        """The growth over the last window, the unfinished part of it extrapolated from the
        previous window's growth."""
        elapsed = now - self.start_time
        growth = value - self.start_value
        if elapsed > self.win_size:
            self._window_reset(now, value, growth)
        else:
            remaining = self.win_size - elapsed
            growth += self.prev_growth * remaining // self.win_size
        return growth

    def update(self, now: int) -> bool:
        """One pass of update_triggers for this trigger (the group's PSI_POLL total must
        have been collected at ``now``).  True: an event fires now."""
        total = self.group.total[PSI_POLL][self.state]
        new_stall = total != self.polled_total
        if not new_stall and not self.pending_event:
            return False
        if new_stall:
            self.polled_total = total
            growth = self.window_update(now, total)
            if not self.pending_event:
                if growth < self.threshold:
                    return False
                self.pending_event = True
        # at most one event per window
        if now < self.last_event_time + self.win_size:
            return False
        self.last_event_time = now
        self.pending_event = False
        self.events += 1
        return True


def poll_triggers(triggers: Iterable[PsiTrigger], now_j: int) -> list[PsiTrigger]:
    """One run of the poll worker over these triggers at jiffy ``now_j``: collect each
    group's PSI_POLL times once, then update its triggers.  Returns those that fired."""
    fired = []
    seen: set[int] = set()
    for t in triggers:
        g = t.group
        if id(g) not in seen:
            seen.add(id(g))
            g.advance(now_j)
            g.collect(PSI_POLL, now_j * g.jiffy_ns)
        if t.update(now_j * g.jiffy_ns):
            fired.append(t)
    return fired
