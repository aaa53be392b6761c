"""A throw-away one-node SLURM cluster on this machine, for the real-scheduler test.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt-get when missing (root only). Every file lives
under one folder; the daemons run in the foreground as children of this process (no systemd needed) and
are stopped by their PIDs. Facts that matter, measured on the CI machines (../shared/ENVIRONMENT.md):
``proctrack/linuxproc`` + ``task/none`` (no cgroups in containers), a RealMemory no larger than what
``slurmd -C`` reports, ``MinJobAge`` long enough that ``squeue`` still lists finished jobs (there is no
accounting database, so Snakemake must ask ``squeue``, not ``sacct``), munged's socket folder world
-executable, and the config also at /etc/slurm/slurm.conf because the executor's job step drops
``SLURM_CONF`` before its inner ``srun``.

Run by hand:  python tests/slurm_node.py up /tmp/genedml-slurm   (then: export SLURM_CONF=...; ... down)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be set up here; the message says why (used as the test's skip reason)."""


def missing_commands() -> list[str]:
    return [c for c in COMMANDS if shutil.which(c) is None]


def ensure_installed(timeout_s: int = 900) -> str:
    """Install the Debian packages when a command is missing; return what was done."""
    missing = missing_commands()
    if not missing:
        return "already installed"
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM commands missing ({', '.join(missing)}) and not root, cannot apt-get install")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"SLURM commands missing ({', '.join(missing)}) and no apt-get (not Debian)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # another apt-get may hold the dpkg lock for a while: wait for it rather than fail
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    steps = [
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{' '.join(cmd)} did not finish in {timeout_s} s") from None
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    missing = missing_commands()
    if missing:
        raise SlurmUnavailable(f"after installing {' '.join(PACKAGES)}, still missing: {', '.join(missing)}")
    return "installed " + " ".join(PACKAGES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_facts() -> tuple[str, int, int]:
    """Node name, CPUs and usable memory (MB, 85 % of what slurmd detects)."""
    text = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    name = re.search(r"NodeName=(\S+)", text).group(1)
    cpus = int(re.search(r"CPUs=(\d+)", text).group(1))
    mem = int(re.search(r"RealMemory=(\d+)", text).group(1))
    return name, cpus, mem * 85 // 100


@dataclass
class OneNodeSlurm:
    """munged + slurmctld + slurmd for one node, all state under ``root``."""

    root: Path
    partition: str = "debug"
    gpus: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    node: str = ""
    cpus: int = 0
    mem_mb: int = 0
    linked_system_conf: bool = False

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_conf(self) -> None:
        r = self.root
        self.node, self.cpus, self.mem_mb = _node_facts()
        gres_types = gres = ""
        if self.gpus:
            gres_types, gres = "GresTypes=gpu", f" Gres=gpu:{self.gpus}"
            (self.conf.parent / "gres.conf").write_text(
                f"NodeName={self.node} Name=gpu File=/dev/null Count={self.gpus}\n"
            )
        self.conf.write_text(f"""\
ClusterName=genedmltest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
{gres_types}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb}{gres} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
        )
        out.close()

    def start(self, timeout_s: float = 60) -> None:
        if os.geteuid() != 0:
            raise SlurmUnavailable("the one-node SLURM runs its daemons as root; not root")
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            raise SlurmUnavailable(f"{SYSTEM_CONF} already exists (a SLURM is configured here); not replacing it")
        for sub in ("etc", "state", "spool", "log", "run", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket folder that others cannot traverse
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        self._write_conf()
        # the executor's job step runs `srun` without SLURM_CONF, so the default path must lead here too
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked_system_conf = True
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                f"--key-file={key}",
                f"--socket={m}/munge.socket",
                f"--pid-file={m}/munged.pid",
                f"--log-file={m}/munged.log",
                f"--seed-file={m}/munged.seed",
            ],
        )
        self._wait(lambda: (m / "munge.socket").exists(), timeout_s, "munged socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", timeout_s, "node idle")

    def node_state(self) -> str:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def jobs_json(self) -> list[dict]:
        """Every job the controller remembers, as squeue's JSON records (finished ones for MinJobAge s)."""
        out = subprocess.run(
            ["squeue", "--json", "-t", "all"], capture_output=True, text=True, env=self.env, check=True
        ).stdout
        return json.loads(out)["jobs"]

    def _jobs_still_running(self) -> bool:
        try:
            return any(j["job_state"] in ("RUNNING", "COMPLETING") for j in self.jobs_json())
        except (subprocess.CalledProcessError, ValueError, KeyError):
            return False

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started (by PID), remove the system link."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--state=RUNNING"], env=self.env, capture_output=True)
            subprocess.run(["scancel", "--state=PENDING"], env=self.env, capture_output=True)
            # let slurmd end the cancelled jobs' processes before slurmd itself goes
            end = time.monotonic() + 20
            while time.monotonic() < end and self._jobs_still_running():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.linked_system_conf and SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(self.conf):
            SYSTEM_CONF.unlink()
            self.linked_system_conf = False


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "up":
        print(ensure_installed())
        cluster = OneNodeSlurm(root, gpus=int(os.environ.get("GPUS", "0")))
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        # by hand the daemons must outlive this script: leave them running, record their PIDs
        (root / "run" / "pids").write_text(" ".join(str(p.pid) for p in cluster.procs.values()))
        print(f"up: export SLURM_CONF={cluster.conf}; stop with: python {sys.argv[0]} down {root}")
        return 0
    for pid in reversed((root / "run" / "pids").read_text().split()):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    if SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(root / "etc" / "slurm.conf"):
        SYSTEM_CONF.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
