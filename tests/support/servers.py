"""Real Redis and PostgreSQL servers for tests, on free ports of 127.0.0.1, stopped by PID.

Synchronous on purpose: they run from session-scoped fixtures, outside any test's event loop.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "RedisServer", "free_port", "start_postgres", "start_redis"]

_START_TIMEOUT = 15.0
_PG_USER = "postgres"  # the OS account that owns the cluster when the tests run as root
# Only 127.0.0.1; durability is irrelevant for a throwaway cluster, and speed is not.
_PG_SETTINGS = ("listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off", "full_page_writes=off")


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A `redis-server` child process; `restart()` keeps the port (and, with appendonly, the data)."""

    def __init__(self, *, executable: str, port: int, workdir: Path, appendonly: bool, owns_workdir: bool) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._executable = executable
        self._workdir = workdir
        self._appendonly = appendonly
        self._owns_workdir = owns_workdir
        self._log = workdir / f"redis-{port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        args = [self._executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self._appendonly else "no", "--dir", str(self._workdir)]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{_tail(self._log)}")
            if _redis_ping(self.port):
                return
            time.sleep(0.02)
        self._terminate()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}:\n{_tail(self._log)}")

    def _terminate(self) -> None:
        # SIGTERM makes redis flush its append-only file before exiting, which restart() relies on.
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None

    def stop(self) -> None:
        self._terminate()
        if self._owns_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (flushing the append-only file) and start again on the same port, after a pause."""
        self._terminate()
        time.sleep(down_seconds)
        self._start()


def start_redis(tmpdir: Path | None = None, appendonly: bool = False) -> RedisServer:
    """Start redis-server on a free port; with `appendonly`, its data lives in `tmpdir`."""
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(executable, os.X_OK):
        raise RuntimeError("redis-server not found: apt-get install -y redis-server")
    if appendonly and tmpdir is None:
        raise ValueError("an append-only server needs a tmpdir to keep its data in")
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
    # Another process can grab the free port before redis binds it; a fresh port usually fixes that.
    attempts_left = 3
    while True:
        workdir = tmpdir if tmpdir is not None else Path(tempfile.mkdtemp(prefix="relaybot-redis-"))
        server = RedisServer(
            executable=executable,
            port=free_port(),
            workdir=workdir,
            appendonly=appendonly,
            owns_workdir=tmpdir is None,
        )
        try:
            server._start()
        except RuntimeError:
            server.stop()
            attempts_left -= 1
            if attempts_left == 0:
                raise
            continue
        return server


def _postgres_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
        "apt-get install -y postgresql (the test setup in .ci/run does this)"
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster with one database, `relaybot`, trusting local connections."""

    def __init__(self, *, bindir: Path, root: Path, port: int, owns_root: bool) -> None:
        self.port = port
        self.user = "relaybot"
        self.database = "relaybot"
        self.url = f"postgresql+asyncpg://{self.user}@127.0.0.1:{port}/{self.database}"
        self._bindir = bindir
        self._root = root
        self._owns_root = owns_root
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        data, sockets, log = self._root / "data", self._root / "sockets", self._root / "postgres.log"
        # PostgreSQL refuses to run as root; drop to the postgres account via Popen(user=...), which
        # (unlike runuser) leaves postgres itself as our child, so stop() can signal its PID.
        as_root = os.geteuid() == 0
        user = _PG_USER if as_root else None
        group = pwd.getpwnam(_PG_USER).pw_gid if as_root else None
        env = {**os.environ, "LC_ALL": "C"}
        initdb = [str(self._bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust"]
        initdb += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True, cwd=self._root, env=env, user=user, group=group)
        sockets.mkdir()
        if as_root:
            shutil.chown(sockets, user=_PG_USER)
        postgres = [str(self._bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(sockets)]
        for setting in _PG_SETTINGS:
            postgres += ["-c", setting]
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                postgres,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._root,
                env=env,
                user=user,
                group=group,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{_tail(log)}")
            ready = subprocess.run(
                [str(self._bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"postgres did not become ready on port {self.port}:\n{_tail(log)}")
        createdb = [str(self._bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        subprocess.run([*createdb, self.database], check=True, capture_output=True)

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, then exit cleanly.
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGINT)
            self._proc = None
        if self._owns_root:
            shutil.rmtree(self._root, ignore_errors=True)


def start_postgres(tmpdir: Path | None = None) -> PostgresServer:
    """Start a fresh cluster on a free port.

    When run as root the cluster belongs to the `postgres` account, which must be able to reach
    `tmpdir`; pytest's tmp_path_factory lives under a root-only folder, so by default the cluster
    gets its own folder in the system temp dir and is removed on stop().
    """
    bindir = _postgres_bindir()
    owns_root = tmpdir is None
    root = Path(tempfile.mkdtemp(prefix="relaybot-pg-", dir=tmpdir))
    if os.geteuid() == 0:
        shutil.chown(root, user=_PG_USER)
    server = PostgresServer(bindir=bindir, root=root, port=free_port(), owns_root=owns_root)
    try:
        server._start()
    except subprocess.CalledProcessError as exc:
        server.stop()
        raise RuntimeError(
            f"setting up PostgreSQL failed: {exc.cmd[0]}: {exc.stderr.decode(errors='replace')}"
        ) from exc
    except BaseException:
        server.stop()
        raise
    return server
