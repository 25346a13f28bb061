"""--cluster ADDRESS pointed at something that is not a Dask scheduler: one line, exit 2, soon.

Local fake servers on 127.0.0.1 (a thread with a listening socket; no external network):
one that accepts and never says a word (a wedged scheduler, a firewall), one that answers
like an HTTP server, one that sends bytes that mean nothing.  The Dask client alone hung
on the first forever and called the others internal errors (exit 70).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "configs" / "quickstart.toml")


def _serve(kind: str) -> tuple[int, socket.socket]:
    """A listener on a free local port that meets every connection as ``kind`` does
    ("refused": the port is held but nothing listens, so the kernel refuses connections)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    if kind == "refused":
        return srv.getsockname()[1], srv
    srv.listen(16)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # closed: the test is over
                for c in held:
                    c.close()
                return
            held.append(conn)  # "silent": keep it open, say nothing
            if kind == "http":
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.close()
            elif kind == "garbage":
                conn.sendall(b"\xff" * 64)

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], srv


def _oomactors(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OOMACTORS_INVARIANTS"}
    # a hang is a failure (TimeoutExpired): the connect timeout is 10 s
    return subprocess.run([sys.executable, "-m", "oomactors", *args], cwd=ROOT, capture_output=True,
                          env=env, timeout=90)


CASES = [  # (server, command, what the one line says after "--cluster ADDRESS: ")
    ("silent", "compare", "no answer from a Dask scheduler within 10 s"),
    ("refused", "compare", "cannot connect: Connection refused\n"),
    ("refused", "explore", "cannot connect: Connection refused\n"),
    ("http", "compare", "not a Dask scheduler (it does not speak Dask's protocol"),
    ("garbage", "compare", "not a Dask scheduler (it does not speak Dask's protocol"),
    ("http", "explore", "not a Dask scheduler (it does not speak Dask's protocol"),
]


def test_a_cluster_address_that_is_not_a_dask_scheduler_is_one_line_and_exit_2():
    servers = {kind: _serve(kind) for kind in ("silent", "refused", "http", "garbage")}

    def one(case: tuple[str, str, str]) -> str:
        kind, command, says = case
        address = f"tcp://127.0.0.1:{servers[kind][0]}"
        args = ([command, QUICK, "--seeds", "1"] if command == "compare" else
                [command, QUICK, "--check", "oom_lock_exclusion", "--budget", "2", "--fixed-seed"])
        p = _oomactors(*args, "--cluster", address)
        err = p.stderr.decode()
        want = f"oomactors: error: --cluster {address}: {says}"
        if p.returncode != 2 or len(err.splitlines()) != 1 or not err.startswith(want):
            return f"{kind}/{command}: exit {p.returncode}, stderr {err[-500:]!r}"
        return ""

    try:
        with ThreadPoolExecutor(len(CASES)) as pool:  # the silent one waits 10 s: in parallel
            problems = [p for p in pool.map(one, CASES) if p]
    finally:
        for _, srv in servers.values():
            srv.close()
    assert not problems, "\n".join(problems)


def test_tls_without_dask_tls_settings_is_one_line_and_exit_2():
    p = _oomactors("compare", QUICK, "--seeds", "1", "--cluster", "tls://127.0.0.1:1")
    assert p.returncode == 2
    assert p.stderr.decode() == ("oomactors: error: --cluster tls://127.0.0.1:1: tls:// needs Dask's TLS "
                                 "settings (distributed.comm.tls in the Dask config)\n")


def test_a_refused_connection_fails_at_once_and_a_silent_listener_waits_its_bound():
    """Nothing listening is a final answer: Dask's own connect retried a refused connection
    until its timeout (10 s, the whole bound of a silent listener) before saying so."""
    from oomactors.errors import InputError
    from oomactors.sweep import probe_scheduler

    waited = {}
    servers = {kind: _serve(kind) for kind in ("refused", "silent")}
    try:
        for kind, (port, _) in servers.items():
            start = time.monotonic()
            with pytest.raises(InputError) as err:
                probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=3)
            waited[kind] = (time.monotonic() - start, str(err.value).split(": ", 1)[1])
    finally:
        for _, srv in servers.values():
            srv.close()
    assert waited["refused"][1] == "cannot connect: Connection refused"
    assert waited["refused"][0] < 1.5, waited  # did not retry until the 3 s bound
    assert waited["silent"][1] == "no answer from a Dask scheduler within 3 s"
    assert waited["silent"][0] >= 3, waited


def test_two_different_cluster_addresses_are_refused_and_one_repeated_is_taken():
    """Beside --policy and --check, which add up, `--cluster A --cluster B` reads as "both":
    refused in one line, not settled silently by the last address (click's default)."""
    port, srv = _serve("refused")
    try:
        address = f"tcp://127.0.0.1:{port}"
        two = _oomactors("compare", QUICK, "--seeds", "1", "--cluster", address, "--cluster", "local:2")
        same = _oomactors("explore", QUICK, "--check", "oom_lock_exclusion", "--budget", "2", "--fixed-seed",
                          "--cluster", address, "--cluster", address)
    finally:
        srv.close()
    assert (two.returncode, two.stderr.decode()) == (2, (
        f"oomactors: error: compare: Invalid value for '--cluster': given 2 times ({address}, local:2): "
        "a command runs on one Dask scheduler, which spreads the work over all its workers "
        "(see 'oomactors compare --help')\n"))
    assert (same.returncode, same.stderr.decode()) == (
        2, f"oomactors: error: --cluster {address}: cannot connect: Connection refused\n")


_TLS_SCHEDULER = """
import asyncio, sys
from distributed import Scheduler
from distributed.security import Security
sec = Security(tls_ca_file=sys.argv[1], tls_scheduler_cert=sys.argv[2], require_encryption=True)
async def main():
    async with Scheduler(protocol="tls://", host="127.0.0.1", security=sec, dashboard_address=None) as s:
        print(s.address, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin
asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls_with_dask_tls_settings_reaches_the_scheduler(tmp_path):
    """The one-line error tells the user to set Dask's TLS settings: with them set, the probe
    must use them (it passed none, so a TLS scheduler was refused whatever the config)."""
    import dask

    from oomactors.errors import InputError
    from oomactors.sweep import probe_scheduler

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    both = tmp_path / "keycert.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    proc = subprocess.Popen([sys.executable, "-c", _TLS_SCHEDULER, str(cert), str(both)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        address = proc.stdout.readline().decode().strip()
        assert address.startswith("tls://127.0.0.1:")
        with pytest.raises(InputError, match="tls:// needs Dask's TLS settings"):
            probe_scheduler(address, timeout=10)
        with dask.config.set({"distributed.comm.tls.ca-file": str(cert),
                              "distributed.comm.tls.client.cert": str(both)}):
            probe_scheduler(address, timeout=10)  # a Dask scheduler: no error
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
