"""Ctrl-C and closed pipes for the command line: exit 130 with one line, or exit 0 quietly.

Why it is built this way (the failures it replaces are in issue 9):

* Python's default SIGINT handler raises :class:`KeyboardInterrupt` at whatever bytecode
  is running.  Inside a simulation that is the middle of an actor: the task group then
  cancels the others, but an actor that is the last one running never reaches a real
  checkpoint (the clock, advanced because it parked, wakes it again at once), so the run
  spun at 100 % CPU and kept writing its trace.  While a simulation may be running, the
  handler here therefore only sets :mod:`oomactors.interrupt`'s flag; the engine polls it
  each time the clock would advance and ends the run at the current virtual time with one
  ``sim:run_end`` event whose reason is ``"interrupted"``.
* Commands that do not simulate (``trace show``, ``replay``, ``validate``, and the waiting
  parent of a parallel sweep) are safe to unwind anywhere: there SIGINT raises at once.
* The promise is "exit within 2 s".  If the flag has not ended the command after
  :data:`GRACE` seconds (boot of a huge machine, a long stretch without a clock advance),
  or on a second Ctrl-C, :class:`KeyboardInterrupt` is raised in the main thread (the flag
  being set, no actor can spin any more).  If even that has not ended the process after
  :data:`HARD` seconds (stuck in a C call, or a cluster that takes long to shut down), a
  watchdog thread prints the line, if not printed yet, and leaves with ``os._exit(130)``.
* Writing into a closed pipe (``oomactors trace show x | head -1``) is the reader saying it
  has seen enough: exit 0 without a word (or the status of a result already known:
  :func:`result_status`), stdout pointed at /dev/null so that the final flush does not
  complain either.

The module imports nothing heavy at the top: :func:`main` installs the handler before the
rest of oomactors (click, trio, rich) is imported, so a Ctrl-C during start-up is handled.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import signal
import stat
import sys
import threading
from typing import Any, Iterator

from . import interrupt

EXIT_INTERRUPTED = 130
GRACE = 1.0   # s after the first Ctrl-C before KeyboardInterrupt is raised in the main thread
HARD = 1.75   # s after the first Ctrl-C before the process leaves, whatever it is doing

_deferred = 0           # > 0 while a simulation may run in this thread: only set the flag
_in_command = 0         # > 0 while a command runs (outside: start-up, argument parsing)
_said = threading.Lock()  # held once the one line has been printed
_watchdog: threading.Timer | None = None
_installed = False
_pipe_status = 0        # the exit status of a command whose stdout closed (see result_status)
_sigint = False         # a real Ctrl-C came (not only watch_stdout's request)
_stdout_gone = False    # watch_stdout saw the reader of stdout go
_watching = False


class Interrupted(KeyboardInterrupt):
    """KeyboardInterrupt with what to add to the one line (``" at t=1.234s; trace ..."``)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


def _on_sigint(signum: int, frame: Any) -> None:
    global _sigint
    first = not _sigint
    _sigint = True
    interrupt.request()
    if first:
        _arm()
    if not _in_command:
        # start-up or click's argument parsing: nothing is open yet, and click would turn a
        # KeyboardInterrupt into "Aborted!" and exit 1
        _hard_exit()
    if not _deferred or not first:
        raise KeyboardInterrupt


def _on_alarm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _arm() -> None:
    """Start the escalation clock of the first Ctrl-C (see the module docstring)."""
    global _watchdog
    logging = sys.modules.get("logging")
    if logging is not None:
        # asyncio logs the task group a KeyboardInterrupt unwound ("unhandled exception
        # during asyncio.run() shutdown", a traceback): the user asked for that unwinding
        logging.getLogger("asyncio").disabled = True
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, GRACE)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not the main thread / no SIGALRM
        pass
    _watchdog = threading.Timer(HARD, _hard_exit)
    _watchdog.daemon = True
    _watchdog.start()


def _hard_exit() -> None:
    say("")
    os._exit(EXIT_INTERRUPTED)


def say(detail: str) -> None:
    """Print the one ``oomactors: interrupted`` line, once per process."""
    if _said.acquire(blocking=False):
        with contextlib.suppress(OSError, ValueError):
            os.write(2, f"oomactors: interrupted{detail}\n".encode())


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """While inside, Ctrl-C only sets the flag (a simulation may be running)."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def install() -> None:
    """Take over SIGINT for the command line (called once, as early as possible)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    # a background job of a non-interactive shell starts with SIGINT ignored: keep that
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    signal.signal(signal.SIGINT, _on_sigint)
    _installed = True


def _quiet_stdout() -> None:
    """The reader of stdout has gone: drop whatever is still buffered for it."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _stdout_failed(exc: OSError) -> None:
    """If standard output is what failed (a full disk, /dev/full, an I/O error), that is
    where the output was sent, not a bug: one line and exit 2, as for a --trace file that
    cannot be written.  Told apart from other files' errors by the frame that raised it:
    it was writing to stdout (``file``, ``out.write``, ...)."""
    tb = exc.__traceback__
    if tb is None:
        return
    while tb.tb_next is not None:
        tb = tb.tb_next
    outs = {id(f) for f in (sys.stdout, sys.__stdout__) if f is not None}
    outs |= {id(f.buffer) for f in (sys.stdout, sys.__stdout__) if hasattr(f, "buffer")}
    if not any(id(v) in outs or id(getattr(v, "__self__", None)) in outs
               for v in tb.tb_frame.f_locals.values()):
        return
    _quiet_stdout()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"oomactors: error: standard output: {exc.strerror or exc}\n")
        sys.stderr.flush()
    raise SystemExit(2) from None


def _flush_stdout() -> None:
    """What is still buffered for stdout goes out while a failure can still be reported."""
    out = sys.stdout
    out.flush()


def result_status(code: int) -> None:
    """The command's outcome is known and its exit status is ``code`` (explore: 1, a
    violation was found and its reproducer written): a reader that closes stdout while the
    report is printed must not turn it into 0.  (Without this, ``explore ... | head -1``
    gave 0 or 1 depending on when head left.)"""
    global _pipe_status
    _pipe_status = code


def _piped_stdout() -> int | None:
    """The descriptor of standard output if it is a pipe or a socket (else None)."""
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _reader_gone() -> bool:
    """Has the reader of a piped stdout gone, now?  (As :func:`watch_stdout` waits for it.)"""
    fd = _piped_stdout()
    if fd is None:
        return False
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def watch_stdout() -> None:
    """A simulation whose stdout is a pipe or a socket ends when its reader goes away
    (``oomactors run long.toml | head -1``), not at its next write, which may be hours of
    simulated silence later.  A thread waits in poll(2) for the error the kernel reports on
    a pipe without readers, then asks the run to stop as Ctrl-C does (the engine's flag,
    polled where it polls Ctrl-C: no cost per event); the command then ends quietly."""
    global _watching
    fd = _piped_stdout()
    if _watching or fd is None:
        return
    _watching = True

    def watch() -> None:
        global _stdout_gone
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: only POLLERR/POLLHUP/POLLNVAL come back
        while True:
            for _, events in poller.poll():
                if events & select.POLLNVAL:
                    return  # fd closed in this process
                if events & (select.POLLERR | select.POLLHUP):
                    _stdout_gone = True
                    interrupt.request()
                    return

    threading.Thread(target=watch, name="oomactors-stdout", daemon=True).start()


def is_broken_pipe(exc: BaseException | None) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn Ctrl-C into exit 130 with one line, a closed stdout into a quiet exit 0.

    Once Ctrl-C was pressed, whatever unwinds the command (a KeyboardInterrupt raised in
    a library's internals may come out wrapped in another error) is the interruption."""
    try:
        yield
        _flush_stdout()
    except SystemExit as exc:
        # rich meets a closed stdout with SystemExit(1), raised while handling the error;
        # click too (--help, --version), raised after it, where only stdout itself can tell
        if exc.code == 1 and (is_broken_pipe(exc.__context__) or _reader_gone()):
            _quiet_stdout()
            raise SystemExit(_pipe_status) from None
        if exc.code == 1 and isinstance(exc.__context__, OSError):
            _stdout_failed(exc.__context__)
        raise
    except BaseException as exc:  # noqa: BLE001
        if is_broken_pipe(exc) and not interrupt.requested():
            _quiet_stdout()
            raise SystemExit(_pipe_status) from None
        if isinstance(exc, OSError) and not interrupt.requested():
            _stdout_failed(exc)
        if (isinstance(exc, KeyboardInterrupt) or interrupt.requested()) and _stdout_gone and not _sigint:
            _quiet_stdout()  # watch_stdout stopped the run: the reader has gone
            raise SystemExit(_pipe_status) from None
        if isinstance(exc, KeyboardInterrupt) or interrupt.requested():
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
            say(exc.detail if isinstance(exc, Interrupted) else "")
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise


def stop_if_interrupted(result: Any) -> None:
    """A run that Ctrl-C ended (reason "interrupted") ends the command: exit 130.  (The
    flag too: a checker may have cut the run short at its end, after the interrupt.)"""
    if result is not None and result.reason == "interrupted":
        raise Interrupted(f" at t={result.end_jiffies / result.hz:.3f}s")
    interrupt.check()


def run_command(invoke: Any) -> Any:
    """Run one command of the click group: the flag starts clear, the handler is ours."""
    global _in_command, _sigint, _stdout_gone
    interrupt.clear()
    _sigint = _stdout_gone = False
    result_status(0)
    _in_command += 1
    try:
        with handled():
            return invoke()
    finally:
        _in_command -= 1
        if interrupt.requested():
            # the command is over: its own line is out; keep the watchdog for the exit path
            with contextlib.suppress(ValueError, OSError, AttributeError):
                signal.setitimer(signal.ITIMER_REAL, 0)


def main(prog_name: str | None = None) -> None:
    """The ``oomactors`` console script: handler first, then the rest of oomactors
    (``prog_name``: what errors call the program; ``python -m oomactors`` says oomactors)."""
    try:
        with handled():
            install()
            from .cli import main as cli
    except SystemExit as exit_:
        sys.exit(exit_.code)
    try:
        with handled():  # --help and --version print before any command runs
            cli(prog_name=prog_name)
    except SystemExit as exit_:
        if exit_.code == EXIT_INTERRUPTED and interrupt.requested():
            # our part is done (the line printed, the trace closed, workers stopped): leave
            # now, not through the interpreter's shutdown, where other libraries' exit
            # hooks (a Dask client saying goodbye, a pool joining) can outlast the 2 s
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(EXIT_INTERRUPTED)
        raise
