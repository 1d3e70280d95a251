#!/usr/bin/env python3
"""Generates ../src/r4.rs, the table of FHIR R4 resource types the structural validator
checks against, from the R4 StructureDefinitions.

Usage (from this folder; needs npm and Python 3):

    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz)
    python3 gen_r4.py "$tmp/package" > ../src/r4.rs

For each concrete resource type and each complex datatype (kind `resource` or
`complex-type`, derivation `specialization`, not abstract, a core definition) it keeps
every element of the snapshot, nested ones under their parent (`Patient.contact.name`
among the children of `Patient.contact`): name, min, whether max is more than 1, the type
codes, and the children of a backbone element (or of an `Element`-typed group such as
`Timing.repeat`; `contentReference` reuses the referenced element's children). A choice
element (`value[x]`) keeps its name without `[x]` and all its types.
"""

import glob
import json
import os
import sys

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def type_code(t, path, top_level):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        # Resource.id and similar are written as FHIRPath system types with the FHIR type
        # in an extension; a resource's own `id` is an `id` (an element's is a string).
        if top_level and path.endswith(".id"):
            return "id"
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return code.rsplit(".", 1)[1].lower()
    return code


def rust_str(s):
    return json.dumps(s)


PRIMITIVES = {
    "boolean": "Boolean", "integer": "Integer", "unsignedInt": "UnsignedInt",
    "positiveInt": "PositiveInt", "decimal": "Decimal", "string": "String",
    "markdown": "Markdown", "code": "Code", "id": "Id", "uri": "Uri", "url": "Url",
    "canonical": "Canonical", "oid": "Oid", "uuid": "Uuid", "date": "Date",
    "dateTime": "DateTime", "instant": "Instant", "time": "Time",
    "base64Binary": "Base64Binary", "xhtml": "Xhtml",
}


def static_name(prefix, path):
    return prefix + "_" + path.replace(".", "_").upper()


def element_tree(sd, prefix, resource):
    """The elements of one StructureDefinition's snapshot as statics: one per element that
    has children (the definition itself, backbone elements, `Element`-typed groups such as
    `Timing.repeat`), each a sorted list of its direct children."""
    root = sd["snapshot"]["element"][0]["path"]
    children = {}
    for e in sd["snapshot"]["element"][1:]:
        parent, _, _ = e["path"].rpartition(".")
        children.setdefault(parent, []).append(e)
    statics = []
    for parent, elements in children.items():
        rows = []
        for e in elements:
            if e["max"] == "0":
                continue
            path = e["path"]
            element = path.rsplit(".", 1)[1]
            choice = element.endswith("[x]")
            if choice:
                element = element[: -len("[x]")]
            top_level = resource and parent == root
            types = [type_code(t, path, top_level) for t in e.get("type", [])]
            nested = None
            if path in children:
                nested = static_name(prefix, path)
            if not types and "contentReference" in e:
                # Reuses another element's definition (`Questionnaire.item.item`): a backbone
                # element with that element's children.
                types = ["BackboneElement"]
                nested = static_name(prefix, e["contentReference"].lstrip("#"))
            many = e["max"] != "1"
            rows.append((element, int(e["min"]), many, choice, types, nested))
        rows.sort(key=lambda r: r[0])
        statics.append((static_name(prefix, parent), rows))
    return statics


def main(package_dir):
    resources = []
    datatypes = []
    for path in sorted(glob.glob(os.path.join(package_dir, "StructureDefinition-*.json"))):
        with open(path, encoding="utf-8") as f:
            sd = json.load(f)
        if sd.get("resourceType") != "StructureDefinition":
            continue
        if sd.get("derivation") != "specialization" or sd.get("abstract"):
            continue
        if sd.get("url") != "http://hl7.org/fhir/StructureDefinition/" + sd["id"]:
            continue
        if sd.get("kind") == "resource":
            resources.append((sd["type"], sd.get("fhirVersion", ""), element_tree(sd, "R", True)))
        elif sd.get("kind") == "complex-type":
            datatypes.append((sd["type"], sd.get("fhirVersion", ""), element_tree(sd, "T", False)))
    resources.sort(key=lambda r: r[0])
    datatypes.sort(key=lambda r: r[0])
    datatype_static = {name: statics[0][0] for name, _, statics in datatypes}

    def kind(ty, nested):
        """What a type is, resolved here so that the validator compares no strings: a
        primitive's check, the elements of a backbone element or datatype, or a resource
        of any type (`Resource`: contained resources, Bundle entries), walked by the
        definition its own `resourceType` names."""
        if ty in PRIMITIVES:
            return f"Kind::Primitive(Prim::{PRIMITIVES[ty]})"
        if nested:
            return f"Kind::Complex(&{nested})"
        if ty in datatype_static:
            return f"Kind::Complex(&{datatype_static[ty]})"
        assert ty in ("Resource",), f"unknown type {ty}"
        return "Kind::Resource"
    versions = sorted({v for _, v, _ in resources + datatypes})
    names = [n for _, _, statics in resources + datatypes for n, _ in statics]
    assert len(names) == len(set(names)), "two element paths give one static name"

    out = sys.stdout
    out.write("// @generated by gen/gen_r4.py from the StructureDefinitions of\n")
    out.write(f"// hl7.fhir.r4.examples@4.0.1 (FHIR {', '.join(versions)}). Do not edit; see gen/README.md.\n\n")
    out.write("use crate::primitive::Prim;\nuse crate::{Element, Kind, ResourceDef, Type};\n\n")

    def table(static, doc, defs):
        out.write(f"/// {doc}\n")
        out.write(f"pub static {static}: &[ResourceDef] = &[\n")
        for name, _, statics in defs:
            out.write(f"    ResourceDef {{ name: {rust_str(name)}, elements: &{statics[0][0]} }},\n")
        out.write("];\n\n")

    table("RESOURCES", f"The {len(resources)} concrete R4 resource types, sorted by name.", resources)
    table("DATATYPES", f"The {len(datatypes)} complex R4 datatypes, sorted by name.", datatypes)
    for _, _, statics in resources + datatypes:
        for static, rows in statics:
            # Arrays, referred to by address: a backbone element may contain itself
            # (`Questionnaire.item.item`), and a static may take its own address.
            out.write(f"static {static}: [Element; {len(rows)}] = [\n")
            for element, min_, many, choice, types, nested in rows:
                types_rs = ", ".join(
                    f"Type {{ name: {rust_str(t)}, kind: {kind(t, nested)} }}" for t in types
                )
                out.write(
                    f"    Element {{ name: {rust_str(element)}, min: {min_}, many: {str(many).lower()}, "
                    f"choice: {str(choice).lower()}, types: &[{types_rs}] }},\n"
                )
            out.write("];\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_r4.py PACKAGE_DIR > ../src/r4.rs")
    main(sys.argv[1])
