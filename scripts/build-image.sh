#!/usr/bin/env bash
# Usage: scripts/build-image.sh [IMAGE]   (default IMAGE: localhost/sagw:<version>, also tagged :latest)
#
# Builds the image packaging/container/Containerfile describes, without pulling a base image: the
# Debian bookworm root file system comes from `debootstrap --variant=minbase` (Debian's package
# mirror only), trimmed as bookworm-slim is, with MIT krb5's GSS-API library, a sagw user
# (10001:10001), the release `sagw` binary and the same configuration (user, ports, volume,
# entrypoint, STATE_DIRECTORY) as the Containerfile; `buildah` makes the image from it. Needs root
# (debootstrap); installs debootstrap and buildah (and podman, to run the result) when missing.
#
# SAGW_BIN=path: put this binary in the image instead of building one (`cargo build --release`).
# DEBIAN_MIRROR=url: the mirror for debootstrap (default: the one this host's apt uses).
# Work files: target/image/ (rootfs, rootfs.tar); the rootfs is made anew on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image="${1:-localhost/sagw:$version}"

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: debootstrap needs root (run with sudo)" >&2
  exit 1
fi
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v buildah >/dev/null || need+=(buildah)
command -v podman >/dev/null || need+=(podman)
if ((${#need[@]})); then
  echo "build-image: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -n "${SAGW_BIN:-}" ]; then
  bin=$SAGW_BIN
else
  if ! command -v cargo >/dev/null; then
    echo "build-image: cargo not found: install a Rust toolchain first (https://rustup.rs), or give SAGW_BIN" >&2
    exit 1
  fi
  scripts/setup-debian.sh
  cargo build --release --locked -p sagw-gateway --bin sagw
  bin="${CARGO_TARGET_DIR:-$root/target}/release/sagw"
fi
[ -x "$bin" ] || { echo "build-image: no binary at $bin" >&2; exit 1; }

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # The mirror this host's apt uses (deb822 or one-line sources), not the security suite.
  mirror=$(grep -rhoE '^(URIs:|deb) *[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
fi

work="${CARGO_TARGET_DIR:-$root/target}/image"
rootfs="$work/rootfs"
rm -rf "$rootfs"
mkdir -p "$work"
echo "build-image: debootstrap bookworm into $rootfs${mirror:+ from $mirror}" >&2
debootstrap --variant=minbase --include=libgssapi-krb5-2 bookworm "$rootfs" ${mirror:+"$mirror"} \
  >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

# As bookworm-slim: no documentation, manuals or package lists, no caches or logs.
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# The service user, as useradd --system would write it.
echo 'sagw:x:10001:10001:sagw SIP gateway:/var/lib/sagw:/usr/sbin/nologin' >>"$rootfs/etc/passwd"
echo 'sagw:x:10001:' >>"$rootfs/etc/group"
echo 'sagw:!:19000::::::' >>"$rootfs/etc/shadow"
install -d -o 10001 -g 10001 -m 0700 "$rootfs/var/lib/sagw"
install -d -m 0755 "$rootfs/etc/sagw"
install -m 0755 "$bin" "$rootfs/usr/local/bin/sagw"
# The binary must find its libraries in the image, not only on this host.
if chroot "$rootfs" /usr/bin/ldd /usr/local/bin/sagw | grep -q 'not found'; then
  chroot "$rootfs" /usr/bin/ldd /usr/local/bin/sagw >&2
  echo "build-image: a library of sagw is missing from the root file system" >&2
  exit 1
fi
tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || :' EXIT
buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config \
  --env STATE_DIRECTORY=/var/lib/sagw \
  --workingdir /var/lib/sagw \
  --user 10001:10001 \
  --port 5060/udp --port 5060/tcp --port 5061/tcp \
  --volume /var/lib/sagw \
  --entrypoint '["/usr/local/bin/sagw"]' \
  --cmd '["run"]' \
  --label org.opencontainers.image.title=sagw \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.description=SIP security-association gateway (Debian bookworm, debootstrap minbase)" \
  "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
case "$image" in
  *:latest) ;;
  *) buildah tag "$image" "${image%:*}:latest" ;;
esac
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "build-image: $image built, $((size / 1000000)) MB ($size bytes)"
