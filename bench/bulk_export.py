#!/usr/bin/env python3
"""Bulk export: seeds N Patient-sized resources with `hestia fhir import` (the Patients of
bench/bulk_import.py) on a fresh SQLite data directory and, with --database-url, on a
PostgreSQL database (which must be empty of FHIR resources: use a new database), starts
`hestia serve` on it, and runs a `$export` of the Patients with a client_credentials token
of scope system/*.rs, downloading every file.

Usage: python3 bench/bulk_export.py [--bin PATH] [--count 100000] [--rounds 3]
                                    [--readers 2] [--rate 50] [--idle-secs 10]
                                    [--database-url URL]
Each round reads without an export for --idle-secs, then exports (kick-off, status polled
every 100 ms, every file downloaded, the job deleted). Prints per database and round the
resources/s of the export (kick-off to manifest, and with the downloads) and the server's
RSS before it and its peak during the export and downloads (/proc/PID/status VmRSS,
sampled every 50 ms); and over all rounds the p50/p99 of authorized `GET Patient/{id}`
reads by --readers clients, each paced at --rate requests/s, while an export runs, against
the same reads between exports.
Standard library only; talks to 127.0.0.1 only; stops the server when done.
"""
import argparse
import base64
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bulk_import import patient  # noqa: E402  (the same Patients as the import benchmark)


def store_args(data_dir, database_url):
    return ["--data-dir", data_dir] + (["--database-url", database_url] if database_url else [])


def seed(args, ndjson, data_dir, database_url):
    start = time.monotonic()
    done = subprocess.run(
        [args.bin, "fhir", "import", ndjson, *store_args(data_dir, database_url)],
        capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    if done.returncode != 0:
        raise SystemExit(f"seeding failed: {done.stdout} {done.stderr}")
    loaded = json.loads(done.stdout.strip().splitlines()[-1])["loaded"]
    return loaded, time.monotonic() - start


def start_server(args, data_dir, database_url):
    cmd = [args.bin, "serve", "--insecure-http", "--listen", "127.0.0.1:0",
           *store_args(data_dir, database_url)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "RUST_LOG": "warn"})
    for line in server.stdout:
        if line.startswith("hestia: listening on "):
            bound = line.split("listening on ")[1].split(";")[0].strip()
            base = line.split("FHIR base ")[1].split(";")[0].strip()
            host, port = bound.rsplit(":", 1)
            return server, host, int(port), base
    raise SystemExit("hestia did not start")


def token(args, host, port, data_dir, database_url, fhir_base):
    """A client_credentials token of scope system/*.rs for the FHIR base."""
    out = subprocess.run(
        [args.bin, "client", "add", "--name", "bulk-export-bench", "--grant-type",
         "client_credentials", "--scope", "system/*.rs", *store_args(data_dir, database_url)],
        check=True, capture_output=True, text=True).stdout
    client = json.loads(out)
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "system/*.rs",
                                   "aud": fhir_base})
    conn = http.client.HTTPConnection(host, port)
    conn.request("POST", "/oauth2/token", body=form, headers={
        "authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"token: {response.status} {data[:300]!r}")
    return json.loads(data)["access_token"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The server's VmRSS every 50 ms; `peak` since the last `reset`."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.last, self.stop = pid, 0, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.last = rss_kib(self.pid)
            self.peak = max(self.peak, self.last)
            time.sleep(0.05)

    def reset(self):
        self.peak = self.last


class Readers:
    """`count` clients reading random Patients, each paced at `rate` requests/s; the
    latencies (ms) of each phase go to the list `phase` names."""

    def __init__(self, host, port, path, auth, count, rate, n):
        self.phases, self.phase, self.stop = {}, None, threading.Event()
        self.threads = [threading.Thread(target=self.read, daemon=True,
                                         args=(host, port, path, auth, rate, n, i))
                        for i in range(count)]

    def start(self, phase):
        self.phase = phase
        self.phases.setdefault(phase, [])
        for t in self.threads:
            if not t.is_alive():
                t.start()

    def read(self, host, port, path, auth, rate, n, seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, port)
        interval, due = 1.0 / rate, time.monotonic()
        while not self.stop.is_set():
            phase = self.phase
            t = time.perf_counter()
            conn.request("GET", f"{path}/Patient/bench-{rng.randrange(n)}",
                         headers={"authorization": auth})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"read: {response.status}")
            if phase is not None:
                self.phases[phase].append((time.perf_counter() - t) * 1000)
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def export(host, port, path, auth, count):
    """Runs `$export?_type=Patient`: seconds to the manifest, then to the last byte; the
    job is deleted after its files are read."""
    conn = http.client.HTTPConnection(host, port)
    start = time.monotonic()
    conn.request("GET", f"{path}/$export?_type=Patient", headers={
        "authorization": auth, "accept": "application/fhir+json", "prefer": "respond-async"})
    response = conn.getresponse()
    response.read()
    if response.status != 202:
        raise SystemExit(f"kick-off: {response.status}")
    status = urllib.parse.urlparse(response.getheader("content-location")).path
    while True:
        conn.request("GET", status, headers={"authorization": auth})
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            break
        if response.status != 202:
            raise SystemExit(f"status: {response.status} {body[:300]!r}")
        time.sleep(0.1)
    exported = time.monotonic() - start
    lines = 0
    for item in json.loads(body)["output"]:
        conn.request("GET", urllib.parse.urlparse(item["url"]).path, headers={"authorization": auth})
        response = conn.getresponse()
        while chunk := response.read(1 << 16):
            lines += chunk.count(b"\n")
        if response.status != 200:
            raise SystemExit(f"file: {response.status}")
    total = time.monotonic() - start
    if lines != count:
        raise SystemExit(f"the export holds {lines} resources, not {count}: use an empty database")
    conn.request("DELETE", status, headers={"authorization": auth})
    response = conn.getresponse()
    response.read()
    return exported, total


def measure(args, name, ndjson, data_dir, database_url):
    loaded, seconds = seed(args, ndjson, data_dir, database_url)
    print(f"{name}: seeded {loaded} Patients in {seconds:.1f} s")
    server, host, port, base = start_server(args, data_dir, database_url)
    try:
        path = urllib.parse.urlparse(base).path
        auth = "Bearer " + token(args, host, port, data_dir, database_url, base)
        sampler = Sampler(server.pid)
        sampler.start()
        readers = Readers(host, port, path, auth, args.readers, args.rate, loaded)
        readers.start(None)
        time.sleep(3)  # warm-up: connections, caches, the token verified once
        for round_ in range(1, args.rounds + 1):
            readers.start("idle")
            time.sleep(args.idle_secs)
            before = sampler.last
            sampler.reset()
            readers.start("export")
            exported, total = export(host, port, path, auth, loaded)
            peak = sampler.peak
            print(f"{name} round {round_}: {exported:.1f} s to the manifest "
                  f"({loaded / exported:,.0f} resources/s), {total:.1f} s with the downloads "
                  f"({loaded / total:,.0f} resources/s); RSS {before / 1024:.0f} MiB before, "
                  f"peak {peak / 1024:.0f} MiB (+{(peak - before) / 1024:.0f} MiB)")
        readers.finish()
        sampler.stop.set()
    finally:
        server.terminate()
        server.wait(timeout=60)
    for label, phase in [("without export", "idle"), ("during export", "export")]:
        values = readers.phases[phase]
        print(f"{name}: GET Patient/{{id}} {label}: p50 {statistics.median(values):.2f} ms, "
              f"p99 {percentile(values, 0.99):.2f} ms ({len(values)} reads)")


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "hestia"))
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=50.0, help="reads per second per reader")
    ap.add_argument("--idle-secs", type=float, default=10.0)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    rng = random.Random(7)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        ndjson = os.path.join(tmp, "Patient.ndjson")
        with open(ndjson, "w") as out:
            for n in range(args.count):
                out.write(json.dumps(patient(n, rng), ensure_ascii=False) + "\n")
        targets = [("SQLite", None)] + ([("PostgreSQL", args.database_url)] if args.database_url else [])
        for name, url in targets:
            data = os.path.join(tmp, name)
            os.mkdir(data)
            measure(args, name, ndjson, data, url)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
