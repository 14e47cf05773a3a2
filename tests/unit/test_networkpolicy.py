"""NetworkPolicy defaults and validation: Kubernetes' values and messages."""

from __future__ import annotations

from typing import Any

from dockyard.api import kinds
from dockyard.api.resources import by_kind

INFO = by_kind("networking.k8s.io", "NetworkPolicy")


def policy(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    assert INFO is not None
    kinds.apply_defaults(INFO, obj)
    return obj


def errors(obj: dict[str, Any]) -> list[str]:
    assert INFO is not None
    return [e.message() for e in kinds.validate(INFO, defaulted(obj), None)]


def test_defaults() -> None:
    empty = defaulted({"metadata": {"name": "p", "namespace": "default"}})
    assert empty["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    both = defaulted(policy(podSelector={}, ingress=[{"ports": [{"port": 80}]}],
                            egress=[{"to": [{"podSelector": {}}]}]))["spec"]
    assert both["policyTypes"] == ["Ingress", "Egress"]
    assert both["ingress"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    egress_only = defaulted(policy(podSelector={}, policyTypes=["Egress"]))["spec"]
    assert egress_only["policyTypes"] == ["Egress"]


def test_valid_policies() -> None:
    assert errors(policy(podSelector={"matchLabels": {"app": "web"}}, ingress=[{
        "from": [{"podSelector": {"matchLabels": {"role": "frontend"}}},
                 {"namespaceSelector": {}, "podSelector": {}},
                 {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
        "ports": [{"port": 80}, {"port": "http"}, {"port": 8000, "endPort": 8080},
                  {"protocol": "UDP"}]}])) == []


def test_messages() -> None:
    assert errors(policy(podSelector={}, ingress=[{"from": [{}]}])) == [
        "spec.ingress[0].from[0]: Required value: must specify a peer"]
    assert errors(policy(podSelector={}, egress=[{"to": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}])) == [
        "spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"]
    assert errors(policy(podSelector={}, ingress=[{"from": [
        {"ipBlock": {"cidr": "10.0.0.0"}}, {"ipBlock": {"cidr": ""}},
        {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8", "bad"]}}]}])) == [
        'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0": not a valid CIDR',
        "spec.ingress[0].from[1].ipBlock.cidr: Required value",
        'spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: "10.0.0.0/8": must be a '
        "strict subset of `cidr`",
        'spec.ingress[0].from[2].ipBlock.except[1]: Invalid value: "bad": not a valid CIDR']
    assert errors(policy(podSelector={}, ingress=[{"ports": [
        {"port": 70000}, {"endPort": 10}, {"port": "http", "endPort": 10},
        {"port": 90, "endPort": 80}, {"port": 80, "protocol": "ICMP"}]}])) == [
        "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, "
        "inclusive",
        "spec.ingress[0].ports[1].endPort: Invalid value: 10: may not be specified when `port` "
        "is not specified",
        "spec.ingress[0].ports[2].endPort: Invalid value: 10: may not be specified when `port` "
        "is non-numeric",
        "spec.ingress[0].ports[3].endPort: Invalid value: 90: must be greater than or equal to "
        "`port`",
        'spec.ingress[0].ports[4].protocol: Unsupported value: "ICMP": supported values: "TCP", '
        '"UDP", "SCTP"']
    assert errors(policy(podSelector={}, policyTypes=["Ingress", "Egress", "Ingress"])) == [
        'spec.policyTypes: Invalid value: &[]networking.PolicyType{"Ingress", "Egress", '
        '"Ingress"}: may not specify more than two policyTypes']
    assert errors(policy(podSelector={"matchLabels": {"a": "-x-"}})) == [
        'spec.podSelector.matchLabels: Invalid value: "-x-": a valid label must be an empty '
        "string or consist of alphanumeric characters, '-', '_' or '.', and must start and "
        "end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
        "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]
