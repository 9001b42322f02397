# Sourced by bin/demo and bin/test: make .venv with the project installed, and activate it.
# Reinstalls only when pyproject.toml changed since the last install.
ensure_venv() {
  local extra="${1:-}"
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))." >&2
    exit 1
  fi
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
  local stamp=".venv/.installed-${extra:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing the portal's Python packages into .venv ..."
    python -m pip install --quiet --upgrade pip
    if [ -n "$extra" ]; then
      python -m pip install --quiet -e ".[$extra]"
    else
      python -m pip install --quiet -e .
    fi
    touch "$stamp"
  fi
}
