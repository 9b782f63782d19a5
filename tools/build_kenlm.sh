#!/usr/bin/env bash
# Compile KenLM's lmplz and build_binary into the venv's bin/ (asr-dist lm build runs them).
# The source is the `kenlm` sdist on PyPI (the same release as the Python module); Boost comes from Debian
# (`make deb`). Usage: tools/build_kenlm.sh [VENV_DIR]   (default .venv)
set -euo pipefail
VENV=${1:-.venv}
VERSION=0.3.0
if [ -x "$VENV/bin/lmplz" ] && [ -x "$VENV/bin/build_binary" ]; then exit 0; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation "kenlm==$VERSION" -d "$WORK"
tar xzf "$WORK/kenlm-$VERSION.tar.gz" -C "$WORK"
cmake -S "$WORK/kenlm-$VERSION" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >/dev/null
make -C "$WORK/build" -j"$(nproc)" lmplz build_binary >/dev/null
install -m 755 "$WORK/build/bin/lmplz" "$WORK/build/bin/build_binary" "$VENV/bin/"
echo "installed lmplz and build_binary into $VENV/bin"
