#!/usr/bin/env python3
"""Bulk import: generates N Patient-sized resources as NDJSON and times
`hestia fhir import` on a fresh SQLite data directory and, with --database-url, on a
PostgreSQL database (which must be empty of FHIR resources: use a new database).

Usage: python3 bench/bulk_import.py [--bin PATH] [--count 100000] [--batch N]
                                    [--database-url postgres://...]
Prints resources/s for each database; the wall time includes start-up (migrations,
plugin compilation), which is part of what an import costs.
Standard library only.
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time

FAMILIES = ["Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Tanaka"]
GIVEN = ["Anna", "Ben", "Chloé", "David", "Eva", "Farid", "Greta", "Hugo", "Ines", "Jon"]


def patient(n, rng):
    """A Patient of about 1 KB with the elements real records carry (names, identifiers,
    telecom, address, birth date), so each has its usual ~30 index rows."""
    family = rng.choice(FAMILIES)
    return {
        "resourceType": "Patient",
        "id": f"bench-{n}",
        "identifier": [
            {"system": "http://hospital.example/mrn", "value": f"MRN{n:08d}"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": f"{n:09d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": family,
                  "given": [rng.choice(GIVEN), rng.choice(GIVEN)], "prefix": ["Dr."]}],
        "telecom": [{"system": "phone", "value": f"+1-555-{n % 10000:04d}", "use": "home"},
                    {"system": "email", "value": f"p{n}@example.org"}],
        "gender": rng.choice(["male", "female", "other", "unknown"]),
        "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "address": [{"use": "home", "line": [f"{n % 999 + 1} Main Street"],
                     "city": rng.choice(["Springfield", "Lyon", "Bremen", "Osaka"]),
                     "postalCode": f"{n % 90000 + 10000}", "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "M", "display": "Married"}]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]},
                           "preferred": True}],
        "generalPractitioner": [{"reference": f"Practitioner/gp-{n % 50}"}],
    }


def timed_import(args, path, tmp, database_url):
    cmd = [args.bin, "fhir", "import", path,
           "--data-dir", tmp, "--errors", os.path.join(tmp, "errors.ndjson")]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if database_url:
        cmd += ["--database-url", database_url]
    # The pages an earlier run (the NDJSON file, the SQLite import) left dirty are written
    # out before, not during, the timed import.
    os.sync()
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"import failed: {done.stdout} {done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["loaded"], elapsed


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "hestia"))
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--batch", type=int,
                    help="resources per transaction (default: the importer's own choice)")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "Patient.ndjson")
        with open(path, "w") as out:
            for n in range(args.count):
                out.write(json.dumps(patient(n, rng), ensure_ascii=False) + "\n")
        size = os.path.getsize(path)
        print(f"{args.count} Patients, {size / args.count:.0f} bytes each on average")
        targets = [("SQLite", None)] + ([("PostgreSQL", args.database_url)] if args.database_url else [])
        for name, url in targets:
            data = os.path.join(tmp, name)
            os.mkdir(data)
            loaded, elapsed = timed_import(args, path, data, url)
            print(f"{name}: {loaded} resources in {elapsed:.1f} s = {loaded / elapsed:,.0f} resources/s")


if __name__ == "__main__":
    main()
