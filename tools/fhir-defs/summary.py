#!/usr/bin/env python3
"""Derives host/fhir-defs/r4-summary.json from the R4 StructureDefinitions.

For each concrete resource type: the top-level elements marked isSummary (what
`_summary=true` keeps) and those with min >= 1 (kept by `_summary=text` and
`_elements`). Choice elements are written with their `[x]` stem (`deceased`).

Usage: python3 tools/fhir-defs/summary.py PACKAGE_DIR OUT.json
"""
import json
import os
import sys


def main(package_dir, out_path):
    table = {}
    for name in sorted(os.listdir(package_dir)):
        if not name.startswith("StructureDefinition-") or not name.endswith(".json"):
            continue
        with open(os.path.join(package_dir, name), encoding="utf-8") as f:
            sd = json.load(f)
        if sd.get("kind") != "resource" or sd.get("derivation") != "specialization":
            continue
        if sd.get("abstract"):
            continue
        rtype = sd["type"]
        summary, mandatory = [], []
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if path.count(".") != 1:
                continue
            field = path.split(".", 1)[1].replace("[x]", "")
            if element.get("isSummary"):
                summary.append(field)
            if element.get("min", 0) >= 1:
                mandatory.append(field)
        table[rtype] = {"summary": summary, "mandatory": mandatory}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=0, sort_keys=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
