#!/usr/bin/env bash
# The checks CI runs before the tests, in the versions of tools/lint-pins.txt:
#   ruff (lint, with a complexity limit, and format) over the Python code,
#   mypy over pyloader/ (configured in pyproject.toml, per-module opt-outs listed there),
#   clang-format over the C++ sources (style in .clang-format).
# Run from anywhere: tools/lint.sh. Fix formatting with `ruff format` and
# `clang-format -i`. Needs torch and numpy installed, for their types.
set -euo pipefail
cd "$(dirname "$0")/.."
python_code=(pyloader tests bench tools)
status=0
step() {
  echo "lint: ${*:1:3}"
  "$@" || status=1
}
step ruff check "${python_code[@]}"
step ruff format --check "${python_code[@]}"
step mypy
mapfile -t cpp < <(find csrc tests/stand_in_cuda -name '*.cpp' -o -name '*.hpp' | sort)
step clang-format --dry-run -Werror "${cpp[@]}"
exit $status
