"""Linux 2.4's out_of_memory() gate (mm/oom_kill.c of 2.4.10-2.4.2x; Gorman ch. 13).

Before 2.6.10 the kernel did not trust a single failed reclaim.  out_of_memory() kept four
statics -- the first and last failure, a failure count, the last kill -- and only called
oom_kill() when every test of the checklist passed:

1. free swap left?                                  yes -> not OOM
2. more than 5 s since the previous failure?        yes -> not OOM (start a new burst)
3. failing for less than 1 s?                       yes -> not OOM
4. fewer than 10 failures in this burst?            yes -> not OOM
5. a kill within the last 5 s?                      yes -> not OOM (let the victim exit)

The seed document lists exactly these.  Callers treat "not OOM" as "try again".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .signal import SIGKILL, SIGTERM, group_send_sig_info

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task


class OomState24:
    """The statics of 2.4's out_of_memory()."""

    def __init__(self) -> None:
        self.first = 0
        self.last = 0
        self.count = 0
        self.lastkill = 0   # jiffies start at 0: no kill in the first 5 s of uptime


def out_of_memory_checklist(m: "Machine") -> str | None:
    """Run the checklist; None means "really OOM: kill", else the reason it is not."""
    st: OomState24 = m.oom24
    hz = m.hz
    if m.swap_free > 0:
        return "swap_left"
    now = m.now
    since = now - st.last
    st.last = now
    if since > 5 * hz:
        st.first, st.count = now, 0   # a new burst of failures starts here
        return "first_failure_in_5s"
    if now - st.first < hz:
        return "failing_less_than_1s"
    st.count += 1
    if st.count < 10:
        return "fewer_than_10_failures"
    if now - st.lastkill < 5 * hz:
        return "killed_within_5s"
    st.lastkill = now
    st.first, st.count = now, 0       # reset after a kill
    return None


def oom_kill_task_24(m: "Machine", p: "Task") -> None:
    """2.4's oom_kill_task: a process with hardware access (CAP_SYS_RAWIO) gets SIGTERM, the
    rest SIGKILL, both by force_sig -- an ignored SIGTERM is set back to its default action
    (so it still kills), a handler still runs.  init drops both (its actor ignores them)."""
    if "CAP_SYS_RAWIO" in p.caps:
        sigs = p.signal
        if sigs.sigterm_action == "ignore":
            sigs.sigterm_action = "default"  # force_sig_info: SIG_IGN becomes SIG_DFL
        group_send_sig_info(m, SIGTERM, p)
    else:
        group_send_sig_info(m, SIGKILL, p)
