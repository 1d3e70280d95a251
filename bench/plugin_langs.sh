#!/usr/bin/env bash
# Builds the DIR of `HESTIA_BENCH_LANGS=DIR cargo bench -p hestia-bench --bench plugins`: the
# scope-policy template of each language (`rust`, `python`, `js`, from `hestia plugin new` and
# `hestia plugin build`) and the smallest component each interpreter toolchain builds for the
# same world (`py-bare`, `js-bare`), each with its manifest. With WEVAL=PATH (a weval 0.5.0
# binary: `cargo install weval --version 0.5.0 --locked`), also `js-aot` and `js-bare-aot`,
# built by `hestia plugin build --aot`.
#
#   bench/plugin_langs.sh HESTIA DIR
#
# Needs what `hestia plugin build` needs: cargo with wasm32-wasip2, componentize-py on PATH,
# node and componentize-js in HESTIA_JS_TOOLS (scripts/plugin-tools.sh installs them).
set -euo pipefail
hestia=$(realpath "$1")
out=$(mkdir -p "$2" && realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

template() { # NAME LANG
  "$hestia" plugin new "$1" --kind scope-policy --lang "$2" >/dev/null
  (cd "$1" && "$hestia" plugin build >/dev/null)
  cp "$1/$1.wasm" "$1/$1.toml" "$out/"
}
template rust rust
template python python
template js js

# py-bare: the world's export without the SDK, answering a prebuilt allow.
"$hestia" plugin new py-bare --kind scope-policy --lang python >/dev/null
rm -r py-bare/hestia_sdk py-bare/test_app.py
cat > py-bare/app.py <<'PY'
from wit_world.imports.types import Decision_Allow

ALLOW = Decision_Allow()


class WitWorld:
    def grant(self, request):
        raise NotImplementedError

    def authorize(self, request, claims):
        return ALLOW
PY
(cd py-bare && "$hestia" plugin build >/dev/null)
cp py-bare/py-bare.wasm py-bare/py-bare.toml "$out/"

# js-bare: the exports as plain functions, no SDK.
"$hestia" plugin new js-bare --kind scope-policy --lang js >/dev/null
cat > js-bare/component.js <<'JS'
export function grant() { throw "unused"; }
export function authorize() { return { tag: "allow" }; }
JS
(cd js-bare && "$hestia" plugin build >/dev/null)
cp js-bare/js-bare.wasm js-bare/js-bare.toml "$out/"

if [ -n "${WEVAL:-}" ]; then
  for name in js js-bare; do
    (cd "$name" && HESTIA_WEVAL="$(realpath "$WEVAL")" "$hestia" plugin build --aot >/dev/null)
    cp "$name/$name.wasm" "$out/$name-aot.wasm"
    cp "$name/$name.toml" "$out/$name-aot.toml"
  done
fi
ls -l "$out"
