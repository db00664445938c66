#!/bin/sh
# Build a local stand-in for the `python:3.11-slim-bookworm` base image from Debian bookworm
# (whose python3 is 3.11), for machines that cannot pull from a container registry.
# CI and normal builds do not need this: they pull the official image.
#
#   sudo docker/local-base.sh            # amd64, tags python:3.11-slim-bookworm
#   sudo docker/local-base.sh arm64      # arm64 (needs qemu-user-static + binfmt-support),
#                                        # tagged python:3.11-slim-bookworm-arm64 unless TAG is set
#
# Needs: debootstrap, docker (daemon running), root. Environment: TAG, MIRROR, KEEP_ROOTFS=1.
set -eu

ARCH=${1:-amd64}
HOST_ARCH=$(dpkg --print-architecture)
if [ "$ARCH" = "$HOST_ARCH" ]; then DEFAULT_TAG=python:3.11-slim-bookworm; else DEFAULT_TAG=python:3.11-slim-bookworm-$ARCH; fi
TAG=${TAG:-$DEFAULT_TAG}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

for tool in debootstrap docker; do
    command -v "$tool" >/dev/null || { echo "local-base.sh: $tool is not installed" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "local-base.sh: run as root (debootstrap needs it)" >&2; exit 2; }

ROOT=$(mktemp -d /var/tmp/fdedge-base-"$ARCH".XXXXXX)
cleanup() { rm -rf "$ROOT.ctx"; [ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$ROOT"; }
trap cleanup EXIT INT TERM

if [ "$ARCH" = "$HOST_ARCH" ]; then
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR"
else
    # A foreign architecture: unpack here, run the second stage through qemu-user-static.
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    update-binfmts --enable "qemu-$( [ "$ARCH" = arm64 ] && echo aarch64 || echo "$ARCH")" || true
    debootstrap --foreign --arch="$ARCH" --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage
fi

# What the official python image gives a Dockerfile: `python` and `pip` on PATH, pip allowed to
# install outside a venv (PEP 668 marker removed), CA certificates (the host's, so a TLS-inspecting
# proxy keeps working during `docker build`).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
rm -f "$ROOT"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3 "$ROOT/usr/bin/python"
[ -e "$ROOT/usr/bin/pip" ] || ln -sf pip3 "$ROOT/usr/bin/pip"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
       "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log
find "$ROOT/usr/lib/python3" "$ROOT/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true

# `FROM scratch` + ADD rather than `docker import`: a build records the image's architecture
# (an imported arm64 rootfs is labelled amd64, and `FROM --platform=linux/arm64` would not find it).
CTX=$ROOT.ctx
mkdir -p "$CTX"
tar -C "$ROOT" -cf "$CTX/rootfs.tar" .
printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' \
    'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'CMD ["python3"]' > "$CTX/Dockerfile"
docker build --platform "linux/$ARCH" -t "$TAG" "$CTX"
docker run --rm --platform "linux/$ARCH" "$TAG" python -c 'import platform, ssl, sys, venv; print(platform.machine(), sys.version)'
echo "local-base.sh: tagged $TAG ($(docker image inspect "$TAG" --format '{{.Os}}/{{.Architecture}}'))"
