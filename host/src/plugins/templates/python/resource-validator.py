"""{name}: a resource validator. A Patient needs a name and a birth date; other resource
types pass (the built-in `structural-validator` still checks every resource)."""

from hestia_sdk import Issue, export_resource_validator


class Validator:
    def validate(self, resource_type, resource):
        if resource_type != "Patient":
            return []
        return [Issue.required(f"Patient.{f}") for f in ("name", "birthDate") if f not in resource]


WitWorld = export_resource_validator(Validator)
