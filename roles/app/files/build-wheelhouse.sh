#!/usr/bin/env bash
# Build the service's wheelhouse on the controller, from a committed revision of the service.
#   build-wheelhouse.sh SOURCE_DIR REVISION REQUIREMENTS_FILE OUT_DIR PYTHON PYVER [PYVER...]
# For each PYVER (e.g. 3.11) writes OUT_DIR/wheelhouse-pyPYVER.tar holding the service wheel, a
# manylinux binary wheel of every pinned dependency and the service's gunicorn_config.py and
# logging.conf of the same revision (each release runs its own; pip ignores them), then
# OUT_DIR/.complete-pyPYVER. Hosts install from it with `pip install --no-index --find-links`: they
# never reach a package index.
# EXTRA_REQUIREMENTS (one per line) are downloaded too: pip evaluates environment markers with the
# controller's own Python, so a dependency that only an older target needs must be listed there.
set -euo pipefail
src=$1 rev=$2 reqs=$3 out=$4 py=$5
shift 5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$(git -C "$src" rev-parse --show-prefix)
mkdir -p "$work/src" "$out"
printf '%s\n' "${EXTRA_REQUIREMENTS:-}" > "$work/extra-requirements.txt"
git -C "$(git -C "$src" rev-parse --show-toplevel)" archive --format=tar "$rev:$prefix" | tar -x -C "$work/src"
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$work/dist" "$work/src"
for ver in "$@"; do
  [ -e "$out/.complete-py$ver" ] && continue
  dir="$work/wheelhouse-py$ver"
  mkdir -p "$dir"
  "$work/venv/bin/pip" download --quiet --disable-pip-version-check --dest "$dir" \
    --only-binary=:all: --python-version "$ver" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --requirement "$work/src/$reqs" --requirement "$work/extra-requirements.txt"
  cp "$work"/dist/*.whl "$work/src/gunicorn_config.py" "$work/src/logging.conf" "$dir/"
  # Sorted names, fixed owner and mtime: the same inputs give the same tarball.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out/wheelhouse-py$ver.tar.tmp" -C "$dir" .
  mv "$out/wheelhouse-py$ver.tar.tmp" "$out/wheelhouse-py$ver.tar"
  touch "$out/.complete-py$ver"
done
