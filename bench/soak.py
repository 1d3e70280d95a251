#!/usr/bin/env python3
"""Endurance soak: a mixed load against a release `hestia serve` for N minutes, with a
plugin hot swap every minute, reported per minute (requests, errors, latency p50/p95/p99,
the server's RSS). Passes with 0 errors and an RSS growth under 5 % from minute 2 to the
last minute.

Usage: python3 bench/soak.py [--bin PATH] [--minutes 10] [--rate R | --fraction 0.8]
                             [--database-url URL] [--workers 2] [--connections N]
                             [--ramp-secs 8] [--seed-patients 20000] [--json FILE]

It starts `hestia serve` (plain HTTP on loopback, RUST_LOG=warn) on a fresh SQLite data
directory, or on --database-url (an empty PostgreSQL database: make a new one per run).
Two clients come from `hestia client add`: one `client_credentials` client with
`system/*.*`, one with `hestia:admin` (to read `GET /admin/plugins`). A scope-policy
plugin, the template of `hestia plugin new soak-swap --kind scope-policy` built with
`hestia plugin build` (cached in CARGO_TARGET_DIR/bench-soak/; needs cargo and the
`wasm32-wasip2` target) is copied into the plugin directory. It refuses deletes.

The seed, --seed-patients Patients with two Observations each, is loaded with `hestia fhir
import` beside the running server. Its default makes the database larger than what the
server caches of it (SQLite: 512 KiB of pages per pooled connection) from the start, as in a
deployment; on a small seed those caches fill while the soak's creates grow the database,
which reads as RSS growth that stops at their bound.

The mix, chosen at random per request with these weights (`MIX`): a token
(client_credentials; the thread then uses the new token), a read of a seeded Patient, a
search (by family, identifier, or the Observations of a Patient), a create (Patient or
Observation), an update (PUT of a seeded Patient, so versions and history grow), and a
delete of a seeded Patient that the plugin must refuse (403: the only expected non-2xx;
a 204 would be an error). Any other answer that is not 2xx, and any failed connection, is
an error.

First a ramp measures the peak: closed-loop load (each connection sends its next request
when the previous one is answered) for --ramp-secs at 1, 2, 4, 8, 16 connections per
worker process, stopping when the rate no longer rises by 5 %; the peak is the best
rate. The soak then paces its requests at --fraction of that peak (default 0.8), or at
--rate, over the connections of the best ramp step (or --connections), spread over
--workers processes (Python threads share a lock; processes do not).

Every minute, at its 30th second, the plugin's component is replaced through the plugin
directory (written beside it, then renamed over it) with a new version: the same
component with a custom section that carries the swap's number, so each swap is a new
SHA-256 that the host compiles and swaps in. The swap counts as done when `GET
/admin/plugins` shows the new version `active`; one that takes more than 30 s is an error.
The RSS is VmRSS of /proc/PID/status, sampled every second; a minute's RSS is the last
sample within it. Its anonymous part (RssAnon: heap and stacks, without the pages of
mapped files such as SQLite's WAL index) is shown beside it. Exit status 0 when the run passes, 1 when it fails.
Standard library only; talks to 127.0.0.1 only; stops the server when done.
"""
import argparse
import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

MIX = [("token", 5), ("read", 40), ("search", 25), ("create", 12), ("update", 15),
       ("delete-refused", 3)]
PLUGIN = "soak-swap"
DENIAL = "deletes are disabled on this server"
BASE_PATH = "/fhir/r4"
SWAP_DEADLINE = 30.0


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args, tmp)
        try:
            passed = run(args, server)
        except BaseException:
            for line in server.log_lines()[:10]:
                print(f"  server log: {line[:600]}")
            raise
        finally:
            server.stop()
    sys.exit(0 if passed else 1)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "hestia"))
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--rate", type=float, help="requests/s to soak at (skips the ramp)")
    ap.add_argument("--fraction", type=float, default=0.8, help="of the measured peak")
    ap.add_argument("--database-url", help="an empty PostgreSQL database")
    ap.add_argument("--workers", type=int, default=2, help="load processes")
    ap.add_argument("--connections", type=int, help="total connections of the soak")
    ap.add_argument("--ramp-secs", type=float, default=8)
    ap.add_argument("--seed-patients", type=int, default=20000)
    ap.add_argument("--plugin-dir", default=os.path.join(target, "bench-soak"),
                    help="where the plugin crate is made and built once")
    ap.add_argument("--no-swap", action="store_true",
                    help="no plugin swaps (to tell their memory from the rest's)")
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    if args.minutes < 3:
        ap.error("--minutes must be at least 3 (the growth is measured from minute 2)")
    return args


class Server:
    """`hestia serve` on a fresh data directory; its log (stderr) goes to a file."""

    def __init__(self, args, tmp):
        self.bin, self.tmp, self.url = args.bin, tmp, args.database_url
        self.data = os.path.join(tmp, "data")
        self.plugins = os.path.join(self.data, "plugins")
        os.makedirs(self.plugins)
        self.log_path = os.path.join(tmp, "serve.log")
        cmd = [self.bin, "serve", "--insecure-http", "--listen", "127.0.0.1:0",
               "--data-dir", self.data] + self.store_flags()[2:]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "RUST_LOG": "warn"})
        for line in self.proc.stdout:
            if line.startswith("hestia: listening on "):
                bound = line.split("listening on ")[1].split(";")[0].strip()
                self.fhir_base = line.split("FHIR base ")[1].split(";")[0].strip()
                break
        else:
            raise SystemExit(f"hestia did not start: {open(self.log_path).read()[-2000:]}")
        # Keep reading standard output so that the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.host, port = bound.rsplit(":", 1)
        self.port = int(port)

    def store_flags(self):
        return ["--data-dir", self.data] + (["--database-url", self.url] if self.url else [])

    def cli(self, *argv, cwd=None):
        done = subprocess.run([self.bin, *argv], capture_output=True, text=True, cwd=cwd)
        if done.returncode != 0:
            raise SystemExit(f"hestia {' '.join(argv)}: {done.stdout}{done.stderr}")
        return done.stdout

    def rss_kib(self):
        """VmRSS and its anonymous part (RssAnon: the heap, not SQLite's mapped files)."""
        found = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    found[line.split(":")[0]] = int(line.split()[1])
        return found.get("VmRSS", 0), found.get("RssAnon", 0)

    def log_lines(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as log:
            return [line.rstrip() for line in log if " WARN " in line or " ERROR " in line]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def client(server, name, scope):
    out = server.cli("client", "add", "--name", name, "--grant-type", "client_credentials",
                     "--scope", scope, *server.store_flags())
    made = json.loads(out)
    return base64.b64encode(f"{made['client_id']}:{made['client_secret']}".encode()).decode()


def token(conn, basic, scope, aud=None):
    form = {"grant_type": "client_credentials", "scope": scope}
    if aud:
        form["aud"] = aud
    status, body = send(conn, "POST", "/oauth2/token", urllib.parse.urlencode(form), {
        "authorization": f"Basic {basic}",
        "content-type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise SystemExit(f"token: {status} {body[:300]!r}")
    return json.loads(body)["access_token"]


def send(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def run(args, server):
    plugin = Plugin(args, server)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    basic = client(server, "soak", "system/*.*")
    admin = token(conn, client(server, "soak-admin", "hestia:admin"), "hestia:admin")
    plugin.install(conn, admin)
    setup = {"host": server.host, "port": server.port, "basic": basic,
             "aud": server.fhir_base, "patients": args.seed_patients}
    seed(server, args.seed_patients)
    load = os.getloadavg()
    print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.rate:
        rate, connections, ramp = args.rate, args.connections or 8 * args.workers, []
    else:
        ramp = measure_peak(args, setup)
        best = max(ramp, key=lambda step: step["rate"])
        rate = args.fraction * best["rate"]
        connections = args.connections or best["connections"]
        print(f"peak {best['rate']:.0f} req/s at {best['connections']} connections; "
              f"soaking at {rate:.0f} req/s ({args.fraction:.0%}) on {connections}")
    minutes = soak(args, setup, server, plugin, admin, rate, connections)
    return report(args, server, ramp, rate, connections, minutes, load, plugin)


def seed(server, patients):
    """Seeded Patients (read, updated, searched, refused deletes) with two Observations,
    loaded with `hestia fhir import` beside the running server (an NDJSON file)."""
    path = os.path.join(server.tmp, "seed.ndjson")
    with open(path, "w") as out:
        for i in range(patients):
            for resource in [patient(f"soak-p{i}", i, 0), observation(f"soak-o{i}-0", i, 0),
                             observation(f"soak-o{i}-1", i, 1)]:
                out.write(json.dumps(resource) + "\n")
    started = time.monotonic()
    server.cli("fhir", "import", path, *server.store_flags())
    print(f"seeded {patients} Patients and {2 * patients} Observations "
          f"in {time.monotonic() - started:.1f} s", flush=True)


def patient(pid, n, version):
    resource = {"resourceType": "Patient",
                "identifier": [{"system": "urn:soak", "value": f"id-{n}"}],
                "name": [{"family": f"Fam{n % 1000}", "given": [f"Given{n}", f"v{version}"]}],
                "gender": ["female", "male"][n % 2],
                "birthDate": f"{1940 + n % 60}-0{1 + n % 9}-1{n % 9}",
                "telecom": [{"system": "phone", "value": f"+1-555-{n % 10000:04d}"}]}
    if pid:
        resource["id"] = pid
    return resource


def observation(oid, n, k):
    resource = {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org",
                                     "code": ["8867-4", "8310-5"][k % 2]}]},
                "subject": {"reference": f"Patient/soak-p{n}"},
                "effectiveDateTime": f"{2018 + k % 5}-0{1 + n % 9}-1{k % 9}",
                "valueQuantity": {"value": (n * 7 + k * 13) % 200,
                                  "system": "http://unitsofmeasure.org", "code": "/min"}}
    if oid:
        resource["id"] = oid
    return resource


class Plugin:
    """The scope-policy template, built once; each swap writes a new version of it."""

    def __init__(self, args, server):
        self.server = server
        crate = os.path.join(os.path.abspath(args.plugin_dir), PLUGIN)
        self.wasm = os.path.join(crate, f"{PLUGIN}.wasm")
        self.manifest = os.path.join(crate, f"{PLUGIN}.toml")
        if not os.path.exists(self.wasm):
            if os.path.exists(crate):
                shutil.rmtree(crate)
            os.makedirs(os.path.dirname(crate), exist_ok=True)
            print(f"building the {PLUGIN} plugin in {crate} (once)")
            server.cli("plugin", "new", PLUGIN, "--kind", "scope-policy",
                       cwd=os.path.dirname(crate))
            server.cli("plugin", "build", cwd=crate)
        self.original = open(self.wasm, "rb").read()
        self.swaps = []

    def version(self, number):
        """The component with a custom section `hestia-soak` holding `number`."""
        name = b"hestia-soak"
        content = leb128(len(name)) + name + str(number).encode()
        return self.original + b"\x00" + leb128(len(content)) + content

    def install(self, conn, admin):
        shutil.copy(self.manifest, self.server.plugins)
        self.swap(conn, admin, 0)

    def swap(self, conn, admin, number):
        """Writes version `number` and waits until /admin/plugins shows it active."""
        wasm = self.version(number)
        expected = hashlib.sha256(wasm).hexdigest()[:12]
        path = os.path.join(self.server.plugins, f"{PLUGIN}.wasm")
        start = time.monotonic()
        with open(path + ".tmp", "wb") as out:
            out.write(wasm)
        os.rename(path + ".tmp", path)
        headers = {"authorization": f"Bearer {admin}"}
        while time.monotonic() - start < SWAP_DEADLINE:
            status, body = send(conn, "GET", "/admin/plugins", headers=headers)
            if status == 200 and any(p["name"] == PLUGIN and p["version"] == expected
                                     and p["state"] == "active"
                                     for p in json.loads(body)["plugins"]):
                self.swaps.append(time.monotonic() - start)
                return True
            time.sleep(0.05)
        self.swaps.append(None)
        return False


def leb128(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def measure_peak(args, setup):
    steps = []
    for per_worker in [1, 2, 4, 8, 16]:
        connections = per_worker * args.workers
        minutes = drive(args, setup, None, connections, args.ramp_secs, args.ramp_secs)
        step = merge(minutes)[0]
        rate = step["ok"] / args.ramp_secs
        print(f"ramp: {connections:3} connections  {rate:7.0f} req/s  "
              f"p99 {percentile(step['lat'], 99):7.1f} ms  errors {sum(step['errors'].values())}")
        steps.append({"connections": connections, "rate": rate,
                      "errors": dict(step["errors"]), "samples": step["samples"]})
        if sum(step["errors"].values()):
            raise SystemExit(f"errors during the ramp: {step['errors']} {step['samples']}")
        if len(steps) > 1 and rate < 1.05 * max(s["rate"] for s in steps[:-1]):
            break
    return steps


def drive(args, setup, rate, connections, duration, bucket_secs, on_tick=None):
    """Runs the load in --workers processes; returns every thread's buckets."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = time.monotonic() + 1.0
    per_worker = [connections // args.workers + (w < connections % args.workers)
                  for w in range(args.workers)]
    procs = [ctx.Process(target=worker, args=(setup, w, n, rate and rate * n / connections,
                                              start, duration, bucket_secs, results))
             for w, n in enumerate(per_worker) if n]
    for p in procs:
        p.start()
    threads = sum(n for n in per_worker if n)
    buckets = []
    while len(buckets) < threads or any(p.is_alive() for p in procs):
        if on_tick:
            on_tick(start)
        try:
            buckets.append(results.get(timeout=0.2))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    for p in procs:
        p.join()
    if len(buckets) < threads:
        raise SystemExit(f"{threads - len(buckets)} load threads died")
    return [b for thread in buckets for b in thread]


def worker(setup, index, threads, rate, start, duration, bucket_secs, results):
    """One load process: `threads` connections sharing `rate` (None: closed loop)."""
    def thread(n):
        load = Load(setup, random.Random(index * 1000 + n), f"w{index}t{n}")
        interval = threads / rate if rate else 0.0
        results.put(load.run(start, duration, bucket_secs, interval, n * interval / threads))
    pool = [threading.Thread(target=thread, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


class Load:
    """One connection's share of the mix, with its own token and counters."""

    def __init__(self, setup, rng, name):
        self.setup, self.rng, self.name = setup, rng, name
        self.conn = None
        self.made = 0
        self.bearer = None
        self.ops = [op for op, weight in MIX for _ in range(weight)]

    def run(self, start, duration, bucket_secs, interval, offset):
        buckets = {}
        ok, self.bearer = self.token_request()
        if not ok:
            raise SystemExit(f"{self.name}: no token: {self.bearer}")
        time.sleep(max(0.0, start - time.monotonic()))
        due = start + offset
        while True:
            now = time.monotonic()
            if now >= start + duration:
                return list(buckets.values())
            if interval:
                if due > now:
                    time.sleep(due - now)
                # A connection that fell more than a second behind does not catch up in a
                # burst; the achieved rate shows it.
                due = max(due + interval, time.monotonic() - 1.0)
            op = self.rng.choice(self.ops)
            t0 = time.monotonic()
            ok, detail = self.call(op)
            ms = (time.monotonic() - t0) * 1000
            minute = int((t0 - start) // bucket_secs)
            b = buckets.setdefault(minute, new_bucket(minute))
            b["lat"].append(ms)
            b["counts"][op] = b["counts"].get(op, 0) + 1
            if ok:
                b["ok"] += 1
            else:
                b["errors"][detail[0]] = b["errors"].get(detail[0], 0) + 1
                b["samples"].setdefault(detail[0], detail[1])

    def call(self, op):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.setup["host"], self.setup["port"],
                                                       timeout=60)
            return getattr(self, op.replace("-", "_"))()
        except (OSError, http.client.HTTPException) as e:
            self.conn = None
            return False, (f"{op} connection", repr(e))

    def fhir(self, op, method, path, expect, body=None):
        headers = {"authorization": f"Bearer {self.bearer}"}
        if body is not None:
            headers["content-type"] = "application/fhir+json"
            body = json.dumps(body)
        status, data = send(self.conn, method, f"{BASE_PATH}/{path}", body, headers)
        if status != expect:
            return False, (f"{op} {status}", data[:300].decode(errors="replace"))
        return True, data

    def token_request(self):
        form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                       "scope": "system/*.*", "aud": self.setup["aud"]})
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.setup["host"], self.setup["port"],
                                                   timeout=60)
        status, data = send(self.conn, "POST", "/oauth2/token", form, {
            "authorization": f"Basic {self.setup['basic']}",
            "content-type": "application/x-www-form-urlencoded"})
        if status != 200:
            return False, (f"token {status}", data[:300].decode(errors="replace"))
        return True, json.loads(data)["access_token"]

    def token(self):
        ok, value = self.token_request()
        if ok:
            self.bearer = value
        return ok, value

    def seeded(self):
        return self.rng.randrange(self.setup["patients"])

    def read(self):
        return self.fhir("read", "GET", f"Patient/soak-p{self.seeded()}", 200)

    def search(self):
        n = self.seeded()
        query = self.rng.choice([f"Patient?family=Fam{n % 1000}&_count=10",
                                 f"Patient?identifier=urn:soak|id-{n}",
                                 f"Observation?subject=Patient/soak-p{n}&_count=10"])
        return self.fhir("search", "GET", urllib.parse.quote(query, safe="?=&/:|_-"), 200)

    def create(self):
        self.made += 1
        n = self.seeded()
        if self.made % 2:
            return self.fhir("create", "POST", "Patient", 201, patient(None, n, self.made))
        return self.fhir("create", "POST", "Observation", 201, observation(None, n, self.made))

    def update(self):
        n = self.seeded()
        body = patient(f"soak-p{n}", n, self.rng.randrange(1 << 30))
        return self.fhir("update", "PUT", f"Patient/soak-p{n}", 200, body)

    def delete_refused(self):
        ok, data = self.fhir("delete-refused", "DELETE", f"Patient/soak-p{self.seeded()}", 403)
        if ok and DENIAL.encode() not in data:
            return False, ("delete-refused 403 without the plugin's denial", data[:300].decode())
        return ok, data


def new_bucket(minute):
    return {"minute": minute, "ok": 0, "counts": {}, "errors": {}, "samples": {}, "lat": []}


def merge(buckets):
    """Buckets of every thread merged by minute, in order."""
    by_minute = {}
    for b in buckets:
        m = by_minute.setdefault(b["minute"], new_bucket(b["minute"]))
        m["ok"] += b["ok"]
        m["lat"].extend(b["lat"])
        for key in ("counts", "errors"):
            for k, v in b[key].items():
                m[key][k] = m[key].get(k, 0) + v
        for k, v in b["samples"].items():
            m["samples"].setdefault(k, v)
    return [by_minute[k] for k in sorted(by_minute)]


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def soak(args, setup, server, plugin, admin, rate, connections):
    """The soak itself, with RSS sampled every second and a swap in every minute."""
    rss = []
    swapper = {"next": 0, "thread": None}
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)

    def tick(start):
        now = time.monotonic()
        if now >= start and (not rss or now - start - rss[-1][0] >= 1.0):
            vm, anon = server.rss_kib()
            rss.append((now - start, vm, os.getloadavg()[0], anon))
            if len(rss) > 1 and int(rss[-2][0] // 60) < int(rss[-1][0] // 60):
                print(f"minute {int(rss[-2][0] // 60) + 1} done: RSS {rss[-2][1] / 1024:.1f} MiB, "
                      f"load {rss[-2][2]:.2f}, swaps (s) {swap_times(plugin.swaps[1:])}", flush=True)
        due = start + 30 + 60 * swapper["next"]
        busy = swapper["thread"] and swapper["thread"].is_alive()
        if now >= due and not busy and swapper["next"] < args.minutes and not args.no_swap:
            swapper["next"] += 1
            swapper["thread"] = threading.Thread(
                target=plugin.swap, args=(conn, admin, swapper["next"]))
            swapper["thread"].start()

    buckets = drive(args, setup, rate, connections, 60 * args.minutes, 60, tick)
    if swapper["thread"]:
        swapper["thread"].join()
    # A request answered after the last minute ended belongs to none.
    minutes = [m for m in merge(buckets) if m["minute"] < args.minutes]
    for m in minutes:
        within = [r for r in rss if 60 * m["minute"] <= r[0] < 60 * (m["minute"] + 1)]
        m["rss_kib"] = within[-1][1] if within else None
        m["anon_kib"] = within[-1][3] if within else None
        m["load"] = max((r[2] for r in within), default=None)
        swap = plugin.swaps[m["minute"] + 1] if m["minute"] + 1 < len(plugin.swaps) else "-"
        m["swap_secs"] = swap
    return minutes


def mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


def swap_times(swaps):
    return " ".join("FAILED" if s is None else f"{s:.2f}" for s in swaps) or "-"


def report(args, server, ramp, rate, connections, minutes, load, plugin):
    print(f"\n{'minute':>6} {'requests':>9} {'req/s':>7} {'errors':>6} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'anon MiB':>8} {'swap s':>7} {'load':>5}")
    for m in minutes:
        swap = m["swap_secs"]
        swap = "-" if swap == "-" else ("FAILED" if swap is None else f"{swap:.2f}")
        print(f"{m['minute'] + 1:>6} {len(m['lat']):>9} {len(m['lat']) / 60:>7.0f} "
              f"{sum(m['errors'].values()):>6} {percentile(m['lat'], 50):>7.1f} "
              f"{percentile(m['lat'], 95):>7.1f} {percentile(m['lat'], 99):>7.1f} "
              f"{mib(m['rss_kib']):>8} {mib(m['anon_kib']):>8} {swap:>7} {m['load'] or 0:>5.2f}")
    counts = {}
    for m in minutes:
        for k, v in m["counts"].items():
            counts[k] = counts.get(k, 0) + v
    print("requests by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    errors = {}
    for m in minutes:
        for k, v in m["errors"].items():
            errors[k] = errors.get(k, 0) + v
            print(f"  minute {m['minute'] + 1}: {v} × {k}: {m['samples'][k][:200]}")
    failed_swaps = sum(1 for s in plugin.swaps if s is None)
    second, last = minutes[1]["rss_kib"], minutes[-1]["rss_kib"]
    growth = (last - second) / second
    logged = server.log_lines()
    for line in logged[:10]:
        print(f"  server log: {line[:300]}")
    passed = not errors and not failed_swaps and growth < 0.05
    print(f"target {rate:.0f} req/s on {connections} connections; achieved "
          f"{sum(len(m['lat']) for m in minutes) / (60 * len(minutes)):.0f} req/s")
    print(f"errors {sum(errors.values())}, failed swaps {failed_swaps} of {len(plugin.swaps) - 1}, "
          f"server log WARN/ERROR lines {len(logged)}")
    print(f"RSS minute 2 {second / 1024:.1f} MiB, minute {len(minutes)} {last / 1024:.1f} MiB: "
          f"growth {growth:+.1%} (limit 5 %)")
    print("PASS" if passed else "FAIL")
    if args.json:
        write_json(args, ramp, rate, connections, minutes, load, plugin, growth, passed, logged)
    return passed


def write_json(args, ramp, rate, connections, minutes, load, plugin, growth, passed, logged):
    rows = [{"minute": m["minute"] + 1, "requests": len(m["lat"]), "counts": m["counts"],
             "errors": m["errors"], "samples": m["samples"],
             "p50_ms": percentile(m["lat"], 50), "p95_ms": percentile(m["lat"], 95),
             "p99_ms": percentile(m["lat"], 99), "rss_kib": m["rss_kib"], "anon_kib": m["anon_kib"],
             "swap_secs": m["swap_secs"], "max_load": m["load"]} for m in minutes]
    with open(args.json, "w") as out:
        json.dump({"database": "postgres" if args.database_url else "sqlite",
                   "load_before": load, "ramp": ramp, "rate": rate,
                   "connections": connections, "minutes": rows, "swaps": plugin.swaps,
                   "rss_growth": growth, "passed": passed, "server_log": logged}, out, indent=1)


if __name__ == "__main__":
    main()
