"""A real systemd, booted as PID 1 of its own namespaces, for the service checks on a machine whose
PID 1 is something else (a CI container, this machine).

systemd runs the checkout's own unit file there, so what systemd does with the service (its
restart after ``kill -9``, the watchdog's abort, ``systemctl reload``, the journal) is systemd's
own behaviour, not a model of it. The namespaces keep it off the machine: a new PID namespace (its
``kill(-1)`` at shutdown reaches only its own), a private mount namespace with fresh ``/run``,
``/var/lib``, ``/var/log`` and ``/dev`` (no state, journal or /dev/log left behind; its console is
/dev/null), its own UTS name, ``MASKED`` units not started, and a cgroup
namespace rooted at a child of this process's cgroup (removed at close). What differs from the
robot is the drop-in ``dropin()`` writes: no service user or device groups exist here, so it runs
as root; timers are short, so a restart takes seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from edgefusion.hil.service import UNIT, poll_until

SYSTEMD = "/lib/systemd/systemd"

# What a full boot would start and that would act on this machine through what the namespaces
# share with it: systemd-tmpfiles empties /tmp (tmp.conf's "D /tmp"), sysctl and modules-load set
# the kernel, udev re-triggers every device, sysusers writes /etc/passwd. Masked (and with them the
# targets that pull them in), so the boot is the unit, journald and nothing else.
MASKED = (
    "sysinit.target",
    "basic.target",
    "timers.target",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-sysusers.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-random-seed.service",
    "systemd-binfmt.service",
    "systemd-timesyncd.service",
)

# Inside the new namespaces, before systemd: nothing mounted here propagates out, and -n keeps
# mount(8) from writing its utab into this machine's /run before /run is the namespace's own.
_INNER = """set -e
mount --make-rprivate /
for d in /run /var/lib /var/log; do mount -n -t tmpfs -o mode=0755 tmpfs "$d"; done
mount -n -t proc proc /proc
# a /dev of its own (journald's /dev/log, systemd's console), with only the nodes a service needs
D=/run/edgefusion-hil-dev
mkdir $D && mount -n -t tmpfs -o mode=0755 tmpfs $D
for n in null zero full random urandom tty; do touch $D/$n; mount -n --bind /dev/$n $D/$n; done
touch $D/console && mount -n --bind /dev/null $D/console
mkdir $D/shm $D/pts && mount -n -t tmpfs -o mode=1777 tmpfs $D/shm
ln -s /proc/self/fd $D/fd
mount -n --move $D /dev
umount -R -l /sys/fs/cgroup
mount -n -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/systemd/system/{unit}.d
for u in {masked}; do ln -s /dev/null "/run/systemd/system/$u"; done
cp "$1" /run/systemd/system/{unit}
cp "$2" /run/systemd/system/{unit}.d/hil.conf
printf '[Unit]\\nDescription=edgefusion HIL\\nDefaultDependencies=no\\nWants=%s\\n' \\
    "systemd-journald.socket systemd-journald.service {unit}" > /run/systemd/system/hil.target
export container=edgefusion-hil
exec {systemd} --system --unit=hil.target --log-target=journal-or-kmsg
"""


def dropin(config: Path, workdir: Path) -> str:
    """The unit as the checkout has it, but for this machine: root (no edgefusion user or device
    groups here; no /etc/edgefusion made on this machine), ProtectHome off (this Python may live
    under /root or /home), ``workdir`` shared with the tests (PrivateTmp would hide it), the
    checkout's Python, short timers, and no default dependencies (``MASKED``)."""
    return (
        # no sysinit.target (masked): the stop at poweroff that the default dependencies give, kept
        "[Unit]\nDefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\n"
        "After=systemd-journald.socket\n"
        "[Service]\n"
        "User=root\nGroup=root\nSupplementaryGroups=\nConfigurationDirectory=\n"
        "ProtectHome=no\nPrivateTmp=no\n"
        f"ReadWritePaths={workdir}\n"
        "ExecStart=\n"
        f"ExecStart={sys.executable} -m edgefusion.cli run --config {config}\n"
        "WatchdogSec=3\nRestartSec=1\nTimeoutStopSec=5\n"
    )


def _cgroup2() -> tuple[Path, str] | None:
    """Where the cgroup v2 hierarchy is mounted, and this process's cgroup in it."""
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            mount = Path(left.split()[4])
            break
    own = next(
        (line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")), None
    )
    return (mount, own.lstrip("/")) if mount and own is not None else None


def unavailable() -> str | None:
    """Why a systemd cannot be booted in namespaces here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root (sudo), or systemd as PID 1 with edgefusion installed"
    missing = [tool for tool in ("unshare", "nsenter", "systemctl", "journalctl") if shutil.which(tool) is None]
    if missing or not os.access(SYSTEMD, os.X_OK):
        return f"needs systemd and util-linux here (apt-get install systemd util-linux): missing {missing or SYSTEMD}"
    found = _cgroup2()
    if found is None:
        return "needs a cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified) to give systemd its own"
    mount, own = found
    if not os.access(mount / own, os.W_OK):  # a container's read-only cgroupfs
        return f"needs a writable cgroup v2 hierarchy to give systemd its own ({mount / own} is not writable)"
    return None


class NamespacedSystemd:
    """``start()`` boots it with ``unit_file`` and its drop-in; ``run(argv)`` runs a command in its
    namespaces (a ``Unit``'s runner); ``close()`` powers it off and removes its cgroup."""

    def __init__(self, workdir: Path, unit_file: Path, dropin_text: str):
        self.workdir = workdir
        self._dropin = workdir / "hil.conf"
        self._dropin.write_text(dropin_text)
        self._unit_file = unit_file
        mount, own = _cgroup2()
        self.cgroup = mount / own / f"edgefusion-hil-{os.getpid()}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # systemd's, as this machine sees it
        self.log = workdir / "systemd.log"

    def start(self, timeout: float = 60.0) -> None:
        """Raises RuntimeError, with what went wrong, where it cannot boot or does not come up."""
        self.cgroup.mkdir()
        script = self.workdir / "inner.sh"
        script.write_text(_INNER.format(unit=UNIT, systemd=SYSTEMD, masked=" ".join(MASKED)))
        argv = ["unshare", "--pid", "--fork", "--mount", "--uts", "--cgroup", "--propagation", "private"]
        argv += ["bash", str(script), str(self._unit_file), str(self._dropin)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=self._join)
        if not poll_until(lambda: self._systemd_pid() is not None or self.proc.poll() is not None, timeout):
            raise RuntimeError(f"systemd did not start within {timeout:g} s: {self._log_tail()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"unshare exited {self.proc.returncode}: {self._log_tail()}")
        self.pid = self._systemd_pid()
        bus = Path(f"/proc/{self.pid}/root/run/systemd/private")  # its manager socket, in its mount namespace
        if not poll_until(bus.exists, timeout):
            raise RuntimeError(f"systemd made no {bus.name} socket within {timeout:g} s: {self._log_tail()}")
        r = self._nsenter(["systemctl", "is-system-running", "--wait"], timeout)
        if r.stdout.strip() not in ("running", "degraded"):
            raise RuntimeError(f"systemd is {r.stdout.strip() or 'not answering'}: {r.stderr.strip()}")

    def _join(self) -> None:
        """In the child, before unshare: into the cgroup the new namespace is rooted at."""
        (self.cgroup / "cgroup.procs").write_text("0")

    def _systemd_pid(self) -> int | None:
        """unshare's child, once it has become systemd (the script ``exec``s it)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            return next((int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "systemd"), None)
        except OSError:
            return None

    def _log_tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])

    def _nsenter(self, argv: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
        enter = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--uts", f"--wd={self.workdir}"]
        return subprocess.run([*enter, *argv], capture_output=True, text=True, timeout=timeout)

    def run(self, argv: Sequence[str]) -> str:
        r = self._nsenter(argv)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def version(self) -> str:
        return self.run(["systemctl", "--version"]).splitlines()[0]

    def close(self) -> None:
        """Poweroff asked of it (a container's SIGRTMIN+4); whatever is left after 30 s is killed through
        its cgroup, so nothing it started outlives it; then its cgroups are removed."""
        if self.proc is not None and self.proc.poll() is None:
            pid = self.pid or self._systemd_pid()
            if pid is not None:
                os.kill(pid, signal.SIGRTMIN + 4)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                (self.cgroup / "cgroup.kill").write_text("1")
                self.proc.wait(10)
        if self.cgroup.is_dir():
            poll_until(lambda: "populated 0" in (self.cgroup / "cgroup.events").read_text(), 10)
            for top, _, _ in os.walk(self.cgroup, topdown=False):  # systemd's own cgroups inside it first
                os.rmdir(top)
