#!/usr/bin/env python3
"""Checks MQTT messages and HTTP responses against docs/contracts/asyncapi.yaml and openapi.yaml.

Usage:
  validate.py documents                 the two documents are well-formed and every schema is valid
  validate.py messages FILE.jsonl       one {"topic": T, "payload": TEXT} per line (or
                                        {"schema": NAME, "payload": TEXT} for a named AsyncAPI schema)
  validate.py responses FILE.jsonl      one {"method": M, "path": P, "status": S, "body": TEXT} per line

Prints one line per disagreement (what, where in the payload, why) and exits 1 if there is any.
Needs the Python packages jsonschema, PyYAML and openapi-spec-validator (Deploy/bootstrap.sh installs them
for the tests).
"""
import base64
import json
import re
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2] / "docs" / "contracts"
BASE = "https://spectra.invalid/contracts/"


def load():
    asyncapi = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    openapi = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    registry = Registry().with_resources([
        (BASE + "asyncapi.yaml", Resource.from_contents(asyncapi, default_specification=DRAFT202012)),
        (BASE + "openapi.yaml", Resource.from_contents(openapi, default_specification=DRAFT202012)),
    ])
    return asyncapi, openapi, registry


def validator(registry, document, pointer):
    return Draft202012Validator({"$ref": BASE + document + "#" + pointer}, registry=registry)


def problems(check, instance):
    for error in sorted(check.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        yield f"{where}: {error.message}"


def address_pattern(address):
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(address)) + "$")


def resolve_local(document, ref):
    node = document
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def documents(asyncapi, openapi, registry):
    failures = []
    # The OpenAPI document against the OpenAPI 3.1 specification (what client generators read).
    try:
        from openapi_spec_validator import validate as validate_openapi
        validate_openapi(openapi)
    except Exception as error:  # noqa: BLE001
        failures.append(f"openapi.yaml is not valid OpenAPI 3.1: {error}")
    # The AsyncAPI document's structure (3.0): channels with an address and messages,
    # operations on channels that exist.
    if asyncapi.get("asyncapi") != "3.0.0":
        failures.append("asyncapi.yaml: asyncapi must be 3.0.0")
    for key in ("info", "channels", "operations", "components"):
        if key not in asyncapi:
            failures.append(f"asyncapi.yaml: no {key}")
    for name, operation in asyncapi.get("operations", {}).items():
        if operation.get("action") not in ("send", "receive"):
            failures.append(f"asyncapi.yaml operation {name}: action must be send or receive")
        if operation.get("channel", {}).get("$ref", "").removeprefix("#/channels/") not in asyncapi.get("channels", {}):
            failures.append(f"asyncapi.yaml operation {name}: its channel does not exist")
    for name, channel in asyncapi.get("channels", {}).items():
        for parameter in re.findall(r"\{([^}]+)\}", channel.get("address", "")):
            if parameter not in channel.get("parameters", {}):
                failures.append(f"asyncapi.yaml channel {name}: the address parameter {parameter} is not declared")
    for name, document in (("asyncapi.yaml", asyncapi), ("openapi.yaml", openapi)):
        for schema_name, schema in document["components"]["schemas"].items():
            try:
                Draft202012Validator.check_schema(schema)
            except Exception as error:  # noqa: BLE001 - reported, not raised
                failures.append(f"{name} components/schemas/{schema_name}: {error}")
            # Every reference inside resolves.
            try:
                validator(registry, name, f"/components/schemas/{schema_name}").is_valid(None)
            except Exception as error:  # noqa: BLE001
                failures.append(f"{name} components/schemas/{schema_name}: a reference does not resolve: {error}")
    for channel_name, channel in asyncapi["channels"].items():
        for message_name, message in channel["messages"].items():
            try:
                resolve_local(asyncapi, message["$ref"])
            except KeyError:
                failures.append(f"asyncapi.yaml channel {channel_name}: message {message_name} does not resolve")
    return failures


def messages(asyncapi, registry, lines):
    channels = []
    for name, channel in asyncapi["channels"].items():
        payloads = []
        for message in channel["messages"].values():
            payload = resolve_local(asyncapi, message["$ref"])["payload"]
            ref = payload.get("$ref")
            if ref and ref.startswith("#"):
                payloads.append(validator(registry, "asyncapi.yaml", ref[1:]))
            elif ref:
                document, pointer = ref.split("#")
                payloads.append(validator(registry, document, pointer))
            else:
                payloads.append(Draft202012Validator(payload))
        channels.append((name, address_pattern(channel["address"]), payloads))
    failures, checked = [], 0
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        text = record["payload"]
        if "schema" in record:
            what = record["schema"]
            candidates = [validator(registry, "asyncapi.yaml", "/components/schemas/" + record["schema"])]
        else:
            what = record["topic"]
            found = [(name, payloads) for name, pattern, payloads in channels if pattern.match(what)]
            if not found:
                failures.append(f"line {number}: {what}: no channel of the AsyncAPI document has this topic")
                continue
            name, candidates = found[0]
        if text == "":
            instance = ""
        else:
            try:
                instance = json.loads(text)
            except json.JSONDecodeError as error:
                failures.append(f"line {number}: {what}: not JSON: {error}")
                continue
        errors = [list(problems(check, instance)) for check in candidates]
        best = min(errors, key=len)
        if best:
            failures += [f"line {number}: {what}: {problem}" for problem in best]
        checked += 1
        # A signed document's payload is a DocumentPayload.
        if isinstance(instance, dict) and set(instance) == {"kid", "payload", "sig"}:
            try:
                inner = json.loads(base64.b64decode(instance["payload"], validate=True))
            except Exception as error:  # noqa: BLE001
                failures.append(f"line {number}: {what}: payload is not base64 JSON: {error}")
                continue
            check = validator(registry, "asyncapi.yaml", "/components/schemas/DocumentPayload")
            failures += [f"line {number}: {what}: payload/{problem}" for problem in problems(check, inner)]
    return failures, checked


def responses(openapi, registry, lines):
    paths = [(address_pattern(path), path) for path in openapi["paths"]]
    failures, checked = [], 0
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        path = record["path"].split("?")[0]
        found = [template for pattern, template in paths if pattern.match(path)]
        if not found:
            failures.append(f"line {number}: {path}: no path of the OpenAPI document matches")
            continue
        # The most specific template: the one with fewest parameters.
        template = min(found, key=lambda t: t.count("{"))
        operation = openapi["paths"][template].get(record["method"].lower())
        if operation is None:
            failures.append(f"line {number}: {record['method']} {template}: not in the OpenAPI document")
            continue
        response = operation["responses"].get(str(record["status"]))
        if response is None:
            failures.append(f"line {number}: {record['method']} {path}: status {record['status']} is not documented")
            continue
        if "$ref" in response:
            response = resolve_local(openapi, response["$ref"])
        content = response.get("content", {})
        if "application/json" not in content:
            checked += 1
            continue
        schema = content["application/json"]["schema"]
        inline = registry.with_resource(
            BASE + "inline.json", Resource.from_contents(rebase(schema), default_specification=DRAFT202012))
        check = Draft202012Validator({"$ref": BASE + "inline.json"}, registry=inline)
        try:
            instance = json.loads(record["body"])
        except json.JSONDecodeError as error:
            failures.append(f"line {number}: {path}: not JSON: {error}")
            continue
        failures += [f"line {number}: {record['method']} {path} {record['status']}: {problem}" for problem in problems(check, instance)]
        checked += 1
    return failures, checked


def rebase(schema):
    """An inline response schema with its local references made absolute."""
    if isinstance(schema, dict):
        return {key: (BASE + "openapi.yaml" + value if key == "$ref" and value.startswith("#") else rebase(value))
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [rebase(item) for item in schema]
    return schema


def main(argv):
    if len(argv) < 2 or argv[1] not in ("documents", "messages", "responses"):
        print(__doc__, file=sys.stderr)
        return 2
    asyncapi, openapi, registry = load()
    if argv[1] == "documents":
        failures, checked = documents(asyncapi, openapi, registry), 1
    else:
        lines = [line for line in Path(argv[2]).read_text().splitlines() if line.strip()]
        if argv[1] == "messages":
            failures, checked = messages(asyncapi, registry, lines)
        else:
            failures, checked = responses(openapi, registry, lines)
    for failure in failures:
        print(failure)
    print(f"{checked} checked, {len(failures)} disagreement(s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
