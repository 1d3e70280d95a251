#!/usr/bin/env python3
"""Collects the example resources of hl7.fhir.r4.examples@4.0.1 into one JSON array,
for the acceptance test that creates and reads back every example
(tests/tests/all/search.rs, `every_r4_example_round_trips`).

Selected: every resource of the package that is not a Bundle (5,262 of them: the
examples, and the specification's own definitions, SearchParameter, ValueSet, CodeSystem,
StructureDefinition, ...). Sorted by file name; unchanged otherwise (CC0). Compressed with
zstd -19 it is about 4 MB (the JSON is 79 MB).

Usage:
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz)
  python3 tools/fhir-defs/examples.py "$tmp/package" | zstd -19 -o tests/fixtures/r4-examples.json.zst
"""
import json
import os
import sys

def main(package_dir):
    selected = []
    for name in sorted(os.listdir(package_dir)):
        if not name.endswith(".json") or name == "package.json":
            continue
        with open(os.path.join(package_dir, name), encoding="utf-8") as f:
            resource = json.load(f)
        kind = resource.get("resourceType")
        if kind is None or kind == "Bundle":
            continue
        selected.append(resource)
    json.dump(selected, sys.stdout, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main(sys.argv[1])
