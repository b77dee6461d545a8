#!/usr/bin/env bash
# The container test bed: a running Docker engine and systemd-capable Debian base images.
#
# No image registry is reachable from these machines, so the base images are built here with
# debootstrap from the Debian mirror that this machine's apt already uses, and `docker import`ed.
# An image is rebuilt only when it is missing, when this recipe changed (its hash is a label on the
# image), or when asked (`scripts/testbed.sh images --rebuild`).
#
# Usage: scripts/testbed.sh engine            start (and if needed install) the Docker engine
#        scripts/testbed.sh images [--rebuild] build the missing base images
#        scripts/testbed.sh all [--rebuild]    both (what `make setup` runs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE_REPO="${TESTBED_IMAGE_REPO:-asset-testbed}"
# tag -> Debian suite. Debian 12 = bookworm, Debian 13 = trixie.
declare -A SUITES=([debian12]=bookworm [debian13]=trixie)
# Packages every test host needs: systemd as PID 1, Python for Ansible, sudo for become.
BASE_PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,procps,gnupg"
RECIPE_HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# Debian's client; /usr/local/bin/docker may be an older one that comes first on PATH.
DOCKER=docker
[[ -x /usr/bin/docker ]] && DOCKER=/usr/bin/docker

engine_up() { "$DOCKER" info >/dev/null 2>&1; }

ensure_engine() {
  if engine_up; then log "Docker engine is running"; return; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing Debian's docker.io and debootstrap with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
      DOCKER=/usr/bin/docker
    else
      die "no Docker engine. Install one, as root on Debian/Ubuntu: apt-get install docker.io debootstrap; then start dockerd (or the docker service) and run this again."
    fi
  fi
  if engine_up; then log "Docker engine is running"; return; fi
  [[ $EUID -eq 0 ]] || die "the Docker engine is not running and only root can start it: sudo dockerd &"
  log "starting dockerd in the background (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    engine_up && { log "Docker engine is running"; return; }
    sleep 1
  done
  die "dockerd did not answer within 60 s; see /var/log/dockerd.log"
}

# The mirror this machine's apt uses, read at run time (deb822 .sources first, then sources.list).
apt_uri() {  # $1 = "main" or "security"
  local want="$1" uri
  uri="$(
    {
      for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'BEGIN{RS="";FS="\n"} {u="";s="";e=1; for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",$i);u=$i} if($i ~ /^Suites:/){s=$i} if($i ~ /^Enabled:[ \t]*no/){e=0} } if(u!="" && e) print s "\t" u}' "$f"
      done
      [[ -f /etc/apt/sources.list ]] && awk '$1=="deb"{ if($2 ~ /^\[/){print "Suites: " $4 "\t" $3} else {print "Suites: " $3 "\t" $2} }' /etc/apt/sources.list
    } | awk -F'\t' -v want="$want" '(want=="security") == ($1 ~ /-security/) && $2 ~ /debian/ {split($2,a," "); print a[1]; exit}'
  )"
  [[ -n $uri ]] || die "cannot find the Debian ${want} mirror in this machine's apt sources"
  printf '%s\n' "$uri"
}

image_current() {  # $1 = image ref
  [[ "$("$DOCKER" image inspect -f '{{ index .Config.Labels "testbed.recipe" }}' "$1" 2>/dev/null)" == "$RECIPE_HASH" ]]
}

build_image() {  # $1 = tag
  local tag="$1" suite="${SUITES[$1]}" ref="${IMAGE_REPO}:$1" mirror security rootfs started
  mirror="$(apt_uri main)"
  security="$(apt_uri security)"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/testbed-${suite}.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
  trap "rm -rf '$rootfs'" RETURN
  started=$SECONDS
  log "building ${ref} (${suite}) with debootstrap from the machine's Debian mirror"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap ${suite} failed (log above)"; }
  rm -f "$rootfs.log"
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb ${mirror} ${suite} main
deb ${mirror} ${suite}-updates main
deb ${security} ${suite}-security main
SOURCES
  # Units that have no work to do in a container and only fail or wait there.
  for unit in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-remount-fs.service systemd-modules-load.service sys-kernel-debug.mount \
              sys-kernel-tracing.mount sys-kernel-config.mount systemd-firstboot.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  : >"$rootfs/etc/machine-id"   # empty: systemd makes a fresh one per container
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/90testbed"
  # dpkg without an fsync per file, as Docker's own Debian images ship it (docker-apt-speedup): a test
  # container is thrown away, never power-cycled. Measured: 10-14 % off installing a tier's packages.
  printf 'force-unsafe-io\n' >"$rootfs/etc/dpkg/dpkg.cfg.d/90testbed"
  # No package lists in the image: roles must update them (as on a fresh server).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  touch -d @0 "$rootfs/var/lib/apt/lists"   # Ansible's apt cache_valid_time reads this mtime
  tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    --change "LABEL testbed.recipe=${RECIPE_HASH} testbed.suite=${suite}" \
    - "$ref" >/dev/null
  log "built ${ref} in $((SECONDS - started)) s"
}

ensure_images() {
  local rebuild="${1:-}" tag
  for tag in debian12 debian13; do
    if [[ $rebuild != "--rebuild" ]] && image_current "${IMAGE_REPO}:${tag}"; then
      log "base image ${IMAGE_REPO}:${tag} is present and current: not rebuilding (--rebuild forces it)"
    else
      build_image "$tag"
    fi
  done
}

case "${1:-all}" in
  engine) ensure_engine ;;
  images) ensure_engine; ensure_images "${2:-}" ;;
  all) ensure_engine; ensure_images "${2:-}" ;;
  *) die "usage: $0 engine | images [--rebuild] | all [--rebuild]" ;;
esac
