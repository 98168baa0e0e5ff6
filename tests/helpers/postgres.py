"""A throwaway PostgreSQL server for the tests of distributed Optuna sweeps (the ``postgres_url`` fixture).

The Debian server binaries (``/usr/lib/postgresql/<version>/bin/initdb`` and ``pg_ctl``, found on ``PATH`` otherwise)
``initdb`` a cluster in a fresh folder under the temp dir and run it on 127.0.0.1 only, on a free port, with its
unix socket in that folder, trusting local connections, without fsync. PostgreSQL refuses to run as root: as root,
the cluster belongs to (and the server runs as) the unprivileged ``postgres`` user, or ``nobody`` without one.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MISSING_BINARIES = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
MISSING_DRIVER = "the PostgreSQL driver psycopg is not installed: pip install -e '.[postgres]'"
SUPERUSER = "snnexp"
DATABASE = "snnexp_tests"


def find_binaries() -> tuple[Path, Path] | None:
    """(initdb, pg_ctl) of the newest PostgreSQL in /usr/lib/postgresql, else on PATH; None without them."""
    def version(path: str) -> tuple:
        name = Path(path).parents[1].name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        pg_ctl = Path(initdb).with_name("pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return Path(initdb), pg_ctl
    initdb = shutil.which("initdb")
    if initdb:
        beside = Path(initdb).resolve().with_name("pg_ctl")  # the same installation's pg_ctl first
        pg_ctl = str(beside) if os.access(beside, os.X_OK) else shutil.which("pg_ctl")
        if pg_ctl:
            return Path(initdb), Path(pg_ctl)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless this is root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, with neither a 'postgres' nor a 'nobody' account to run PostgreSQL as")


@dataclass
class PostgresServer:
    """One cluster in ``root``: :meth:`start` it, connect with :attr:`url`, :meth:`stop` it (removing ``root``)."""

    initdb: Path
    pg_ctl: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="snnexp-pg-")))  # short: a socket path
    port: int = 0
    user: pwd.struct_passwd | None = field(default_factory=server_user)
    started: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = DATABASE, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a server binary as the server's user, in ``root`` (the user may not enter this process's cwd)."""
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        owner = {}
        if self.user is not None:
            owner = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env.update(HOME=str(self.root), USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        proc = subprocess.run([str(a) for a in args], cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout, **owner)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}\n{log}")
        return proc

    def start(self, attempts: int = 3) -> "PostgresServer":
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(self.initdb, "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        for attempt in range(attempts):  # a free port can be taken between looking it up and binding it
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            try:
                self._run(self.pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start",
                          timeout=90)
                break
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        self.started = True
        self.create_database(DATABASE)
        return self

    def create_database(self, name: str) -> str:
        """A new empty database ``name``; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.started:
                self._run(self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
