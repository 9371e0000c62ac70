"""The operator's published schemas, made strict, refuse what the operator would: a
typo'd field anywhere (spec, endpoint, rule, metadata), a wrong type, a malformed
duration, a value outside an enum, another apiVersion, a null. Each case is a copy of a
rendered object with one change; the unchanged copy passes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import jsonschema
import pytest

from tests.k8s.conftest import Doc, find
from tests.k8s.operator_schemas import KINDS, PACKAGE_VERSION, SCHEMAS

Change = Callable[[Doc], None]


def errors(doc: Doc) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMAS[doc["kind"]])
    return [e.message for e in validator.iter_errors(doc)]


def monitor(rendered: dict[str, list[Doc]]) -> Doc:
    return copy.deepcopy(find(rendered["cpu"], "ServiceMonitor", "gateway"))


def rules(rendered: dict[str, list[Doc]]) -> Doc:
    return copy.deepcopy(find(rendered["cpu"], "PrometheusRule", "loraport"))


def first_rule(doc: Doc) -> Doc:
    return doc["spec"]["groups"][0]["rules"][0]  # type: ignore[no-any-return]


def test_the_schemas_are_the_operators_of_the_pinned_release() -> None:
    assert PACKAGE_VERSION == "0.80.1.0"
    assert set(KINDS) >= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    for kind, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["kind"]["const"] == kind


def test_the_unchanged_copies_pass(rendered: dict[str, list[Doc]]) -> None:
    assert errors(monitor(rendered)) == []
    assert errors(rules(rendered)) == []


MONITOR_CHANGES: dict[str, tuple[Change, str]] = {
    "a typo'd endpoint field": (
        lambda d: d["spec"]["endpoints"][0].update(prot="metrics"), "'prot' was unexpected"),
    "a typo'd spec field": (
        lambda d: d["spec"].update(endpoint=d["spec"]["endpoints"]), "'endpoint' was unexpected"),
    "a typo'd metadata field": (
        lambda d: d["metadata"].update(lables={"a": "b"}), "'lables' was unexpected"),
    "a number for a duration": (
        lambda d: d["spec"]["endpoints"][0].update(interval=30), "is not of type 'string'"),
    "a malformed duration": (
        lambda d: d["spec"]["endpoints"][0].update(interval="30 seconds"), "does not match"),
    "a scheme outside its enum": (
        lambda d: d["spec"]["endpoints"][0].update(scheme="HTTP"), "is not one of"),
    "a string for a boolean": (
        lambda d: d["spec"]["endpoints"][0].update(honorLabels="yes"), "is not of type 'boolean'"),
    "a null field": (
        lambda d: d["spec"].update(jobLabel=None), "None is not of type 'string'"),
    "another apiVersion": (
        lambda d: d.update(apiVersion="monitoring.coreos.com/v1alpha1"), "was expected"),
    "no selector": (lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
}  # fmt: skip

RULE_CHANGES: dict[str, tuple[Change, str]] = {
    "a typo'd rule field": (
        lambda d: first_rule(d).update(expresion="up"), "'expresion' was unexpected"),
    "a typo'd group field": (
        lambda d: d["spec"]["groups"][0].update(rule=[]), "'rule' was unexpected"),
    "a number for `for`": (lambda d: first_rule(d).update({"for": 5}), "is not of type 'string'"),
    "a malformed `for`": (lambda d: first_rule(d).update({"for": "5 min"}), "does not match"),
    "a list for `expr`": (
        lambda d: first_rule(d).update(expr=["up"]), "is not valid under any of the given schemas"),
    "a number for a label value": (
        lambda d: first_rule(d).update(labels={"severity": 2}), "is not of type 'string'"),
    "no expr": (lambda d: first_rule(d).pop("expr"), "'expr' is a required property"),
    "an unnamed group": (lambda d: d["spec"]["groups"][0].pop("name"), "'name' is a required"),
}  # fmt: skip


@pytest.mark.parametrize("case", MONITOR_CHANGES)
def test_a_service_monitor_is_refused_with(rendered: dict[str, list[Doc]], case: str) -> None:
    change, message = MONITOR_CHANGES[case]
    doc = monitor(rendered)
    change(doc)
    found = errors(doc)
    assert any(message in e for e in found), found


@pytest.mark.parametrize("case", RULE_CHANGES)
def test_a_prometheus_rule_is_refused_with(rendered: dict[str, list[Doc]], case: str) -> None:
    change, message = RULE_CHANGES[case]
    doc = rules(rendered)
    change(doc)
    found = errors(doc)
    assert any(message in e for e in found), found
