#!/usr/bin/env python3
"""Search latency on a few thousand resources: starts `hestia serve` (plain HTTP on
loopback, a fresh SQLite data directory, or --database-url), loads N patients with
M observations each, then times each query (median and p95 of R runs, one client).

Usage: python3 bench/search_latency.py [--bin PATH] [--patients 500] [--obs 5]
                                       [--runs 30] [--bundle 1000] [--clients 1]
                                       [--database-url URL] [--data-dir DIR [--no-load]]
The load is transaction Bundles of --bundle PUT entries sent by --clients connections at
once; the load's rate and each Bundle request's (resources/s, median and p10) are the
Bundle benchmark.
Every request carries an access token: a client_credentials client is added with
`hestia client add` (scope `system/*.*`, or --scope), and its token names the FHIR base as
audience, so each query runs through the full resource-server path (token check, audience
and scope-policy plugins, the decision's constraints in the SQL).
--data-dir keeps the data directory (SQLite file, keys) for a later run with --no-load,
which times the queries on what an earlier run loaded (another build on the same data).
Standard library only; talks to 127.0.0.1 only; stops the server when done.
"""
import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse

QUERIES = [
    "Patient?family=fam1",
    "Patient?name=giv&_count=50",
    "Patient?birthdate=ge1980&_sort=-birthdate&_count=20",
    "Observation?code=http://loinc.org|8867-4&_count=20",
    "Observation?subject=Patient/p7",
    "Observation?value-quantity=gt150&_total=accurate",
    "Observation?subject.family=fam3&_count=20",
    "Patient?_has:Observation:subject:value-quantity=gt190",
    "Observation?date=2021&_sort=date&_count=20",
    "Patient?_id=p1&_revinclude=Observation:subject",
    "Observation?code=8867-4&_include=Observation:subject&_count=50",
]


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "hestia"))
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--bundle", type=int, default=1000,
                    help="entries per transaction Bundle of the load (1: a PUT each)")
    ap.add_argument("--clients", type=int, default=1,
                    help="connections sending the load's requests at once")
    ap.add_argument("--database-url")
    ap.add_argument("--scope", default="system/*.*",
                    help="scope of the benchmark client's token (default system/*.*)")
    ap.add_argument("--data-dir",
                    help="data directory to use and keep (default: a temporary one)")
    ap.add_argument("--no-load", action="store_true",
                    help="time the queries on what the data directory holds already")
    args = ap.parse_args()
    if args.no_load and not args.data_dir:
        raise SystemExit("--no-load needs --data-dir")
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
        serve(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            serve(args, tmp)


def serve(args, data_dir):
    """Starts the server on `data_dir`, runs the benchmark, stops it."""
    cmd = [args.bin, "serve", "--insecure-http", "--listen", "127.0.0.1:0",
           "--data-dir", data_dir]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    env = {**os.environ, "RUST_LOG": "warn"}
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in server.stdout:
            if line.startswith("hestia: listening on "):
                bound = line.split("listening on ")[1].split(";")[0].strip()
                base = line.split("FHIR base ")[1].split(";")[0].strip()
                break
        else:
            raise SystemExit("hestia did not start")
        host, port = bound.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
        token = get_token(conn, args, data_dir, base)
        HEADERS["authorization"] = f"Bearer {token}"
        run(conn, urllib.parse.urlparse(base).path, args)
    finally:
        server.terminate()
        server.wait(timeout=30)


HEADERS = {}


def get_token(conn, args, data_dir, fhir_base):
    """A client_credentials token for the FHIR base, from a client made with the CLI."""
    store = ["--data-dir", data_dir]
    if args.database_url:
        store += ["--database-url", args.database_url]
    out = subprocess.run(
        [args.bin, "client", "add", "--name", "search-latency", "--grant-type",
         "client_credentials", "--scope", args.scope, *store],
        check=True, capture_output=True, text=True).stdout
    client = json.loads(out)
    basic = base64.b64encode(
        f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                   "scope": args.scope, "aud": fhir_base})
    conn.request("POST", "/oauth2/token", body=form, headers={
        "authorization": f"Basic {basic}",
        "content-type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"token: {response.status} {data[:300]!r}")
    return json.loads(data)["access_token"]


def request(conn, method, path, body=None):
    headers = dict(HEADERS)
    if body:
        headers["content-type"] = "application/fhir+json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
    return data


def resources(args):
    """The generated Patients and Observations, as (type, id, resource), Patients first
    in each group so that an Observation's subject is written before or with it."""
    for p in range(args.patients):
        yield "Patient", f"p{p}", {
            "resourceType": "Patient", "id": f"p{p}",
            "name": [{"family": f"fam{p % 50}", "given": [f"given{p}"]}],
            "gender": ["female", "male"][p % 2],
            "birthDate": f"{1940 + p % 60}-0{1 + p % 9}-1{p % 9}",
        }
        for o in range(args.obs):
            code = ["8867-4", "8310-5", "2339-0"][o % 3]
            yield "Observation", f"o{p}-{o}", {
                "resourceType": "Observation", "id": f"o{p}-{o}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/p{p}"},
                "effectiveDateTime": f"{2018 + o % 5}-0{1 + p % 9}-1{o % 9}",
                "valueQuantity": {"value": (p * 7 + o * 13) % 200,
                                  "system": "http://unitsofmeasure.org", "code": "/min"},
            }


def load(conn, base, args):
    """Writes every resource with transaction Bundles of --bundle PUT entries (one PUT
    per resource with --bundle 1), sent by --clients connections at once, and prints the
    load's rate and the Bundles' median."""
    batches = []
    for entry in resources(args):
        if not batches or len(batches[-1]) == args.bundle:
            batches.append([])
        batches[-1].append(entry)
    pending = iter(batches)
    lock = threading.Lock()
    rates = []

    def send(client, batch):
        t = time.perf_counter()
        if args.bundle == 1:
            kind, rid, body = batch[0]
            request(client, "PUT", f"{base}/{kind}/{rid}", json.dumps(body))
        else:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": body, "request": {"method": "PUT", "url": f"{kind}/{rid}"}}
                for kind, rid, body in batch]}
            request(client, "POST", base, json.dumps(bundle))
        with lock:
            rates.append(len(batch) / (time.perf_counter() - t))

    def worker(client):
        while True:
            with lock:
                batch = next(pending, None)
            if batch is None:
                return
            send(client, batch)

    clients = [conn] + [http.client.HTTPConnection(conn.host, conn.port)
                        for _ in range(args.clients - 1)]
    start = time.time()
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.time() - start
    total = sum(len(b) for b in batches)
    print(f"loaded {total} resources in {seconds:.1f} s ({total / seconds:.0f}/s, "
          f"{len(rates)} requests of up to {args.bundle} from {args.clients} clients; "
          f"the median request {statistics.median(rates):.0f} resources/s, p10 "
          f"{sorted(rates)[len(rates) // 10]:.0f})")


def run(conn, base, args):
    if not args.no_load:
        load(conn, base, args)
    print(f"{'query':66} {'median ms':>10} {'p95 ms':>8} {'total':>6}")
    for q in QUERIES:
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            data = request(conn, "GET", f"{base}/{urllib.parse.quote(q, safe='?=&/:,._-')}")
            times.append((time.perf_counter() - t) * 1000)
        bundle = json.loads(data)
        times.sort()
        p95 = times[max(0, int(len(times) * 0.95) - 1)]
        print(f"{q:66} {statistics.median(times):10.2f} {p95:8.2f} {bundle.get('total', '-'):>6}")


if __name__ == "__main__":
    main()
