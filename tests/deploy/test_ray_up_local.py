"""`ray up` for real: the local variant of ray-cluster.yaml, over SSH, on this machine.

The test builds what a machine under `ray up` needs, and takes all of it down again even when it
fails:

- `openssh-server` and `rsync` (installed with apt-get when missing; DESIGN.md: a tool CI can
  install is installed, or the test FAILS under CI=true; it skips only on a developer machine);
- a dedicated user with a generated key: `ray down` runs `ray stop` as the SSH user, and that
  stops every Ray process of that user on the host, so it must not be the user running the tests;
- a Python that user can run with this test's Ray and raysys on its path (a venv of a
  readable interpreter, pointing at this venv's site-packages, or at a copy when the user cannot
  read them);
- a private sshd on a free port of 127.0.0.1, reached through `auth.ssh_proxy_command`.

Then `ray up -y` starts Ray (token auth, private ports and temp dir) and `raysys up` on the head,
`ray exec` runs `raysys` commands there (a task runs to completion on the actors), and
`ray down -y` stops it. Another `raylet` of the current user, started before, must survive.
(`ray job submit` onto such a head is tests/deploy/test_job_submit.py's subject.)
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import processes
from tests.support.http import get
from tests.support.prerequisites import unavailable
from tests.support.processes import Proc
from tests.support.ray_cluster import RayPorts, write_token

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cluster" / "local" / "ray-cluster.local.yaml"
SSHD = Path("/usr/sbin/sshd")
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
COMMAND_TIMEOUT_S = 240

# A ProxyCommand: ssh talks to it on stdin/stdout, it talks to the private sshd.
RELAY = """\
import os, socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def down():
    out = sys.stdout.buffer
    while data := sock.recv(65536):
        out.write(data)
        out.flush()
    os._exit(0)
threading.Thread(target=down, daemon=True).start()
while data := os.read(0, 65536):
    sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
threading.Event().wait()
"""


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``@NAME@`` placeholders; every placeholder needs a value and every value a use."""
    names = set(PLACEHOLDER.findall(template))
    if names != set(values):
        raise ValueError(f"placeholders without a value: {sorted(names - set(values))}; "
                         f"values without a placeholder: {sorted(set(values) - names)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---- processes ----------------------------------------------------------------------------------
def is_ray_process(p: Proc) -> bool:
    """What `ray stop` would stop: its own keyword list, matched the way it matches."""
    from ray.autoscaler._private.constants import RAY_PROCESSES

    return any(keyword in (p.name if by_name else p.cmdline)
               for keyword, by_name in RAY_PROCESSES)


def terminate_user(uid: int) -> None:
    """Every process of the test's own user (new ones may appear while they die: loop)."""
    for _ in range(3):
        procs = [p for p in processes.proc_table().values() if p.uid == uid]
        if not procs:
            return
        processes.terminate(procs, grace_s=8.0)


# ---- the machine: tools, user, Python, sshd -----------------------------------------------------
def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 120)
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)


def ensure_tools() -> None:
    if os.geteuid() != 0:
        unavailable("test_ray_up_local needs root: it creates a user and starts an sshd")
    for tool in ("useradd", "userdel", "usermod", "runuser"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is missing (Debian package passwd / util-linux)")
    wanted = {"openssh-server": SSHD.is_file(), "openssh-client": bool(shutil.which("ssh")),
              "rsync": bool(shutil.which("rsync"))}
    missing = [package for package, present in wanted.items() if not present]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        unavailable(f"{', '.join(missing)} missing and no apt-get to install them")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-qq",
               "--no-install-recommends", *missing]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:  # stale package lists: update once, then retry
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-qq"], env=env,
                       capture_output=True, timeout=300)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not SSHD.is_file() or shutil.which("rsync") is None:
        unavailable(f"could not install {' '.join(missing)} with apt-get: {done.stderr[-500:]}")


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def run(self, cmd: list[str], env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        base = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return subprocess.run([runuser, "-u", self.name, "--", *cmd], env=base | (env or {}),
                              cwd=self.home, text=True, capture_output=True, timeout=timeout)


def create_user(home: Path) -> User:
    name = f"rsup{secrets.token_hex(4)}"
    run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
         "--user-group", name])
    # "*": no password, but not locked: without PAM, sshd refuses a locked ("!") account even
    # for public keys.
    run(["usermod", "--password", "*", name])
    entry = pwd.getpwnam(name)
    home.mkdir(mode=0o700)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return User(name, entry.pw_uid, entry.pw_gid, home)


def delete_user(user: User) -> None:
    subprocess.run(["userdel", user.name], capture_output=True, timeout=60)
    subprocess.run(["groupdel", user.name], capture_output=True, timeout=60)  # if left


def make_world_readable(top: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if not path.is_symlink():
                mode = path.stat().st_mode
                extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
                path.chmod(mode | extra)
    top.chmod(top.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)


def copy_for_user(where: Path) -> list[Path]:
    """Readable copies of this venv's site-packages and of the checkout (an editable install
    points into it), for a user that cannot read the originals (e.g. a clone under /root)."""
    site_copy = where / "site-packages"
    shutil.copytree(sysconfig.get_paths()["purelib"], site_copy, symlinks=True)
    repo_copy = where / "checkout"
    shutil.copytree(ROOT, repo_copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", "dist", "build"))
    for path in site_copy.iterdir():  # editable finders and .pth files name the checkout
        if path.is_file() and path.suffix in (".pth", ".py") and path.name.startswith("__editable"):
            path.write_text(path.read_text().replace(str(ROOT), str(repo_copy)))
    make_world_readable(where)
    return [site_copy]


STDLIB_SKIP = ("site-packages", "test", "tests", "config-*", "idlelib", "tkinter", "turtledemo",
               "lib2to3", "ensurepip", "__pycache__")


def interpreter_for(user: User, where: Path) -> tuple[Path, dict[str, str]]:
    """This Python (same version: packages check it, e.g. redis-py on 3.11.3) runnable by
    ``user``, and the environment it needs: this one if the user can run it, else a system
    one of the same version, else a copy of its standard library (the interpreter often lives
    under a private home, such as pyenv's in /root)."""
    version = sys.version_info
    short = f"{version.major}.{version.minor}"
    probe = "import sys; print(*sys.version_info[:3])"
    want = f"{version.major} {version.minor} {version.micro}"
    own = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for candidate in (own, Path(f"/usr/bin/python{short}"), Path(f"/usr/local/bin/python{short}")):
        if candidate.is_file():
            probed = user.run([str(candidate), "-c", probe])
            if probed.returncode == 0 and probed.stdout.strip() == want:
                return candidate, {}
    prefix, copy = Path(sys.base_prefix), where / "python"
    (copy / "bin").mkdir(parents=True)
    (copy / "lib").mkdir()
    shutil.copy2(own, copy / "bin" / f"python{short}")
    shared = sorted((prefix / "lib").glob(f"libpython{short}*.so*"))  # a --enable-shared build
    for lib in shared:
        shutil.copy2(lib, copy / "lib" / lib.name, follow_symlinks=False)
    shutil.copytree(prefix / "lib" / f"python{short}", copy / "lib" / f"python{short}",
                    symlinks=True, ignore=shutil.ignore_patterns(*STDLIB_SKIP))
    (copy / "lib" / f"python{short}" / "site-packages").mkdir()
    make_world_readable(copy)
    # its RUNPATH names the original lib dir, which the user cannot read
    env = {"LD_LIBRARY_PATH": str(copy / "lib")} if shared else {}
    python = copy / "bin" / f"python{short}"
    probed = user.run([str(python), "-c", probe], env=env)
    if probed.returncode != 0 or probed.stdout.strip() != want:
        unavailable(f"no Python {short} that user {user.name} can run: {probed.stderr[-500:]}")
    return python, env


def python_for(user: User, where: Path) -> tuple[Path, dict[str, str]]:
    """A bin dir with `python`, `ray` and `raysys` that ``user`` can run, and the environment
    they need: a venv whose site-packages reach this test's Ray and raysys."""
    python, env = interpreter_for(user, where)
    venv = where / "venv"
    run([str(python), "-m", "venv", "--without-pip", str(venv)], env=os.environ | env)
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    site_dir = venv / "lib" / f"python{short}" / "site-packages"
    check = [str(venv / "bin" / "python"), "-c", "import ray, raysys.actors"]
    parents = [Path(p) for p in dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])]
    for attempt in ("originals", "copies"):
        if attempt == "copies":
            parents = copy_for_user(where / "copy")
        # addsitedir (not a bare path) so the parent's own .pth files run: editable installs
        (site_dir / "_deploy_test_parent.pth").write_text(
            "".join(f"import site; site.addsitedir({str(p)!r})\n" for p in parents))
        checked = user.run(check, env=env)
        if checked.returncode == 0:
            break
    else:
        pytest.fail(f"user {user.name} cannot import ray and raysys: {checked.stderr[-2000:]}")
    for script, target in (("ray", "ray.scripts.scripts:main"), ("raysys", "raysys.cli:main")):
        module, func = target.split(":")
        path = venv / "bin" / script
        path.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
                        f"sys.exit({func}())\n")
        path.chmod(0o755)
    make_world_readable(venv)
    return venv / "bin", env


def start_sshd(where: Path, port: int, user: User) -> subprocess.Popen[bytes]:
    where.mkdir(mode=0o700)
    host_key = where / "host_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    config = where / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {where / 'sshd.pid'}
AllowUsers {user.name}
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes yes
X11Forwarding no
PrintMotd no
MaxStartups 64
MaxSessions 64
LogLevel VERBOSE
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    run([str(SSHD), "-t", "-f", str(config)])
    log = open(where / "sshd.log", "wb")  # noqa: SIM115 - kept open for the daemon
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start: {(where / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.1)


@dataclass
class Machine:
    """This host prepared for `ray up`: a user reachable by SSH, and the cluster config."""

    base: Path
    user: User
    config: Path
    token: str  # Ray's auth token: a file here, mounted to the head's ~/.ray/auth_token
    dashboard_port: int
    env: dict[str, str]  # for `ray up/exec/down/job` here: private HOME, TMPDIR, token auth

    def job_api(self, token: str | None) -> int:
        """The status of GET /api/jobs/ on the head's dashboard, with or without the token."""
        status, _ = get(f"http://127.0.0.1:{self.dashboard_port}/api/jobs/", token)
        return status

    def ray(self, *args: str,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([str(processes.VENV_BIN / "ray"), *args], env=self.env,
                              cwd=self.base, text=True, capture_output=True, timeout=timeout)
        print(f"ray {' '.join(args[:2])}: {time.monotonic() - started:.1f} s")  # shown on failure
        return done


def control_dir(cluster_name: str) -> Path:
    """Where Ray's SSH client keeps its ControlMaster sockets for this cluster (as this user)."""
    user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()
    cluster_hash = hashlib.sha256(cluster_name.encode()).hexdigest()
    return Path(f"/tmp/ray_ssh_{user_hash[:10]}") / cluster_hash[:10]


def write_profile(user: User, env: dict[str, str]) -> None:
    """The machine's own profile: what its Python needs to run at all (none: no profile)."""
    if env:
        bashrc = user.home / ".bashrc"
        bashrc.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
        os.chown(bashrc, user.uid, user.gid)


def client_side(base: Path) -> Path:
    """Root's side of `ray up`: a private folder with its own HOME and TMPDIR."""
    client = base / "client"
    client.mkdir(mode=0o700)
    (client / "home").mkdir()
    (client / "tmp").mkdir()
    return client


def authorize_key(user: User, client: Path, comment: str) -> Path:
    """A new key pair in ``client`` whose public half ``user`` accepts over SSH; the private
    key's path."""
    key = client / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, user.uid, user.gid)
    return key


def cluster_config(client: Path, cluster_name: str, user: User, key: Path, python_bin: Path,
                   ports: RayPorts, ssh_port: int, http_port: int, token_file: Path) -> Path:
    """The local template rendered for this machine: SSH through the relay to the private sshd,
    this test's Python, the token file, and every port chosen here."""
    relay = client / "relay.py"
    relay.write_text(RELAY)
    config = client / "cluster.yaml"
    config.write_text(render(TEMPLATE.read_text(encoding="utf-8"), {
        "CLUSTER_NAME": cluster_name,
        "SSH_USER": user.name,
        "SSH_PRIVATE_KEY": str(key),
        "SSH_PROXY_COMMAND": f"{sys.executable} -I -S {relay} %h {ssh_port}",
        "AUTH_TOKEN_FILE": str(token_file),
        "PYTHON_BIN": str(python_bin),
        "RAY_TMPDIR": str(user.home / "t"),
        "HTTP_PORT": str(http_port),
        "GCS_PORT": str(ports.gcs),
        "DASHBOARD_PORT": str(ports.dashboard),
        "CLIENT_SERVER_PORT": str(ports.client_server),
        "AGENT_PORT": str(ports.agent),
        "METRICS_PORT": str(ports.metrics),
        "MIN_WORKER_PORT": str(ports.min_worker),
        "MAX_WORKER_PORT": str(ports.max_worker),
    }))
    return config


def take_down(base: Path, user: User | None, sshd: subprocess.Popen[bytes] | None,
              cluster_name: str) -> None:
    """Whatever of the machine exists: the user's processes (whatever `ray down` left, or never
    ran), the sshd, our SSH clients, the user, Ray's SSH control dir, the folder."""
    if user is not None:
        terminate_user(user.uid)
    if sshd is not None:
        tree = processes.with_descendants([sshd.pid], processes.proc_table())
        processes.terminate(tree.values(), grace_s=8.0)
        sshd.wait(timeout=10)
    # our SSH clients (ControlMaster, ProxyCommand relays) name our paths on their cmdline
    ours = [p for p in processes.proc_table().values() if p.pid != os.getpid()
            and (str(base) in p.cmdline or str(control_dir(cluster_name)) in p.cmdline)]
    processes.terminate(ours, grace_s=3)
    if user is not None:
        delete_user(user)
    shutil.rmtree(control_dir(cluster_name), ignore_errors=True)
    with contextlib.suppress(OSError):  # Ray's per-user parent, if nobody else uses it
        control_dir(cluster_name).parent.rmdir()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def machine() -> Iterator[Machine]:
    ensure_tools()
    base = Path(tempfile.mkdtemp(prefix="rsup-"))  # short: Ray's socket paths live below
    base.chmod(0o755)
    user: User | None = None
    sshd: subprocess.Popen[bytes] | None = None
    cluster_name = f"raysys-test-{secrets.token_hex(4)}"
    try:
        # a dedicated user that runs this test's Python, reached over a private sshd
        user = create_user(base / "home")
        python_bin, python_env = python_for(user, base)
        write_profile(user, python_env)
        client = client_side(base)
        key = authorize_key(user, client, cluster_name)
        ports = RayPorts.pick(extra=2)
        ssh_port, http_port = ports.extra
        sshd = start_sshd(base / "sshd", ssh_port, user)
        # the cluster config, and the environment `ray up` runs in here
        token_file = client / "auth_token"
        token = write_token(token_file)
        config = cluster_config(client, cluster_name, user, key, python_bin, ports, ssh_port,
                                http_port, token_file)
        env = processes.clean_env(
            ray=True, HOME=str(client / "home"), TMPDIR=str(client / "tmp"),
            RAY_TMPDIR=str(client / "tmp"), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file))
        yield Machine(base, user, config, token, ports.dashboard, env)
    finally:
        take_down(base, user, sshd, cluster_name)


def json_line(output: str, key: str) -> dict[str, Any]:
    """The first JSON object with ``key`` in mixed output (`ray exec` adds its own lines)."""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and f'"{key}"' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise AssertionError(f"no JSON with {key!r} in:\n{output[-4000:]}")


def shown(run: subprocess.CompletedProcess[str]) -> str:
    return (f"exit {run.returncode}\n--- stdout\n{run.stdout[-6000:]}\n"
            f"--- stderr\n{run.stderr[-3000:]}")


@pytest.mark.timeout(480)  # apt-get on a fresh machine comes on top of ~2 minutes
def test_ray_up_runs_raysys_and_ray_down_stops_only_its_user(machine: Machine,
                                                              bystander: Proc) -> None:
    # given the Ray processes of the current user that exist before (other clusters, tests)
    me = os.geteuid()
    before = [p for p in processes.proc_table().values() if p.uid == me and is_ray_process(p)]
    assert bystander.pid in {p.pid for p in before}

    # when `ray up` brings the head up over SSH
    up = machine.ray("up", "-y", "--no-config-cache", "--disable-usage-stats",
                     "--log-style", "record", "--log-color", "false", str(machine.config))

    # then Ray and the raysys actors run there, as the dedicated user
    assert up.returncode == 0, shown(up)
    assert "raysys is up in namespace raysys: 2 workers" in up.stdout + up.stderr, shown(up)
    theirs = [p for p in processes.proc_table().values() if p.uid == machine.user.uid]
    assert any(p.name == "raylet" for p in theirs), [p.cmdline for p in theirs]
    # and with token auth on: the job API refuses a request without the token
    assert machine.job_api(None) == 401
    assert machine.job_api(machine.token) == 200
    # and a task submitted on the head runs on those actors to completion (one SSH session:
    # the pool first, then the task)
    on_head = machine.ray("exec", str(machine.config), "raysys workers --json && raysys submit "
                          "echo --payload '[1, 2, 3]' --wait --timeout 60 --json")
    assert on_head.returncode == 0, shown(on_head)
    pool = json_line(on_head.stdout, "workers")["workers"]
    assert len(pool) == 2 and all(w["live"] for w in pool), pool
    task = json_line(on_head.stdout, "state")
    assert task["state"] == "succeeded" and task["result"] == [1, 2, 3], task

    # when `ray down` tears the cluster down
    others = [p for p in before if p.pid != bystander.pid and processes.alive(p)]
    down = machine.ray("down", "-y", "--log-style", "record", "--log-color", "false",
                       str(machine.config))

    # then no Ray process of the dedicated user is left (the embedded Redis that `raysys up`
    # started keeps the tasks for the next `ray up`, as documented)
    assert down.returncode == 0, shown(down)
    left = [p for p in processes.proc_table().values()
            if p.uid == machine.user.uid and not p.cmdline.startswith("sshd:")]  # SSH sessions
    assert [p.cmdline for p in left if is_ray_process(p)] == []
    assert all("redis-server" in p.cmdline or "valkey-server" in p.cmdline for p in left), left
    # and the current user's Ray processes are untouched: the bystander `raylet` runs on, and
    # of the others alive just before `ray down`, some still run (`ray stop` as this user would
    # have stopped them all at once; other people's clusters may end some meanwhile)
    assert processes.alive(bystander)
    assert not others or any(processes.alive(p) for p in others), [p.cmdline for p in others]
