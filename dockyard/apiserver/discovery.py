"""Discovery documents: `/version`, `/api`, `/apis`, and one resource list per group-version.

All are derived from `dockyard.api.resources`, so a kind added there is discoverable at once.
We serve the legacy (unaggregated) documents; clients asking for aggregated discovery see the
plain JSON content type and fall back to them, as client-go does with older servers.
"""

from __future__ import annotations

import platform
from typing import Any

from dockyard import __version__
from dockyard.api.resources import ResourceInfo, group_versions, in_group_version

KUBE_VERSION = ("1", "32", "v1.32.0")  # the API level we follow


def version_info() -> dict[str, Any]:
    major, minor, git = KUBE_VERSION
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"{git}+dockyard-{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"linux/{platform.machine()}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
            "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    return _group(group, versions) if versions and group else None


def _entries(info: ResourceInfo) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        main["shortNames"] = list(info.short_names)
    if info.categories:
        main["categories"] = list(info.categories)
    out = [main]
    for sub in info.subresources:
        entry: dict[str, Any] = {
            "name": f"{info.plural}/{sub}",
            "singularName": "",
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ["get", "patch", "update"],
        }
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        elif sub == "binding":
            entry.update(kind="Binding", verbs=["create"])
        elif sub == "log":
            entry.update(kind="Pod", verbs=["get"])
        elif sub == "finalize":
            entry["verbs"] = ["update"]
        out.append(entry)
    return out


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    infos = in_group_version(group, version)
    if not infos:
        return None
    resources = [entry for info in infos for entry in _entries(info)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
