#!/usr/bin/env python3
"""The plugin dev loop of docs/plugins.md, timed: edit src/lib.rs of a scope-policy crate
made by `hestia plugin new` (its first `Decision::deny("…")` text gets a new marker),
`cargo build --target wasm32-wasip2` (or `--release`), copy + rename into the plugin
directory of a running server, then `DELETE <base>/Patient/nobody` every 5 ms until the
answer carries the marker. Prints build, copy, swap and total per round.

Usage: python3 bench/plugin_dev_loop.py --crate DIR --server URL --client CLIENT.json
                                        [--plugins-dir DIR] [--profile debug|release]
                                        [--rounds 3]
CLIENT.json is the output of `hestia client add --grant-type client_credentials
--scope "system/*.*"`. The plugin directory defaults to ../hestia-data/plugins of the
crate (the tutorial's layout). Standard library only; leaves the last version deployed.
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crate", required=True)
    ap.add_argument("--server", required=True, help="public URL, e.g. http://localhost:8080")
    ap.add_argument("--client", required=True)
    ap.add_argument("--plugins-dir")
    ap.add_argument("--fhir-base", default="/fhir/r4")
    ap.add_argument("--profile", choices=["debug", "release"], default="debug")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    crate = os.path.abspath(args.crate)
    name = tomllib.load(open(os.path.join(crate, "Cargo.toml"), "rb"))["package"]["name"]
    plugins = args.plugins_dir or os.path.join(crate, "..", "hestia-data", "plugins")
    base = args.server.rstrip("/") + args.fhir_base
    client = json.load(open(args.client))

    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "system/*.*", "aud": base})
    token_request = urllib.request.Request(
        args.server.rstrip("/") + "/oauth2/token",
        data=form.encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    token = json.load(urllib.request.urlopen(token_request))["access_token"]

    def delete_answer():
        r = urllib.request.Request(
            f"{base}/Patient/nobody", method="DELETE", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            return urllib.request.urlopen(r).read().decode()
        except urllib.error.HTTPError as e:
            return e.read().decode()

    build = ["cargo", "build", "--target", "wasm32-wasip2"] + (["--release"] if args.profile == "release" else [])
    wasm = os.path.join(crate, "target", "wasm32-wasip2", args.profile, name.replace("-", "_") + ".wasm")
    shutil.copy(os.path.join(crate, f"{name}.toml"), plugins)
    lib = os.path.join(crate, "src", "lib.rs")
    for _ in range(args.rounds):
        marker = f"dev loop {time.time_ns()}"
        source = open(lib).read()
        edited, n = re.subn(r'Decision::deny\("[^"]*"\)', f'Decision::deny("{marker}")', source, count=1)
        if n != 1:
            sys.exit(f"{lib} has no Decision::deny(\"…\") to edit")
        open(lib, "w").write(edited)
        t0 = time.monotonic()
        subprocess.run(build, cwd=crate, check=True, capture_output=True)
        t1 = time.monotonic()
        shutil.copy(wasm, os.path.join(plugins, f"{name}.wasm.tmp"))
        os.rename(os.path.join(plugins, f"{name}.wasm.tmp"), os.path.join(plugins, f"{name}.wasm"))
        t2 = time.monotonic()
        while marker not in delete_answer():
            if time.monotonic() - t2 > 60:
                sys.exit("the new version was not served within 60 s")
            time.sleep(0.005)
        t3 = time.monotonic()
        print(
            f"{args.profile} {os.path.getsize(wasm)} bytes: build {t1 - t0:.2f} s, copy {t2 - t1:.3f} s, "
            f"swap {t3 - t2:.2f} s, total {t3 - t0:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
