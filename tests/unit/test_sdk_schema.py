"""The enterprise SDK (sdk/pledgewatch_sdk) keeps up with the API:

* sdk/openapi.json, the OpenAPI document the SDK was written against, is the live app's: any change
  of the API fails here until the SDK is brought up to date and the copy refreshed with
  ``.venv/bin/python -m tests.unit.test_sdk_schema`` (run from the repository root);
* every operation an enterprise may call (a route that needs a caller but not a bank user or an
  admin) has an SDK method with the same method and path, and the SDK has no other;
* each method's arguments are the operation's path, query, header and body parameters (same
  names, same required ones, same defaults, types that cover the API's);
* each answer's model has the response schema's fields, with the same types, all the way down.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pledgewatch_sdk.client import OPERATIONS, Operation
from pydantic import BaseModel

from api.app import create_app
from api.deps import ApiConfig, admin_user, bank_or_operator, bank_user, caller, current_principal

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "sdk" / "openapi.json"
REFRESH = ".venv/bin/python -m tests.unit.test_sdk_schema"
# Operations an enterprise may call that the SDK leaves out on purpose, and why.
NOT_IN_SDK = {
    ("GET", "/api/v1/events"): "an endless server-sent event stream (read it with httpx.stream)",
}


def live_app() -> FastAPI:
    """The app as `pledgewatch serve` builds it (nothing connects until it starts)."""
    return create_app("postgresql://sdk-schema@127.0.0.1:9/unused", ApiConfig(jwt_secret="s" * 40),
                      live=False)


def live_openapi() -> dict[str, Any]:
    return live_app().openapi()


def refresh() -> Path:
    """Write the live OpenAPI document to sdk/openapi.json (after updating the SDK)."""
    SNAPSHOT.write_text(json.dumps(live_openapi(), indent=1, ensure_ascii=False) + "\n")
    return SNAPSHOT


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return live_app()


@pytest.fixture(scope="module")
def doc(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


# --- the copy of the document ---

def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed, by operation and by schema (for a readable failure)."""
    found = []
    for section, key in (("paths", "paths"), ("schemas", "components")):
        before = old.get(key, {}) if section == "paths" else old.get(key, {}).get("schemas", {})
        after = new.get(key, {}) if section == "paths" else new.get(key, {}).get("schemas", {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                how = "added" if name not in before else "removed" if name not in after else "changed"
                found.append(f"{section}: {name} {how}")
    rest = {k for k in set(old) | set(new) if k not in ("paths", "components")}
    found += [f"top level: {k} changed" for k in sorted(rest) if old.get(k) != new.get(k)]
    return found or ["components other than schemas changed"]


def test_the_sdk_was_written_against_the_live_schema(doc: dict[str, Any]) -> None:
    assert SNAPSHOT.is_file(), f"{SNAPSHOT} is missing: `{REFRESH}` writes it"
    written_against = json.loads(SNAPSHOT.read_text())
    if written_against != doc:
        pytest.fail("the API changed since the SDK was written against sdk/openapi.json:\n  "
                    + "\n  ".join(differences(written_against, doc))
                    + f"\nbring sdk/pledgewatch_sdk up to date, then refresh the copy: `{REFRESH}`")


# --- which operations an enterprise may call ---

def calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from calls(sub)


def api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], Dependant]]:
    """(path, methods, dependant) of each route in the schema, with the prefixes it was included
    under (FastAPI ≥ 0.165 keeps included routers as such: iter_route_contexts flattens them)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415
    except ImportError:  # older FastAPI: app.routes are the routes themselves
        contexts: Any = app.routes
    else:
        contexts = iter_route_contexts(app.routes)
    for route in contexts:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and route.include_in_schema:
            yield route.path_format, set(route.methods), route.dependant


def enterprise_operations(app: FastAPI) -> set[tuple[str, str]]:
    """Routes in the schema that need a caller (current_principal, or caller: the hot paths' one
    dependency for it) but not a bank user, an admin, or a bank user or warehouse operator: what
    an enterprise's API key may call."""
    found = set()
    for path, methods, dependant in api_routes(app):
        needs = set(calls(dependant))
        if needs & {current_principal, caller} and not needs & {bank_user, admin_user, bank_or_operator}:
            found |= {(method, path) for method in methods}
    return found


def test_the_rule_tells_enterprise_operations_from_bank_ones(app: FastAPI) -> None:
    ops = enterprise_operations(app)
    assert ("POST", "/api/v1/drawdowns") in ops
    assert ("POST", "/api/v1/receivables/{receivable_id}/confirm") in ops
    assert ("POST", "/api/v1/programmes") not in ops  # an officer's
    assert ("POST", "/api/v1/api-keys") not in ops  # an admin's
    assert ("POST", "/api/v1/reconciliation/stock") not in ops  # an officer's or an operator's
    assert ("GET", "/api/v1/ledger/entries") in ops  # an operator's too, and an enterprise's
    assert ("POST", "/api/v1/auth/token") not in ops  # officers' log-in; no caller needed
    assert ("GET", "/health") not in ops


def test_every_enterprise_operation_has_an_sdk_method_and_no_other(app: FastAPI) -> None:
    enterprise = enterprise_operations(app)
    assert set(NOT_IN_SDK) <= enterprise, "NOT_IN_SDK names an operation enterprises cannot call"
    sdk = {(op.method, op.path): name for name, op in OPERATIONS.items()}
    assert len(sdk) == len(OPERATIONS), "two SDK methods call the same operation"
    missing = sorted(enterprise - set(NOT_IN_SDK) - set(sdk))
    assert not missing, f"enterprise operations without an SDK method: {missing}"
    extra = sorted(f"{sdk[k]}: {k}" for k in set(sdk) - enterprise)
    assert not extra, f"SDK methods for operations an enterprise cannot call (or gone): {extra}"


# --- shapes: a type of the SDK and a schema of the API reduced to the same terms ---

Shape = frozenset[Any]
ANY: Shape = frozenset({("any",)})


def sdk_shape(tp: Any) -> Shape:
    """The JSON an annotation of the SDK stands for."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return frozenset().union(*(sdk_shape(a) for a in args))
    if origin is Literal:
        return frozenset({("enum", frozenset(args))})
    if origin is list:
        return frozenset({("array", sdk_shape(args[0]))})
    if origin is dict:
        return frozenset({("object", sdk_shape(args[1]))})
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return frozenset({("ref", schema_name(tp))})
    simple = {Any: ("any",), type(None): ("null",), str: ("string",), int: ("integer",),
              float: ("number",), bool: ("boolean",), datetime: ("date-time",)}
    assert tp in simple, f"no JSON shape for {tp!r}"
    return frozenset({simple[tp]})


def api_shape(schema: dict[str, Any], schemas: dict[str, Any], enums: bool = False) -> Shape:
    """The JSON a schema of the document stands for (``enums``: a $ref to an enum is its values)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if enums and "enum" in schemas[name]:
            return api_shape(schemas[name], schemas)
        return frozenset({("ref", name)})
    if "anyOf" in schema:
        return frozenset().union(*(api_shape(s, schemas, enums) for s in schema["anyOf"]))
    if "enum" in schema:
        return frozenset({("enum", frozenset(schema["enum"]))})
    kind = schema.get("type")
    if kind == "array":
        return frozenset({("array", api_shape(schema.get("items", {}), schemas, enums))})
    if kind == "object" or (kind is None and "additionalProperties" in schema):
        extra = schema.get("additionalProperties", True)
        return frozenset({("object", api_shape(extra, schemas, enums) if isinstance(extra, dict)
                           else ANY)})
    if kind == "string" and schema.get("format") == "date-time":
        return frozenset({("date-time",)})
    return frozenset({(kind,)}) if kind else ANY


def covers(sdk: Shape, api: Shape) -> bool:
    """An argument's type accepts every value the API takes (a str for an enum of strings)."""
    return all(alt in sdk or (alt[0] == "enum" and ("string",) in sdk
                              and all(isinstance(v, str) for v in alt[1])) for alt in api)


def schema_name(model: type[BaseModel]) -> str:
    """The schema an SDK model stands for: its SCHEMA, or Page_<item>_ for a page."""
    meta = model.__pydantic_generic_metadata__
    if meta["origin"] is not None:
        return f"{meta['origin'].__name__}_{'_'.join(schema_name(a) for a in meta['args'])}_"
    name = getattr(model, "SCHEMA", None)
    assert isinstance(name, str), f"{model.__name__} names no schema (SCHEMA)"
    return name


def models_in(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from models_in(arg)


def model_mismatches(model: type[BaseModel], schemas: dict[str, Any], exact: bool = True,
                     seen: set[str] | None = None) -> list[str]:
    """How ``model`` and the schema it names differ, and the models in its fields, recursively."""
    seen = set() if seen is None else seen
    name = schema_name(model)
    if name in seen:
        return []
    seen.add(name)
    if name not in schemas:
        return [f"{model.__name__}: no schema {name!r} in the API"]
    schema = schemas[name]
    props = schema.get("properties", {})
    fields = model.model_fields
    found = []
    if set(fields) != set(props):
        found.append(f"{model.__name__} ({name}): fields the API lacks {sorted(set(fields) - set(props))},"
                     f" fields the SDK lacks {sorted(set(props) - set(fields))}")
    required = {n for n, f in fields.items() if f.is_required()}
    if exact and required != set(schema.get("required", [])) & set(fields):
        found.append(f"{model.__name__} ({name}): required {sorted(required)} in the SDK,"
                     f" {sorted(schema.get('required', []))} in the API")
    for field_name in sorted(set(fields) & set(props)):
        annotation = fields[field_name].annotation
        ours, theirs = sdk_shape(annotation), api_shape(props[field_name], schemas)
        if (ours != theirs) if exact else not covers(ours, api_shape(props[field_name], schemas,
                                                                      enums=True)):
            found.append(f"{model.__name__}.{field_name}: {sorted(ours, key=str)} in the SDK,"
                         f" {sorted(theirs, key=str)} in the API")
        for nested in models_in(annotation):
            found += model_mismatches(nested, schemas, exact, seen)
    return found


# --- each SDK method against its operation ---

def success(operation: dict[str, Any]) -> dict[str, Any]:
    """The schema of the success answer (a drawdown's 200 for a retry only describes itself)."""
    code = min(c for c, r in operation["responses"].items() if c.startswith("2") and "content" in r)
    return dict(operation["responses"][code]["content"]["application/json"]["schema"])


@dataclass(frozen=True)
class Argument:
    shape: Shape
    required: bool
    default: Any  # the API's default, when it has one (inspect.Parameter.empty if not)


def api_arguments(operation: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Argument]:
    """Path, query and header parameters and body properties, by the SDK's name for them."""
    found = {p["name"].lower().replace("-", "_"): Argument(
        api_shape(p["schema"], schemas, enums=True), bool(p.get("required")),
        p["schema"].get("default", inspect.Parameter.empty)) for p in operation.get("parameters", [])}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        schema = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]
        for prop, spec in schema["properties"].items():
            assert prop not in found, f"{prop} is both a parameter and a body field"
            found[prop] = Argument(api_shape(spec, schemas, enums=True),
                                   prop in schema.get("required", []),
                                   spec.get("default", inspect.Parameter.empty))
    return found


SDK_OPERATIONS = sorted(OPERATIONS.values(), key=lambda op: op.name)
# Required by the API, made by the SDK when the caller gives none: a new Idempotency-Key per call.
SDK_SUPPLIED = {("request_drawdown", "idempotency_key")}


@pytest.mark.parametrize("op", SDK_OPERATIONS, ids=[op.name for op in SDK_OPERATIONS])
def test_the_method_takes_the_operation_s_parameters(op: Operation, doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    operation = doc["paths"].get(op.path, {}).get(op.method.lower())
    assert operation is not None, f"{op.name}: the API has no {op.method} {op.path}"
    theirs = api_arguments(operation, schemas)
    signature = inspect.signature(op.build)
    hints = get_type_hints(op.build)
    ours = {name: p for name, p in signature.parameters.items() if name != "self"}
    assert set(ours) == set(theirs), (
        f"{op.name}: arguments the API lacks {sorted(set(ours) - set(theirs))}, "
        f"parameters the SDK lacks {sorted(set(theirs) - set(ours))}")
    for name, param in ours.items():
        api = theirs[name]
        if (op.name, name) in SDK_SUPPLIED:
            assert api.required and param.default is None, (
                f"{op.name}({name}): the SDK supplies it when not given; the API requires it")
            continue
        assert (param.default is inspect.Parameter.empty) == api.required, (
            f"{op.name}({name}): required in {'the API' if api.required else 'the SDK'} only")
        if api.default is not inspect.Parameter.empty:
            assert param.default == api.default, (
                f"{op.name}({name}): default {param.default!r}, the API's is {api.default!r}")
        shape = sdk_shape(hints[name])
        assert covers(shape, api.shape), (
            f"{op.name}({name}): {sorted(shape, key=str)} does not cover the API's "
            f"{sorted(api.shape, key=str)}")
        for model in models_in(hints[name]):  # a body field the SDK sends as a model (Shipment)
            mismatches = model_mismatches(model, schemas, exact=False)
            assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("op", SDK_OPERATIONS, ids=[op.name for op in SDK_OPERATIONS])
def test_the_answer_s_model_matches_the_response_schema(op: Operation,
                                                        doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    operation = doc["paths"].get(op.path, {}).get(op.method.lower())
    assert operation is not None, f"{op.name}: the API has no {op.method} {op.path}"
    ours, theirs = sdk_shape(op.response), api_shape(success(operation), schemas)
    assert ours == theirs, f"{op.name} returns {ours}, the API answers {theirs}"
    mismatches = [m for model in models_in(op.response) for m in model_mismatches(model, schemas)]
    assert not mismatches, "\n".join(mismatches)


def test_the_comparison_sees_a_wrong_field() -> None:
    """The checks above can fail: a field the API lacks, one the SDK lacks, a wrong type."""
    schemas = {"Thing": {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "number"}, "b": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}

    class Thing(BaseModel):
        SCHEMA: ClassVar[str] = "Thing"
        a: float
        b: str | None

    class WrongType(BaseModel):
        SCHEMA: ClassVar[str] = "Thing"
        a: int
        b: str | None

    class MissingField(BaseModel):
        SCHEMA: ClassVar[str] = "Thing"
        a: float

    class ExtraField(Thing):
        c: str

    assert model_mismatches(Thing, schemas) == []
    for wrong in (WrongType, MissingField, ExtraField):
        assert model_mismatches(wrong, schemas), wrong.__name__
    assert not covers(sdk_shape(int), frozenset({("string",)}))
    assert covers(sdk_shape(str | None), frozenset({("enum", frozenset({"a"})), ("null",)}))


if __name__ == "__main__":
    sys.stdout.write(f"wrote {refresh().relative_to(ROOT)}\n")
