#!/usr/bin/env python3
"""Derive Hestia's compact FHIR R4 search table from the HL7 npm package.

Usage:
    generate.py PACKAGE_DIR OUTPUT_JSON

PACKAGE_DIR is the unpacked `package/` directory of `hl7.fhir.r4.examples@4.0.1`
(it holds Bundle-searchParams.json, the StructureDefinitions and
CompartmentDefinition-patient.json). Python 3.11 standard library only.

The output is deterministic (sorted keys, stable order), so regenerating from the
same package gives a byte-identical file; see host/fhir-defs/README.md.
"""

import json
import os
import sys

ABSTRACT_BASES = ("Resource", "DomainResource")


def load(package_dir, name):
    with open(os.path.join(package_dir, name), encoding="utf-8") as f:
        return json.load(f)


def split_top_level(expression, separator="|"):
    """Split a FHIRPath expression at top-level `|` (outside parentheses and quotes)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if quote:
            if ch == "\\":
                continue
            if ch == "'":
                quote = False
        elif ch == "'":
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def root_of(part):
    """The first identifier of a path expression, ignoring leading parentheses."""
    p = part.lstrip("(").strip()
    name = ""
    for ch in p:
        if ch.isalnum() or ch == "_":
            name += ch
        else:
            break
    return name


def restrict(expression, resource_type, bases, resource_types):
    """Keep the union branches of `expression` that apply to `resource_type`.

    A branch applies when its root is the type itself, an abstract base, or not a
    resource type at all (a relative path such as `alias` in InsurancePlan-name).
    """
    kept = []
    for part in split_top_level(expression):
        root = root_of(part)
        if root == resource_type or root in ABSTRACT_BASES:
            kept.append(part)
        elif root not in resource_types and root not in bases:
            kept.append(part)
    return " | ".join(kept)


def describe(description, base):
    """The one-line description of a parameter for one base type.

    Parameters shared by several types describe each type on its own line
    (`* [Type](type.html): text`); pick that line.
    """
    lines = [line.strip() for line in description.replace("\r", "").split("\n") if line.strip()]
    prefix = f"* [{base}]("
    for line in lines:
        if line.startswith(prefix):
            return line.split("): ", 1)[-1][:200]
    return lines[0][:200] if lines else ""


def single_valued(expression, max_of):
    """Whether `expression` selects at most one element of a resource: a plain path
    `Type.a.b` whose every element (a choice `a[x]` too) has max "1" in the type's
    StructureDefinition. Anything else (unions, functions, `as`, paths into data types)
    counts as possibly many."""
    steps = expression.split(".")
    if len(steps) < 2 or not all(step.isidentifier() for step in steps):
        return False
    path = steps[0]
    for step in steps[1:]:
        path = f"{path}.{step}"
        limit = max_of.get(path, max_of.get(path + "[x]"))
        if limit != "1":
            return False
    return True


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    package_dir, output = sys.argv[1], sys.argv[2]

    resource_types, domain_resources, data_types = [], set(), []
    max_of = {}  # element path of a resource type -> its max cardinality
    for name in sorted(os.listdir(package_dir)):
        if not name.startswith("StructureDefinition-"):
            continue
        sd = load(package_dir, name)
        if sd.get("derivation") != "specialization":
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resource_types.append(sd["type"])
            for element in sd["snapshot"]["element"]:
                max_of[element["path"]] = element.get("max")
            if sd.get("baseDefinition", "").endswith("/DomainResource"):
                domain_resources.add(sd["type"])
        elif sd["kind"] in ("primitive-type", "complex-type"):
            data_types.append(sd["type"])
    resource_types.sort()
    data_types.sort()
    type_set = set(resource_types)

    bundle = load(package_dir, "Bundle-searchParams.json")
    search_params = [e["resource"] for e in bundle["entry"]]
    by_url = {sp["url"]: sp for sp in search_params}

    params = {}
    for sp in search_params:
        targets = sorted(sp.get("target", []))
        # Parameters can never be the target of a reference, so "any resource" lists
        # every type but Parameters; store it as "*" to keep the table small.
        if targets and set(targets) >= type_set - {"Parameters"}:
            targets = ["*"]
        components = []
        for c in sp.get("component", []):
            comp = by_url[c["definition"]]
            components.append({"code": comp["code"], "type": comp["type"], "expr": c["expression"]})
        for base in sp["base"]:
            entry = {
                "id": sp["id"],
                "code": sp["code"],
                "type": sp["type"],
                "expr": restrict(sp.get("expression", ""), base, set(sp["base"]), type_set),
                "desc": describe(sp.get("description", ""), base),
            }
            if single_valued(entry["expr"], max_of):
                entry["one"] = True
            if targets:
                entry["target"] = targets
            if components:
                entry["comp"] = components
            params.setdefault(base, []).append(entry)
    for base in params:
        params[base].sort(key=lambda e: e["code"])

    patient = load(package_dir, "CompartmentDefinition-patient.json")
    compartment = {r["code"]: r["param"] for r in patient["resource"] if r.get("param")}

    table = {
        "fhirVersion": "4.0.1",
        "source": "hl7.fhir.r4.examples@4.0.1",
        "resourceTypes": resource_types,
        "notDomainResources": sorted(type_set - domain_resources),
        "dataTypes": data_types,
        "params": params,
        "patientCompartment": compartment,
    }
    with open(output, "w", encoding="utf-8") as f:
        json.dump(table, f, ensure_ascii=False, sort_keys=True, indent=None, separators=(",", ":"))
        f.write("\n")
    count = sum(len(v) for v in params.values())
    print(
        f"{len(search_params)} SearchParameters -> {count} (type, parameter) entries; "
        f"{len(resource_types)} resource types; {len(compartment)} types in the Patient compartment"
    )


if __name__ == "__main__":
    main()
