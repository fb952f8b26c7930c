#!/usr/bin/env bash
# Install edgefusion on a Jetson as a systemd service (idempotent: run it again to update).
#
#   sudo systemd/install.sh [--bundle DIR] [--dry-run] [--root DIR] [--uninstall]
#
#   --root DIR   install into a staging root (CI, or to inspect the layout): files and modes
#                only; no user is created, nothing is enabled or started, no hardware check.
#                The venv's paths point into DIR: to build an image, run install.sh inside
#                the image's chroot instead
#   --dry-run    print every step, change nothing
#   --uninstall  stop and disable the service, remove the unit, its network drop-in, the venv and
#                code; keep the config (/etc/edgefusion) and the state (/var/lib/edgefusion)
#   --bundle DIR the model bundle to run (default: the demo bundle inside the package)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT="" DRY=0 UNINSTALL=0 BUNDLE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --bundle) BUNDLE=${2:?--bundle needs a folder}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

SERVICE_USER=edgefusion
GROUPS_WANTED="video render audio plugdev"
PREFIX=$ROOT/opt/edgefusion
UNIT=$ROOT/etc/systemd/system/edgefusion.service
CONF=$ROOT/etc/edgefusion
STATE=$ROOT/var/lib/edgefusion

run() {  # every change goes through here, so --dry-run shows the whole plan
    echo "+ $*"
    [ "$DRY" -eq 1 ] || "$@"
}
fail() { echo "install.sh: $*" >&2; exit 2; }

if [ -z "$ROOT" ]; then  # a real install: only onto a system it was made for
    [ "$(id -u)" -eq 0 ] || [ "$DRY" -eq 1 ] || fail "run as root (sudo), or use --dry-run / --root DIR"
    command -v systemctl >/dev/null || fail "no systemd here (systemctl not found): this installs a systemd service"
    if [ ! -e /etc/nv_tegra_release ] && ! grep -qs "NVIDIA Jetson" /proc/device-tree/model; then
        fail "not a Jetson (no /etc/nv_tegra_release, no Jetson in /proc/device-tree/model); for an image or a test, use --root DIR"
    fi
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "needs Python >= 3.10 (JetPack 6 has 3.10)"
if [ "$UNINSTALL" -eq 0 ]; then  # what pip will need, said before anything is changed
    python3 -c 'import ensurepip' 2>/dev/null || fail "python3 cannot make a venv: apt-get install python3-venv"
    if ! python3 -c 'import pyaudio' 2>/dev/null; then  # no aarch64 wheel: pip builds it
        [ -e /usr/include/portaudio.h ] || fail "pyaudio needs PortAudio's headers: apt-get install portaudio19-dev"
        command -v gcc >/dev/null || fail "pyaudio is built from source: apt-get install gcc python3-dev"
    fi
fi

if [ "$UNINSTALL" -eq 1 ]; then
    if [ -z "$ROOT" ]; then
        run systemctl disable --now edgefusion.service || true
    fi
    run rm -f "$UNIT" "$UNIT.d/zenoh.conf"
    [ -d "$UNIT.d" ] && run rmdir --ignore-fail-on-non-empty "$UNIT.d"
    run rm -rf "$PREFIX"
    [ -z "$ROOT" ] && run systemctl daemon-reload
    echo "uninstalled; kept $CONF (config) and $STATE (engines, caches)"
    exit 0
fi

# The service user, in the groups the GPU, camera, USB and sound nodes belong to.
if [ -z "$ROOT" ]; then
    id "$SERVICE_USER" >/dev/null 2>&1 || run useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    for g in $GROUPS_WANTED; do
        getent group "$g" >/dev/null || run groupadd --system "$g"
        run usermod -aG "$g" "$SERVICE_USER"
    done
fi

# The code: a venv that also sees the system's site-packages, where JetPack puts TensorRT
# (pip has no TensorRT wheels for Jetson); pyrealsense2 may come from a librealsense build too.
run install -d -m 0755 "$PREFIX"
# (a venv left without pip by a failed first try is made again)
[ -x "$PREFIX/venv/bin/pip" ] || run python3 -m venv --clear --system-site-packages "$PREFIX/venv"
run "$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$SRC[sensors,zenoh,mcap]"

# The config: written once, never overwritten (it is the robot's own from then on).
run install -d -m 0750 "$CONF"
if [ ! -e "$CONF/edgefusion.toml" ]; then
    run install -m 0640 "$SRC/systemd/edgefusion.toml" "$CONF/edgefusion.toml"
    if [ -n "$BUNDLE" ]; then  # a new config runs the bundle installed with it
        run sed -i 's|^bundle = ""|bundle = "/etc/edgefusion/bundle"|' "$CONF/edgefusion.toml"
    fi
elif [ -n "$BUNDLE" ] && ! grep -q '^bundle = "/etc/edgefusion/bundle"' "$CONF/edgefusion.toml"; then
    echo "install.sh: note: $CONF/edgefusion.toml does not run /etc/edgefusion/bundle; set [runtime] bundle to use it" >&2
fi
if [ -n "$BUNDLE" ]; then
    # A bundle is plain files, every one listed and hashed; `info` refuses links, FIFOs and unlisted
    # files, so nothing outside the folder is copied (as root) into /etc/edgefusion. The copy follows
    # no link either (-P; "DIR/." enters a linked top folder itself), and is verified again.
    run "$PREFIX/venv/bin/edgefusion" info --bundle "$BUNDLE"
    run rm -rf "$CONF/bundle.new"
    run install -d -m 0750 "$CONF/bundle.new"
    run cp -RP "$BUNDLE/." "$CONF/bundle.new"
    run chmod -R u=rwX,g=rX,o= "$CONF/bundle.new"
    run "$PREFIX/venv/bin/edgefusion" info --bundle "$CONF/bundle.new"  # verified before it replaces the old one
    run rm -rf "$CONF/bundle"
    run mv "$CONF/bundle.new" "$CONF/bundle"
fi
run install -d -m 0750 "$STATE"
# The unit's network: a drop-in ($UNIT.d/zenoh.conf) that allows exactly the addresses [output.zenoh]
# needs, removed when the sink is off (the unit alone denies every address). Made from the config
# before the unit changes, so a config it refuses stops the install here, in one line.
run "$PREFIX/venv/bin/edgefusion" service-network --config "$CONF/edgefusion.toml" --out "$(dirname "$UNIT")"
run install -D -m 0644 "$SRC/systemd/edgefusion.service" "$UNIT"

if [ -z "$ROOT" ]; then
    run chown -R "root:$SERVICE_USER" "$CONF"
    run chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE"
    # TensorRT engines for the config's bundle and precision, built now (minutes per graph, once)
    # rather than at the service's first start; as the service user, with the state directory the
    # unit gives it (StateDirectory=edgefusion), so the service finds them and can replace them.
    # The venv sees the system's site-packages, so python3 finds TensorRT where the venv will.
    if python3 -c 'import tensorrt; tensorrt.__version__' 2>/dev/null; then  # (tensorrt-stubs alone has none)
        run runuser -u "$SERVICE_USER" -- env -C "$STATE" STATE_DIRECTORY="$STATE" \
            "$PREFIX/venv/bin/edgefusion" engines build --config "$CONF/edgefusion.toml" ||
            echo "install.sh: note: the TensorRT engine build failed (above): the service builds or falls back at start" >&2
    else
        echo "TensorRT not found (python3 cannot import tensorrt): no engines built; the tensorrt backend falls back to onnxruntime"
    fi
    run systemctl daemon-reload
    run systemctl enable edgefusion.service
    run systemctl restart edgefusion.service
    echo "installed: systemctl status edgefusion; journalctl -u edgefusion -f"
else
    echo "staged into $ROOT: owners to set on the robot: root:$SERVICE_USER $CONF, $SERVICE_USER:$SERVICE_USER $STATE"
    echo "TensorRT engines are not built into a staging root: the robot's own install (or \`edgefusion engines build\`, or the service's first start) builds them"
fi
