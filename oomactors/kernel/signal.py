"""Signals sent from user space: kill(2) with SIGTERM or SIGKILL (kernel/signal.c).

A task group's SIGTERM disposition comes from its config (``on_sigterm``,
``sigterm_exit_delay``) and lives in its :class:`~oomactors.kernel.task.Signal`:

* ``default`` (SIG_DFL; ``on_sigterm = "exit"`` without a delay): SIGTERM's default action
  kills the process.  complete_signal() sees a fatal signal nobody handles and turns it
  into a group exit at once -- SIGKILL to every thread, killable sleeps end -- so it
  behaves exactly like SIGKILL (only the tracepoint says 15);
* ``handler`` (``on_sigterm = "exit"`` with ``sigterm_exit_delay``): a handler that cleans
  up for that long and then exits.  The signal goes to one thread; an interruptible sleep
  ends with EINTR and the handler runs on the way back to user space
  (:func:`oomactors.actors.user.sigterm_handler`); while it runs, SIGTERM is blocked;
* ``ignore`` (SIG_IGN): prepare_signal() drops it.

SIGKILL cannot be caught or ignored.  A process already exiting (SIGNAL_GROUP_EXIT)
drops anything but SIGKILL.  Every send emits ``signal:signal_generate`` with the
tracepoint's result: 0 delivered, 1 ignored, 2 already pending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .task import Task

SIGKILL = 9
SIGTERM = 15
SIGNAMES = {SIGKILL: "SIGKILL", SIGTERM: "SIGTERM"}

ESRCH = 3
EAGAIN = 11
EINVAL = 22

# enum trace_signal_result (include/trace/events/signal.h)
TRACE_SIGNAL_DELIVERED = 0
TRACE_SIGNAL_IGNORED = 1
TRACE_SIGNAL_ALREADY_PENDING = 2


def find_process(m: "Machine", pid: int) -> "Task | None":
    """find_vpid + pid_task(PIDTYPE_TGID): the live process with this tgid."""
    t = m.tasks.get(pid)
    if t is None or t.tgid != pid:
        return None
    leader = t.signal.threads[0]
    return leader if leader in m.proc_list else None


def kill_pid(m: "Machine", sender: "Task | None", pid: int, sig: int) -> int:
    """kill(pid, sig): 0, or -ESRCH (no such process), -EINVAL (a signal not modelled)."""
    if sig not in SIGNAMES:
        return -EINVAL
    p = find_process(m, pid)
    if p is None:
        return -ESRCH
    group_send_sig_info(m, sig, p)
    return 0


def group_send_sig_info(m: "Machine", sig: int, p: "Task") -> int:
    """Send ``sig`` to process ``p``; returns the signal_generate result."""
    sigs = p.signal
    live = sigs.live_threads()
    if sig == SIGKILL:
        return _fatal(m, sig, p, live)
    # prepare_signal: a dying process takes nothing but SIGKILL; SIG_IGN drops it
    if sigs.group_exit or not live or sigs.sigterm_action == "ignore":
        m.emit("signal:signal_generate", p.pid, sig, p.comm, 1, TRACE_SIGNAL_IGNORED)
        return TRACE_SIGNAL_IGNORED
    if sigs.sigterm_action == "default":
        return _fatal(m, sig, p, live)
    # a handler: pending already, or blocked while its handler runs
    if sigs.in_sigterm_handler or any(t.sigterm for t in live):
        m.emit("signal:signal_generate", p.pid, sig, p.comm, 1, TRACE_SIGNAL_ALREADY_PENDING)
        return TRACE_SIGNAL_ALREADY_PENDING
    # complete_signal: the main thread if it can take it, else another live thread
    t = live[0]
    t.sigterm = True
    m.sched.signal_wake(t)
    m.emit("signal:signal_generate", p.pid, sig, p.comm, 1, TRACE_SIGNAL_DELIVERED)
    return TRACE_SIGNAL_DELIVERED


def _fatal(m: "Machine", sig: int, p: "Task", live: list) -> int:
    """SIGKILL, or a fatal signal without a handler: the whole group exits."""
    sigs = p.signal
    if sigs.group_exit and all(t.sigkill for t in live):
        m.emit("signal:signal_generate", p.pid, sig, p.comm, 1, TRACE_SIGNAL_ALREADY_PENDING)
        return TRACE_SIGNAL_ALREADY_PENDING
    sigs.group_exit = True
    for t in live:
        t.sigkill = True
        m.sched.signal_wake(t)
    m.emit("signal:signal_generate", p.pid, sig, p.comm, 1, TRACE_SIGNAL_DELIVERED)
    return TRACE_SIGNAL_DELIVERED
