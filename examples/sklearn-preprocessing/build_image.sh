#!/usr/bin/env bash
# Build the image for this example without a Dockerfile or a registry:
# a minimal Debian rootfs with python3, scikit-learn and pandas from Debian's
# own packages (debootstrap), imported into Docker with `docker import`.
#
#   sudo ./build_image.sh                      # imports distproc-example:sklearn
#   sudo ./build_image.sh my/image:tag         # another name
#   sudo ./build_image.sh --tar rootfs.tar     # only write the rootfs tarball
#
# Needs root, debootstrap (Debian package `debootstrap`) and, unless --tar,
# the docker CLI (DOCKER_HOST is honoured). Environment:
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
#   SUITE          default bookworm (python3-sklearn 1.2, pandas 1.5, Python 3.11)
#   PACKAGES       default python3,python3-sklearn,python3-pandas
set -euo pipefail

image=distproc-example:sklearn
tar_out=
case "${1:-}" in
  --tar) tar_out=${2:?--tar needs a file name} ;;
  -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
  "") ;;
  *) image=$1 ;;
esac
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${SUITE:-bookworm}
packages=${PACKAGES:-python3,python3-sklearn,python3-pandas}

[ "$(id -u)" -eq 0 ] || { echo "build_image.sh: must run as root (debootstrap)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "build_image.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
[ -n "$tar_out" ] || command -v docker >/dev/null || { echo "build_image.sh: needs the docker CLI" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sklearn-image.XXXXXX")
root=$work/rootfs
cleanup() {
  # debootstrap mounts /proc and /sys in the target while it runs: never delete through a mount.
  if [ -d "$root" ]; then
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m"
    done
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$(date +%s)
echo "debootstrap $suite (minbase + $packages) from $mirror" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  exit 1
}

# What a job never needs: apt's caches, docs, man pages, locales, device
# nodes (Docker provides /dev) and the libraries' own test suites.
for d in var/cache/apt/archives var/lib/apt/lists usr/share/doc usr/share/man usr/share/info usr/share/locale dev; do
  find "$root/$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
done
find "$root/usr/lib/python3/dist-packages" -depth -type d -name tests -path '*/dist-packages/*/*' -exec rm -rf {} +
# Debian's python3-scipy depends on pythran, which brings a C++ toolchain (gcc,
# boost and Python headers, static libraries: about 450 MB) that only compiling
# needs: its headers, compiler internals and static libraries go too.
rm -rf "$root/usr/include" "$root/usr/lib/gcc" "$root"/usr/bin/*lto-dump*
find "$root/usr/lib" -name '*.a' -type f -delete
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"

# Smoke test: the libraries import (in the rootfs, as the container will run them).
chroot "$root" python3 -c 'import sklearn, pandas, numpy, scipy; print("scikit-learn", sklearn.__version__, "pandas", pandas.__version__)' >&2

if [ -n "$tar_out" ]; then
  tar --numeric-owner --one-file-system -C "$root" -cf "$tar_out.tmp$$" .
  mv "$tar_out.tmp$$" "$tar_out"
  echo "wrote $tar_out ($(du -h "$tar_out" | cut -f1)) in $(($(date +%s) - started))s" >&2
else
  tar --numeric-owner --one-file-system -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$image" >/dev/null
  echo "imported $image ($(docker image inspect --format '{{.Size}}' "$image") bytes) in $(($(date +%s) - started))s" >&2
fi
