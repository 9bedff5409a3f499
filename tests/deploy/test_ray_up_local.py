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
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cluster" / "local" / "ray-cluster.local.yaml"
VENV_BIN = Path(sys.executable).parent
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


def unavailable(reason: str) -> None:
    """A missing prerequisite fails the test under CI=true and skips it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``@NAME@`` placeholders; every placeholder needs a value and every value a use."""
    names = set(PLACEHOLDER.findall(template))
    if names != set(values):
        raise ValueError(f"placeholders without a value: {sorted(names - set(values))}; "
                         f"values without a placeholder: {sorted(set(values) - names)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---- processes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    start: int  # clock ticks since boot: tells a reused pid from the process we saw
    state: str
    name: str  # comm, what `ray stop` matches for raylet/gcs_server
    cmdline: str


def proc_table() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = f"/proc/{entry}"
        try:
            uid = os.stat(base).st_uid
            with open(f"{base}/stat", "rb") as f:
                raw = f.read()
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        name = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode(errors="replace")
        fields = raw[raw.rindex(b")") + 2:].split()
        table[int(entry)] = Proc(int(entry), int(fields[1]), uid, int(fields[19]),
                                 fields[0].decode(), name, cmdline)
    return table


def alive(p: Proc) -> bool:
    now = proc_table().get(p.pid)
    return now is not None and now.start == p.start and now.state not in ("Z", "X")


def is_ray_process(p: Proc) -> bool:
    """What `ray stop` would stop: its own keyword list, matched the way it matches."""
    from ray.autoscaler._private.constants import RAY_PROCESSES

    return any(keyword in (p.name if by_name else p.cmdline)
               for keyword, by_name in RAY_PROCESSES)


def terminate(procs: list[Proc], grace_s: float = 8.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s``; by pid, checked against reuse."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if alive(p):
                with contextlib.suppress(OSError):
                    os.kill(p.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in procs):
            time.sleep(0.2)


def descendants(pid: int, table: dict[int, Proc]) -> list[Proc]:
    found = [table[pid]] if pid in table else []
    grew = True
    while grew:
        grew = False
        for p in table.values():
            if p.ppid in {f.pid for f in found} and p not in found:
                found.append(p)
                grew = True
    return found


def terminate_user(uid: int) -> None:
    """Every process of the test's own user (new ones may appear while they die: loop)."""
    for _ in range(3):
        procs = [p for p in proc_table().values() if p.uid == uid]
        if not procs:
            return
        terminate(procs)


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


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def worker_port_range(size: int = 100) -> tuple[int, int]:
    """A free block between Ray's default worker range (10002-19999) and the ephemeral ports."""
    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    for _ in range(50):
        low = secrets.randbelow(32_000 - size - 20_000) + 20_000
        if all(free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError("no free block of worker ports in 20000-32000")


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
        request = urllib.request.Request(f"http://127.0.0.1:{self.dashboard_port}/api/jobs/")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def ray(self, *args: str,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env, cwd=self.base,
                              text=True, capture_output=True, timeout=timeout)
        print(f"ray {' '.join(args[:2])}: {time.monotonic() - started:.1f} s")  # shown on failure
        return done


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYSYS_", "REDIS_", "RAY_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("VIRTUAL_ENV", None)
    return env | extra


def control_dir(cluster_name: str) -> Path:
    """Where Ray's SSH client keeps its ControlMaster sockets for this cluster (as this user)."""
    user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()
    cluster_hash = hashlib.sha256(cluster_name.encode()).hexdigest()
    return Path(f"/tmp/ray_ssh_{user_hash[:10]}") / cluster_hash[:10]


@pytest.fixture
def machine() -> Iterator[Machine]:
    ensure_tools()
    base = Path(tempfile.mkdtemp(prefix="rsup-"))  # short: Ray's socket paths live below
    base.chmod(0o755)
    user: User | None = None
    sshd: subprocess.Popen[bytes] | None = None
    cluster_name = f"raysys-test-{secrets.token_hex(4)}"
    try:
        user = create_user(base / "home")
        python_bin, python_env = python_for(user, base)
        if python_env:  # the machine's own profile: what its Python needs to run at all
            bashrc = user.home / ".bashrc"
            bashrc.write_text("".join(f"export {k}={v}\n" for k, v in python_env.items()))
            os.chown(bashrc, user.uid, user.gid)
        client = base / "client"  # root's side of `ray up`
        client.mkdir(mode=0o700)
        (client / "home").mkdir()
        (client / "tmp").mkdir()
        key = client / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", cluster_name, "-f", str(key)])
        ssh_dir = user.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, user.uid, user.gid)
        ssh_port, gcs, dashboard, client_server, agent, metrics, http = free_ports(7)
        low, high = worker_port_range()
        sshd = start_sshd(base / "sshd", ssh_port, user)
        relay = client / "relay.py"
        relay.write_text(RELAY)
        token = secrets.token_hex(32)
        token_file = client / "auth_token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = client / "cluster.yaml"
        config.write_text(render(TEMPLATE.read_text(encoding="utf-8"), {
            "CLUSTER_NAME": cluster_name,
            "SSH_USER": user.name,
            "SSH_PRIVATE_KEY": str(key),
            "SSH_PROXY_COMMAND": f"{sys.executable} -I -S {relay} %h {ssh_port}",
            "AUTH_TOKEN_FILE": str(token_file),
            "PYTHON_BIN": str(python_bin),
            "RAY_TMPDIR": str(user.home / "t"),
            "HTTP_PORT": str(http),
            "GCS_PORT": str(gcs),
            "DASHBOARD_PORT": str(dashboard),
            "CLIENT_SERVER_PORT": str(client_server),
            "AGENT_PORT": str(agent),
            "METRICS_PORT": str(metrics),
            "MIN_WORKER_PORT": str(low),
            "MAX_WORKER_PORT": str(high),
        }))
        env = clean_env(HOME=str(client / "home"), TMPDIR=str(client / "tmp"),
                        RAY_TMPDIR=str(client / "tmp"), RAY_USAGE_STATS_ENABLED="0",
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
        yield Machine(base, user, config, token, dashboard, env)
    finally:
        if user is not None:
            terminate_user(user.uid)  # whatever `ray down` left (or never ran)
        if sshd is not None:
            terminate(descendants(sshd.pid, proc_table()))
            sshd.wait(timeout=10)
        # our SSH clients (ControlMaster, ProxyCommand relays) name our paths on their cmdline
        ours = [p for p in proc_table().values() if p.pid != os.getpid()
                and (str(base) in p.cmdline or str(control_dir(cluster_name)) in p.cmdline)]
        terminate(ours, grace_s=3)
        if user is not None:
            delete_user(user)
        shutil.rmtree(control_dir(cluster_name), ignore_errors=True)
        with contextlib.suppress(OSError):  # Ray's per-user parent, if nobody else uses it
            control_dir(cluster_name).parent.rmdir()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def bystander() -> Iterator[Proc]:
    """A process of the current user that `ray stop` would kill: its name is `raylet`."""
    where = Path(tempfile.mkdtemp(prefix="rsup-by-"))
    raylet = where / "raylet"
    raylet.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(raylet), "900"], start_new_session=True)
    try:
        yield proc_table()[proc.pid]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(where, ignore_errors=True)


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
    before = [p for p in proc_table().values() if p.uid == me and is_ray_process(p)]
    assert bystander.pid in {p.pid for p in before}

    # when `ray up` brings the head up over SSH
    up = machine.ray("up", "-y", "--no-config-cache", "--disable-usage-stats",
                     "--log-style", "record", "--log-color", "false", str(machine.config))

    # then Ray and the raysys actors run there, as the dedicated user
    assert up.returncode == 0, shown(up)
    assert "raysys is up in namespace raysys: 2 workers" in up.stdout + up.stderr, shown(up)
    theirs = [p for p in proc_table().values() if p.uid == machine.user.uid]
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
    others = [p for p in before if p.pid != bystander.pid and alive(p)]
    down = machine.ray("down", "-y", "--log-style", "record", "--log-color", "false",
                       str(machine.config))

    # then no Ray process of the dedicated user is left (the embedded Redis that `raysys up`
    # started keeps the tasks for the next `ray up`, as documented)
    assert down.returncode == 0, shown(down)
    left = [p for p in proc_table().values()
            if p.uid == machine.user.uid and not p.cmdline.startswith("sshd:")]  # SSH sessions
    assert [p.cmdline for p in left if is_ray_process(p)] == []
    assert all("redis-server" in p.cmdline or "valkey-server" in p.cmdline for p in left), left
    # and the current user's Ray processes are untouched: the bystander `raylet` runs on, and
    # of the others alive just before `ray down`, some still run (`ray stop` as this user would
    # have stopped them all at once; other people's clusters may end some meanwhile)
    assert alive(bystander)
    assert not others or any(alive(p) for p in others), [p.cmdline for p in others]
