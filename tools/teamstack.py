"""A team tracking stack on loopback: PostgreSQL, an S3 endpoint and `mlflow server`.

What a team runs for real is PostgreSQL + S3 (or MinIO) + `mlflow server`; this
module starts a throwaway copy of that on 127.0.0.1 so the path is tested and a
user can try it in one command (`make team-server`, or `python -m tools.teamstack` from the
repository root; a tool of the checkout, not part of the alod package):

- PostgreSQL from the system's binaries (Debian: /usr/lib/postgresql/*/bin),
  in a temporary cluster on a free port (as the `postgres` user when run as
  root: initdb refuses root);
- an S3-compatible endpoint: `moto` in server mode (a real HTTP endpoint,
  in memory), with the bucket created through boto3;
- `mlflow server --backend-store-uri postgresql://...` with artifacts either
  proxied (`--artifacts-destination s3://...`: clients hold no S3 credentials)
  or direct (`--default-artifact-root s3://...`: clients write to S3 with
  `MLFLOW_S3_ENDPOINT_URL` and their own keys), optionally behind basic auth
  (`--app-name basic-auth`).

Secrets never travel on a command line or in a URI: the database password goes
to libpq as PGPASSWORD, the S3 keys as AWS_* variables, the admin password as
MLFLOW_AUTH_ADMIN_PASSWORD, client credentials as MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD. Every process is started in its own process group and
stopped with it. This module never imports mlflow: it runs `mlflow server` as a
program, as a team would.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
ARTIFACT_MODES = ("proxied", "direct")


class StackError(RuntimeError):
    """A service of the stack could not start (the message says which and shows its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """Best effort: a service gets SIGTERM if the process that started it dies (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """One child process in its own process group, with its output in a log file."""

    name: str
    cmd: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {}
        if self.user is not None:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None, cwd=self.cwd,
                start_new_session=True, preexec_fn=_die_with_parent, **kwargs)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal the whole process group; SIGKILL what is left after `timeout` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Reap stragglers of the group (server workers) whatever happened to the leader.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def wait_until(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"{self.name} exited while starting ({what}); log {self.log}:\n"
                                 f"{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        raise StackError(f"{self.name} not ready after {timeout:.0f}s ({what}); log {self.log}:\n"
                         f"{self.log_tail()}")


# --- PostgreSQL ----------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Where initdb/postgres live: PATH first, else the newest Debian/Ubuntu install."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_isready").exists():
        return Path(found).resolve().parent  # /usr/local/bin/initdb may be a lone symlink
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/usr/pgsql-*/bin/initdb")
    if not candidates:
        return None

    def version(path: str) -> float:
        digits = "".join(c for c in Path(path).parent.parent.name if c.isdigit() or c == ".")
        try:
            return float(digits or 0)
        except ValueError:
            return 0.0

    return Path(max(candidates, key=version)).parent


@dataclass
class Postgres:
    """A temporary PostgreSQL cluster listening on 127.0.0.1 only (password auth)."""

    user: str = "alod"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    bin_dir: Path | None = None
    service: Service | None = None
    root: Path | None = None

    def start(self, log_dir: Path) -> Postgres:
        self.bin_dir = self.bin_dir or postgres_bin_dir()
        if self.bin_dir is None:
            raise StackError("PostgreSQL server binaries (initdb, postgres) not found; on Debian: "
                             "apt-get install -y postgresql")
        os_user = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            os_user = "postgres"
            try:
                import pwd

                pw = pwd.getpwnam(os_user)
            except KeyError:
                raise StackError("running as root, PostgreSQL needs the `postgres` system user "
                                 "(Debian's postgresql package creates it)") from None
        # Under /tmp, not the caller's folder: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="alod-pg-"))
        data, sockets = self.root / "data", self.root / "sockets"
        data.mkdir()
        sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if os_user is not None:
            for path in (self.root, data, sockets, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.port = self.port or free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        init = Service("initdb", [str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.user,
                                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                  "--no-instructions", "--locale=C"],
                       log_dir / "initdb.log", cwd=self.root, user=os_user, env=_pg_env())
        init.start()
        if init.proc.wait(timeout=180) != 0:
            raise StackError(f"initdb failed; log {init.log}:\n{init.log_tail()}")
        pwfile.unlink()
        # A throwaway cluster: durability settings off, loopback TCP only, sockets in our folder.
        self.service = Service("postgres", [
            str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={sockets}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200"],
            log_dir / "postgres.log", cwd=self.root, user=os_user, env=_pg_env())
        self.service.start()
        self.service.wait_until(lambda: self._ready(), 60, f"port {self.port}")
        return self

    def _ready(self) -> bool:
        return subprocess.run([str(self.bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)],
                              timeout=10).returncode == 0

    def client_env(self) -> dict[str, str]:
        """libpq reads the password from PGPASSWORD, so it never shows in a URI or a command line."""
        return {"PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        """Create a database; returns its SQLAlchemy URI (no password in it)."""
        env = {**os.environ, **_pg_env(), **self.client_env()}
        result = subprocess.run([str(self.bin_dir / "createdb"), "-h", LOOPBACK, "-p", str(self.port),
                                 "-U", self.user, name], env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise StackError(f"createdb {name} failed: {result.stderr.strip()}")
        return self.uri(name)

    def uri(self, database: str) -> str:
        # The driver is explicit: SQLAlchemy 2.0 reads plain postgresql:// as psycopg2, 2.1 as psycopg 3.
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(signal.SIGINT)  # "fast" shutdown
            self.service = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _pg_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    return {"PATH": os.defpath, **keep, "LC_ALL": "C"}


# --- S3 (moto server) ----------------------------------------------------------


@dataclass
class S3Server:
    """moto's S3 in server mode on 127.0.0.1: a real HTTP endpoint, state in memory."""

    bucket: str = "alod"
    access_key: str = field(default_factory=lambda: "AKIA" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    region: str = "us-east-1"
    port: int = 0
    service: Service | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What an S3 client (mlflow server, or a direct-mode MLflow client) needs."""
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def start(self, log_dir: Path) -> S3Server:
        self.port = self.port or free_port()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        self.service = Service("moto S3", [sys.executable, "-m", "moto.server", "-H", LOOPBACK,
                                           "-p", str(self.port)], log_dir / "s3.log", env=env)
        self.service.start()
        self.service.wait_until(lambda: self.client().list_buckets() is not None, 60, self.endpoint)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in the bucket."""
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


# --- mlflow server -------------------------------------------------------------


@dataclass
class MlflowServer:
    """`mlflow server` on PostgreSQL with S3 artifacts, proxied or direct, optionally with basic auth."""

    backend_uri: str
    artifact_uri: str  # s3://bucket/prefix
    artifacts: str = "proxied"
    server_env: Mapping[str, str] = field(default_factory=dict)  # PGPASSWORD, AWS_*, MLFLOW_S3_ENDPOINT_URL
    auth_database_uri: str | None = None  # set: --app-name basic-auth, users in this database
    admin_username: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    workers: int = 1
    log_dir: Path = Path(".")
    service: Service | None = None
    _secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def auth(self) -> bool:
        return self.auth_database_uri is not None

    def command(self) -> list[str]:
        if self.artifacts not in ARTIFACT_MODES:
            raise ValueError(f"artifacts must be one of {ARTIFACT_MODES}, got {self.artifacts!r}")
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
               "--host", LOOPBACK, "--port", str(self.port), "--workers", str(self.workers)]
        if self.artifacts == "proxied":
            cmd += ["--serve-artifacts", "--artifacts-destination", self.artifact_uri]
        else:
            cmd += ["--no-serve-artifacts", "--default-artifact-root", self.artifact_uri]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.server_env,
               # The GenAI job runner (huey) is not needed for experiment tracking.
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(key, None)
        if self.auth:
            config = self.log_dir / f"basic_auth-{self.port}.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = {self.auth_database_uri}\n"
                f"admin_username = {self.admin_username}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                # Without a cache every request pays a PBKDF2 hash check (tens of ms by design);
                # a password change reaches other workers only after this many seconds.
                "auth_cache_ttl_seconds = 60\n")
            env.update({"MLFLOW_AUTH_CONFIG_PATH": str(config),
                        "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                        "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret_key})
        return env

    def start(self, timeout: float = 180) -> MlflowServer:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.service = Service("mlflow server", self.command(), self.log_dir / f"mlflow-{self.port}.log",
                               env=self._env())
        self.service.start()
        self.service.wait_until(self._healthy, timeout, self.url)
        return self

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
            return r.status == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.service is not None:
            self.service.stop(sig)
            self.service = None

    def restart(self, down_seconds: float = 0.0, sig: int = signal.SIGTERM) -> None:
        """Stop (SIGKILL: a crash) and start again on the same port after `down_seconds`."""
        self.stop(sig)
        time.sleep(down_seconds)
        deadline = time.monotonic() + 30
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.start()

    def client_env(self, username: str | None = None, password: str | None = None,
                   s3: S3Server | None = None) -> dict[str, str]:
        """Environment for an MLflow client (mlflow run, alod, mlflow models serve)."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if self.artifacts == "proxied":
            # An MLflow 3 server in front of S3 advertises presigned downloads (and multipart
            # uploads): clients would then fetch artifacts straight from the S3 endpoint the
            # server uses. Fully proxied: every byte goes through the server, clients need
            # neither S3 credentials nor a route to S3.
            env.update({"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
                        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false"})
        if username is not None:
            env.update({"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password or ""})
        if self.artifacts == "direct" and s3 is not None:
            env.update(s3.client_env())  # direct: the client itself talks to S3
        return env

    def create_user(self, username: str, password: str) -> None:
        """Create a (non-admin) user through the auth REST API, as the admin."""
        self._admin_request("POST", "/api/2.0/mlflow/users/create",
                            {"username": username, "password": password})

    def grant_experiment(self, experiment_id: str, username: str, permission: str = "EDIT") -> None:
        self._admin_request("POST", "/api/2.0/mlflow/experiments/permissions/create",
                            {"experiment_id": experiment_id, "username": username, "permission": permission})

    def _admin_request(self, method: str, path: str, body: dict) -> dict:
        if not self.auth:
            raise StackError("this server runs without basic auth")
        token = b64encode(f"{self.admin_username}:{self.admin_password}".encode()).decode()
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": f"Basic {token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise StackError(f"{method} {path}: HTTP {e.code} {e.read()[:300]!r}") from None


# --- the whole stack -----------------------------------------------------------


@dataclass
class TeamStack:
    """PostgreSQL + S3 + mlflow server, started together and stopped together."""

    log_dir: Path
    artifacts: str = "proxied"
    auth: bool = False
    port: int = 0
    workers: int = 1
    bucket: str = "alod"
    postgres: Postgres = field(default_factory=Postgres)
    s3: S3Server | None = None
    server: MlflowServer | None = None

    def start(self) -> TeamStack:
        self.log_dir = Path(self.log_dir)
        try:
            self.postgres.start(self.log_dir)
            self.s3 = S3Server(bucket=self.bucket).start(self.log_dir)
            self.server = self.add_server(self.artifacts, auth=self.auth, port=self.port, workers=self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def add_server(self, artifacts: str, *, auth: bool = False, port: int = 0, workers: int = 1,
                   name: str | None = None) -> MlflowServer:
        """Another mlflow server on this database server and bucket (own database and prefix)."""
        name = name or f"mlflow_{artifacts}{'_auth' if auth else ''}"
        backend = self.postgres.create_database(name)
        auth_db = self.postgres.create_database(f"{name}_users") if auth else None
        server = MlflowServer(
            backend_uri=backend, artifact_uri=f"s3://{self.s3.bucket}/{name}", artifacts=artifacts,
            server_env={**self.postgres.client_env(), **self.s3.client_env()},
            auth_database_uri=auth_db, port=port, workers=workers, log_dir=self.log_dir)
        self._extra.append(server)
        return server.start()

    def __post_init__(self) -> None:
        self._extra: list[MlflowServer] = []

    def stop(self) -> None:
        for server in reversed(self._extra):
            server.stop()
        self._extra.clear()
        if self.s3 is not None:
            self.s3.stop()
        self.postgres.stop()

    def __enter__(self) -> TeamStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.teamstack",
        description="Start a throwaway team tracking stack on 127.0.0.1 (PostgreSQL + moto S3 + "
                    "mlflow server) in the foreground; Ctrl-C stops everything.")
    parser.add_argument("--port", type=int, default=5000, help="mlflow server port (0: any free port)")
    parser.add_argument("--artifacts", choices=ARTIFACT_MODES, default="proxied",
                        help="proxied: the server reads/writes S3 (clients need no S3 keys); "
                             "direct: clients write to S3 themselves")
    parser.add_argument("--auth", action="store_true", help="basic auth (--app-name basic-auth)")
    parser.add_argument("--user", default=None, help="with --auth: also create this non-admin user")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-dir", default=None, help="service logs (default: a temporary folder)")
    args = parser.parse_args(argv)

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="alod-team-"))
    stack = TeamStack(log_dir, artifacts=args.artifacts, auth=args.auth, port=args.port, workers=args.workers)

    def _terminate(signum, _frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell without job control starts background commands with SIGINT ignored.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        stack.start()
        server = stack.server
        print(f"PostgreSQL   {LOOPBACK}:{stack.postgres.port} (user {stack.postgres.user})", flush=True)
        print(f"S3 (moto)    {stack.s3.endpoint}  bucket {stack.s3.bucket}", flush=True)
        print(f"MLflow       {server.url}  artifacts {args.artifacts} -> {server.artifact_uri}", flush=True)
        print(f"logs         {log_dir}\n", flush=True)
        # Secrets go to the terminal of the person who started the stack, nowhere else.
        print("In another shell:", flush=True)
        env = server.client_env(s3=stack.s3)
        if args.auth:
            user, password = server.admin_username, server.admin_password
            if args.user:
                user, password = args.user, secrets.token_urlsafe(12)
                server.create_user(user, password)
            env.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
            if args.user:
                print(f"  # admin: {server.admin_username} / {server.admin_password}", flush=True)
        for key, value in env.items():
            print(f"  export {key}={value}", flush=True)
        print("  alod pretrain --data demo-data --arch tiny --epochs 2   # or mlflow run . -e ...", flush=True)
        print("\nCtrl-C stops the stack; the database and the bucket are temporary and go with it "
              f"(the logs stay in {log_dir}).", flush=True)
        while all(s.running() for s in (stack.postgres.service, stack.s3.service, server.service)):
            time.sleep(1)
        print("a service exited; stopping the stack", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    except StackError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
