"""Run independent units of work in this process, on this machine's cores, or on Dask.

``compare`` cuts its work into (config, policy, seed) units and ``explore`` into (search,
run index) units; each unit is a pure function of what it is given (a config, a seed, a
schedule), so where it runs cannot change what it returns.  :meth:`Sweep.map` returns the
results in the order of the units, whatever order they finish in, and an error is the
one of the *first* failing unit in that order: the callers' output is byte-identical for
any ``--jobs`` and any cluster.

Ctrl-C: the parent polls :mod:`oomactors.interrupt` while it waits, then cancels what has
not started and stops what has (local worker processes are terminated; a Dask cluster's
workers are told to stop their runs at the next clock advance, and a ``local:N`` cluster
is shut down).  Local workers ignore SIGINT themselves: a terminal sends it to the whole
process group, and only the parent decides (and prints the one line).

Dask is optional (``pip install 'oomactors[dask]'``); see docs/sweeps.md.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from typing import Any, Callable, Sequence

from . import interrupt
from .errors import InputError

POLL_S = 0.05  # how often a waiting parent looks at the Ctrl-C flag


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_jobs(jobs: int | None) -> tuple[int, str | None]:
    """``--jobs``: default the number of cores; more than that is capped (with a note to
    print); 0 or negative is refused."""
    n = cores()
    if jobs is None:
        return n, None
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, not {jobs}")
    if jobs > n:
        return n, f"--jobs {jobs} capped at {n}, the number of cores"
    return jobs, None


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """``--cluster``: ``local:N`` (a LocalCluster of N worker processes) or a scheduler's
    address (``tcp://host:8786``, ``host:8786``)."""
    spec = spec.strip()
    if spec.startswith("local:"):
        count = spec[len("local:"):]
        if not count.isdigit() or not 1 <= int(count) <= 1024:
            raise InputError(f"--cluster {spec}: local:N needs N worker processes, 1 to 1024")
        return "local", int(count)
    forms = "expected tcp://host:port, host:port or local:N"
    if not spec or any(c.isspace() for c in spec):
        raise InputError(f"--cluster {spec!r}: {forms}")
    from urllib.parse import urlsplit
    try:  # the scheme is Dask's (tcp://, tls://, ...); a host and a port are needed whatever it is
        url = urlsplit(spec if "://" in spec else f"tcp://{spec}")
        port = url.port
    except ValueError:
        port = None
    if not url.scheme or not url.hostname or port is None or not 1 <= port <= 65535 or url.path not in ("", "/"):
        raise InputError(f"--cluster {spec}: {forms}")
    return "address", spec


CONNECT_S = 10  # s to connect to a --cluster ADDRESS and hear who it is


def probe_scheduler(address: str, timeout: float = CONNECT_S) -> None:
    """Ask ``address`` who it is (Dask's ``identity`` call), all within ``timeout``: one
    line of InputError unless a Dask scheduler answers.  The Client alone waited forever
    for a listener that never answers, and met an HTTP server or garbage with a
    MemoryError or a ValueError from its frame decoder.

    One connection attempt, through the address's own Dask transport, not Dask's
    ``connect``: that one retries every failure, a refused connection included, until its
    timeout, so an address where nothing listens took the whole 10 s to fail.  A refusal
    (or a host that does not resolve) is final at once; a silent listener is still bounded
    by ``timeout``.  The handshake that ``connect`` would do comes first, as the scheduler
    expects it."""
    import asyncio

    from distributed.comm import registry
    from distributed.comm.addressing import parse_address
    from distributed.security import Security

    async def ask() -> Any:
        scheme, loc = parse_address(address)
        args = Security().get_connection_args("client")  # the Dask config's, as the Client's
        comm = await registry.get_backend(scheme).get_connector().connect(loc, deserialize=True, **args)
        try:
            await comm.write(comm.handshake_info())
            await comm.read()
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        ident = asyncio.run(asyncio.wait_for(ask(), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise InputError(f"--cluster {address}: no answer from a Dask scheduler within {timeout:g} s") from None
    except OSError as err:
        raise InputError(f"--cluster {address}: cannot connect: {_reason(err)}") from None
    except Exception as err:  # noqa: BLE001 - a decoder meeting another protocol
        if address.startswith("tls://") and "ssl" in str(err).lower():
            raise InputError(f"--cluster {address}: tls:// needs Dask's TLS settings "
                             "(distributed.comm.tls in the Dask config)") from None
        raise InputError(f"--cluster {address}: not a Dask scheduler (it does not speak "
                         f"Dask's protocol: {type(err).__name__})") from None
    kind = ident.get("type") if isinstance(ident, dict) else None
    if kind != "Scheduler":
        what = f"a Dask {kind}" if isinstance(kind, str) else "something else"
        raise InputError(f"--cluster {address}: not a Dask scheduler (it answers as {what})")


def _reason(err: BaseException) -> str:
    """What the system said (``Connection refused``), not Dask's wrapping of it (which
    names a connector object): the first error in the chain that carries a strerror."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(err)


def subprocess_timeout() -> type[BaseException]:
    import subprocess
    return subprocess.TimeoutExpired


def _serve_local_cluster(n: int) -> None:
    """The helper process of ``--cluster local:N``: start the cluster, print its address,
    keep it until our stdin closes (the parent is done, or gone)."""
    import logging

    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    print(cluster.scheduler_address, flush=True)
    while sys.stdin.buffer.read(4096):  # until EOF; what is read is dropped
        pass
    cluster.close(timeout=5)


def _quiet_resource_tracker() -> None:
    """multiprocessing's resource tracker (a helper process writing to our stderr, started
    with the pool's first lock) warns about the locks of a pool stopped by Ctrl-C, which it
    then cleans up itself: not news for the user.  It inherits the environment."""
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), quiet)))


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_RUNNING: dict[str, int] = {}  # on a Dask worker: sweep token -> its units running here


class UnitStopped(Exception):
    """A unit on a Dask worker stopped because its sweep was interrupted.  A plain
    Exception: Dask treats a KeyboardInterrupt out of a task as fatal to the worker
    process (it exits, its nanny restarts it, and other clients' units on it are lost)."""


async def _request_stop(token: str = "") -> None:
    """On a Dask worker (``Client.run``, sent to every worker): stop the run going there,
    as Ctrl-C would, if it is one of sweep ``token``'s; a worker busy with another
    client's unit is left alone."""
    if _RUNNING.get(token):
        interrupt.request()


def _unit(fn: Callable[[Any], Any], arg: Any, token: str = "") -> Any:
    """One unit on a worker: a stop asked of an earlier sweep does not carry over, and a
    stop of this one ends the unit, not the worker."""
    interrupt.clear()
    _RUNNING[token] = _RUNNING.get(token, 0) + 1
    try:
        return fn(arg)
    except KeyboardInterrupt:
        raise UnitStopped("stopped: its sweep was interrupted") from None
    finally:
        _RUNNING[token] -= 1
        if not _RUNNING[token]:
            del _RUNNING[token]
            interrupt.clear()  # the worker's next unit starts clean


class Sweep:
    """Where the units run: ``jobs`` local processes (1: this process), or ``cluster``."""

    def __init__(self, jobs: int = 1, cluster: str | None = None) -> None:
        self.jobs = jobs
        self.cluster_spec = parse_cluster(cluster) if cluster else None
        self._pool: Any = None
        self._client: Any = None
        self._cluster: Any = None
        self._token = os.urandom(8).hex()  # names this sweep's units on Dask workers

    @property
    def parallel(self) -> bool:
        return self.cluster_spec is not None or self.jobs > 1

    @property
    def width(self) -> int:
        """How many units can run at once: ``jobs``, or the cluster's worker threads."""
        if self.cluster_spec is None:
            return self.jobs
        self._start()
        return max(1, sum(self._client.nthreads().values()))

    # --- set-up and tear-down -----------------------------------------------------------
    def _start(self) -> None:
        if self._pool is not None or self._client is not None:
            return
        if self.cluster_spec is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
            _quiet_resource_tracker()
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx,
                                             initializer=_ignore_sigint)
            return
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--cluster needs Dask: pip install 'oomactors[dask]'") from None
        kind, where = self.cluster_spec
        address = self._start_local(int(where)) if kind == "local" else str(where)
        if kind != "local":
            probe_scheduler(address)
        try:
            self._client = Client(address, timeout=f"{CONNECT_S}s")
        except OSError as err:
            raise InputError(f"--cluster {where}: cannot connect: {err}") from None
        except Exception as err:  # noqa: BLE001 - whatever Dask's protocol met
            raise InputError(f"--cluster {where}: not a Dask scheduler ({type(err).__name__}: {err})") from None

    def _start_local(self, n: int) -> str:
        """``local:N``: a LocalCluster in a helper process of its own session, so that the
        terminal's Ctrl-C (sent to our process group) reaches only us, its processes'
        messages stay out of our stderr, and stopping it is one signal to its group."""
        import subprocess
        import tempfile

        log = tempfile.TemporaryFile()
        self._cluster = subprocess.Popen(
            [sys.executable, "-m", "oomactors.sweep", "--local-cluster", str(n)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        out = self._cluster.stdout
        assert out is not None
        while True:  # wait for its address, minding Ctrl-C
            interrupt.check()
            ready, _, _ = select.select([out], [], [], POLL_S)
            if ready:
                line = out.readline().decode().strip()
                if line.startswith("tcp://"):
                    return line
                log.seek(0)
                last = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()][-1:]
                self._stop_local(kill=True)
                raise InputError(f"--cluster local:{n}: the local cluster did not start"
                                 + (f": {last[0].strip()}" if last else ""))

    def _stop_local(self, kill: bool) -> None:
        proc, self._cluster = self._cluster, None
        if proc is None:
            return
        if not kill:
            proc.stdin.close()  # the helper closes its cluster in order, then exits
            try:
                proc.wait(timeout=10)
                return
            except subprocess_timeout():
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._close_dask(kill=False)

    def _close_dask(self, kill: bool) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close(timeout=0.5 if kill else 10)
            self._client = None
        self._stop_local(kill)

    def _abort(self, futures: Sequence[Any]) -> None:
        """Ctrl-C or an error: cancel what waits, stop what runs."""
        if self._pool is not None:
            # terminating the workers fails every future the pool still holds (a cancelled
            # one would make its manager thread die on InvalidStateError, a traceback)
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._client is not None and self._cluster is None:
            # a run already going on a remote worker ends at its next clock advance; the
            # scheduler drops our waiting units when we disconnect (cancelling is a courtesy)
            with contextlib.suppress(Exception):
                self._client.run(_request_stop, self._token, wait=False)
                self._client.cancel(list(futures))
            self._client = None  # no orderly close: exiting drops the connection
        self._close_dask(kill=True)  # our own local:N cluster is stopped at once

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, kind: Any, *exc: object) -> None:
        if kind is None:
            self.close()
        else:  # an error or Ctrl-C on the way (even while the cluster was starting)
            self._abort([])

    # --- the work ----------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], units: Sequence[Any],
            done: Callable[[int, Any], None] | None = None) -> list[Any]:
        """``[fn(u) for u in units]``, in that order; ``done(i, result)`` as each finishes.

        ``fn`` must be importable by name on the workers (a module-level function).  The
        exception raised is that of the first failing unit in ``units`` order."""
        if not units:
            return []
        if not self.parallel:
            out = []
            for i, u in enumerate(units):
                interrupt.check()
                out.append(fn(u))
                if done is not None:
                    done(i, out[-1])
            return out
        self._start()
        if self._client is not None:
            futures = [self._client.submit(_unit, fn, u, self._token, pure=False) for u in units]
        else:
            # the pool starts its worker processes in submit(): they start with SIGINT
            # blocked (the mask is inherited), so that a terminal's Ctrl-C, sent to the
            # whole group, cannot hit one while it boots (a traceback on our stderr); the
            # parent gets it once unblocked, and the workers ignore it for good
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                futures = [self._pool.submit(fn, u) for u in units]
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        try:
            return self._collect(futures, done)
        except BaseException:
            self._abort(futures)
            raise

    def _collect(self, futures: list[Any], done: Callable[[int, Any], None] | None) -> list[Any]:
        results: list[Any] = [None] * len(futures)
        waiting = set(range(len(futures)))
        first_error: tuple[int, BaseException] | None = None
        while waiting:
            interrupt.check()
            finished = [i for i in sorted(waiting) if futures[i].done()]
            if not finished:
                self._wait([futures[i] for i in waiting])
                continue
            for i in finished:
                waiting.discard(i)
                f = futures[i]
                err = f.exception()
                if err is not None:
                    if first_error is None or i < first_error[0]:
                        first_error = (i, err)
                    continue
                results[i] = f.result()
                if done is not None:
                    done(i, results[i])
            if first_error is not None:
                # only the units before the first failure still matter: one of them may fail too
                for i in [j for j in waiting if j > first_error[0]]:
                    if self._client is not None:  # a local pool's are stopped by _abort
                        futures[i].cancel()
                    waiting.discard(i)
        if first_error is not None:
            raise first_error[1]
        return results

    def _wait(self, pending: list[Any]) -> None:
        if self._client is None:
            from concurrent.futures import FIRST_COMPLETED, wait
            wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            return
        from distributed import wait as dask_wait
        try:
            dask_wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
        except Exception:  # noqa: BLE001 - dask's wait raises on its timeout
            time.sleep(0)


if __name__ == "__main__":  # the helper of --cluster local:N (see Sweep._start_local)
    if sys.argv[1:2] == ["--local-cluster"]:
        _serve_local_cluster(int(sys.argv[2]))
