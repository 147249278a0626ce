#!/usr/bin/env python3
"""Validate prometheus-operator objects offline against their CRD schemas, unknown fields included.

    kubectl kustomize deploy/kubernetes/base | python3 deploy/check-crs.py -
    python3 deploy/check-crs.py rendered.yaml [...]

Every ServiceMonitor, PodMonitor and PrometheusRule (monitoring.coreos.com/v1) in the input is
validated with jsonschema against the `openAPIV3Schema` of its CRD in deploy/schemas/. Those
schemas leave `additionalProperties` open (the API server prunes unknown fields silently), so
this script closes every object that lists its properties: a misspelt field is an error here
instead of a setting that vanishes in the cluster. `metadata` is held to the ObjectMeta fields
a manifest sets. CEL rules (x-kubernetes-validations) are not evaluated. Other objects are
ignored (kubernetes-validate checks those); any other kind of monitoring.coreos.com is an error.

Exit 0 when everything validates, 1 otherwise. Needs PyYAML and jsonschema.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "prometheus-operator"
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
GROUP = "monitoring.coreos.com/"

# The ObjectMeta fields a manifest may set (the CRD schema says only `type: object`).
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                 "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      "maxLength": 63},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 (Kubernetes flavour) schema made strict and jsonschema-ready."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    # Go's RE2 accepts `^(?i)...`; Python's re wants global flags first.
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern[len("^(?i)"):]
    if out.pop("x-kubernetes-int-or-string", False):
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_validators() -> dict[str, jsonschema.protocols.Validator]:
    validators = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.safe_load((SCHEMAS / name).read_text(encoding="utf-8"))
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = METADATA
        schema["required"] = sorted({*schema.get("required", []), "metadata"})
        jsonschema.Draft7Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def check(documents: list[tuple[str, Any]]) -> list[str]:
    """Errors (one line each) for the prometheus-operator objects among (source, doc) pairs."""
    validators = load_validators()
    errors = []
    for source, doc in documents:
        if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith(GROUP):
            continue
        kind = doc.get("kind")
        name = f"{source}: {kind}/{doc.get('metadata', {}).get('name')}"
        if doc["apiVersion"] != GROUP + "v1" or kind not in validators:
            errors.append(f"{name}: no schema for {doc['apiVersion']} {kind}")
            continue
        for error in sorted(validators[kind].iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{name}: {path}: {error.message}")
    return errors


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    documents: list[tuple[str, Any]] = []
    for arg in argv:
        text = sys.stdin.read() if arg == "-" else Path(arg).read_text(encoding="utf-8")
        documents += [(arg, doc) for doc in yaml.safe_load_all(text) if doc is not None]
    errors = check(documents)
    for line in errors:
        print(line, file=sys.stderr)
    checked = sum(1 for _, d in documents
                  if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(GROUP))
    if errors:
        return 1
    print(f"check-crs: {checked} prometheus-operator object(s) valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
