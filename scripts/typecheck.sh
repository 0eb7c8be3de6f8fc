#!/usr/bin/env bash
# mypy over the installed layout: mypy cannot follow setuptools' package-dir mapping, so this lays out
# build/typecheck/posteval as pip installs it (posteval/'s entries, and flows/, tasks/, evaluators/ as
# posteval.flows, posteval.tasks, posteval.evaluators) with symlinks, and checks that one package.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/posteval
rm -rf build/typecheck
mkdir -p "$tree"
for entry in posteval/*; do
  [ "$(basename "$entry")" = __pycache__ ] || ln -s "$PWD/$entry" "$tree/"
done
for folder in flows tasks evaluators; do ln -s "$PWD/$folder" "$tree/$folder"; done
exec "${MYPY:-.venv/bin/mypy}" --config-file pyproject.toml --cache-dir build/.mypy_typecheck "$tree" "$@"
