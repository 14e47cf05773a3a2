"""NetworkPolicy through kubectl against a real `dockyard server`: apply, get, describe,
update, validation errors, discovery."""

from __future__ import annotations

import json

from tests.conftest import ServerProcess

POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-frontend
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: frontend}
    ports:
    - port: 80
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  podSelector: {}
"""


def test_apply_get_describe_update(server: ServerProcess) -> None:
    out = server.kubectl("apply", "-f", "-", input=POLICIES).stdout
    assert "networkpolicy.networking.k8s.io/allow-frontend created" in out
    assert "networkpolicy.networking.k8s.io/deny-all created" in out
    table = server.kubectl("get", "netpol").stdout.splitlines()
    assert table[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {"allow-frontend": "app=web", "deny-all": "<none>"}
    described = server.kubectl("describe", "netpol", "allow-frontend").stdout
    assert "PodSelector:     app=web" in described
    assert "To Port: 80/TCP" in described and "PodSelector: role=frontend" in described
    assert "Policy Types: Ingress" in described
    stored = json.loads(server.kubectl("get", "netpol", "deny-all", "-o", "json").stdout)
    assert stored["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # A second apply with a change goes through a strategic merge patch.
    changed = POLICIES.replace("port: 80", "port: 8080")
    assert "allow-frontend configured" in server.kubectl("apply", "-f", "-",
                                                         input=changed).stdout
    ports = json.loads(server.kubectl("get", "netpol", "allow-frontend", "-o",
                                      "jsonpath={.spec.ingress[0].ports}").stdout)
    assert ports == [{"port": 8080, "protocol": "TCP"}]
    server.kubectl("delete", "netpol", "deny-all")
    assert "deny-all" not in server.kubectl("get", "networkpolicies").stdout


def test_invalid_policy_and_discovery(server: ServerProcess) -> None:
    bad = POLICIES.split("---")[0].replace("- podSelector:\n        matchLabels: {role: "
                                           "frontend}", "- {}")
    result = server.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert 'The NetworkPolicy "allow-frontend" is invalid: spec.ingress[0].from[0]: ' \
        "Required value: must specify a peer" in result.stderr
    typo = server.kubectl("apply", "--validate=strict", "-f", "-", check=False,
                          input=POLICIES.split("---")[1].replace("podSelector", "podSelektor"))
    assert typo.returncode != 0 and 'unknown field "spec.podSelektor"' in typo.stderr
    resources = server.kubectl("api-resources", "--api-group=networking.k8s.io").stdout
    assert resources.splitlines()[1].split() == ["networkpolicies", "netpol",
                                                 "networking.k8s.io/v1", "true", "NetworkPolicy"]
