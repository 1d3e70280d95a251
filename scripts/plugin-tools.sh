#!/usr/bin/env bash
# The tools that build Python and JavaScript plugins, at the versions the templates are
# tested with (host/src/plugins/builder.rs names the same ones): componentize-py in a
# virtual environment, componentize-js (and pytest) beside it. Installed once under
# target/plugin-tools; sourced by scripts/test, which then requires them
# (HESTIA_REQUIRE_PLUGIN_TOOLS=1: tests/tests/all/plugin_langs.rs fails without them).
# Not installed here: weval 0.5.0 for `hestia plugin build --aot` (`cargo install weval
# --version 0.5.0 --locked`, a quarter of an hour), whose test runs where it is found.
#
#   source scripts/plugin-tools.sh && install_plugin_tools
COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
PYTEST=8.3.4

install_plugin_tools() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/plugin-tools"
  mkdir -p "$root"
  if ! command -v npm >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -q nodejs npm python3-venv >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q nodejs npm python3-venv >/dev/null; }
    else
      echo "scripts/plugin-tools.sh: install node, npm and python3-venv" >&2
      return 1
    fi
  fi
  if [ ! -x "$root/py/bin/componentize-py" ]; then
    python3 -m venv "$root/py"
    "$root/py/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY" "pytest==$PYTEST"
  fi
  if [ ! -d "$root/js/node_modules/@bytecodealliance/componentize-js" ]; then
    mkdir -p "$root/js"
    (cd "$root/js" && npm install --silent --no-audit --no-fund \
      "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >/dev/null)
  fi
  export PATH="$root/py/bin:$PATH"
  export HESTIA_JS_TOOLS="$root/js"
  export HESTIA_REQUIRE_PLUGIN_TOOLS=1
}
