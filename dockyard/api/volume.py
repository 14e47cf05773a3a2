"""Volumes: defaulting and validation of pod volumes and every volume source (projected,
KeyToPath items, downward API files), following pkg/apis/core validation. Also holds the
downward API field selectors that container env vars share with downwardAPI volumes.
"""

from __future__ import annotations

import re
from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
)
from dockyard.api.meta import (
    as_dict,
    as_int,
    as_list,
    as_str,
    child,
    details_to_errors,
    index,
    is_qualified_name,
    validate_dns1123_label,
)
from dockyard.api.quantity import Quantity, QuantityError, parse_quantity

_VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret",
    "nfs", "iscsi", "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs",
    "quobyte", "downwardAPI", "fc", "flexVolume", "configMap", "azureFile", "vsphereVolume",
    "photonPersistentDisk", "portworxVolume", "azureDisk", "storageos", "projected", "scaleIO",
    "csi", "ephemeral", "image")
# Kubernetes reports a few of these under misspelt paths; kept for identical messages.
_VOLUME_ERROR_PATH = {"downwardAPI": "downwarAPI", "cephfs": "cephFS"}
_FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"


def try_quantity(raw: Any) -> Quantity | None:
    try:
        return parse_quantity(raw)
    except QuantityError:
        return None


# ---------------------------------------------------------------------------- defaults


def default_volume(vol: dict[str, Any]) -> None:
    if not any(vol.get(s) is not None for s in _VOLUME_SOURCES):
        vol["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(vol.get(source), dict) and vol[source].get("defaultMode") is None:
            vol[source]["defaultMode"] = 420
    if isinstance(vol.get("hostPath"), dict) and vol["hostPath"].get("type") is None:
        vol["hostPath"]["type"] = ""
    files = as_list(as_dict(vol.get("downwardAPI")).get("items"))
    for src in map(as_dict, as_list(as_dict(vol.get("projected")).get("sources"))):
        files += as_list(as_dict(src.get("downwardAPI")).get("items"))
        token = src.get("serviceAccountToken")
        if isinstance(token, dict) and token.get("expirationSeconds") is None:
            token["expirationSeconds"] = 3600
    for item in map(as_dict, files):
        default_field_refs(item)


def default_field_refs(holder: dict[str, Any]) -> None:
    if isinstance(holder.get("fieldRef"), dict) and not holder["fieldRef"].get("apiVersion"):
        holder["fieldRef"]["apiVersion"] = "v1"
    if isinstance(holder.get("resourceFieldRef"), dict):
        holder["resourceFieldRef"].setdefault("divisor", "0")


# -------------------------------------------------------------------------- validation


def validate_volumes(volumes: Any,
                     path: str) -> tuple[dict[str, dict[str, Any]], list[FieldError]]:
    by_name: dict[str, dict[str, Any]] = {}
    errs: list[FieldError] = []
    for i, vol in enumerate(map(as_dict, as_list(volumes))):
        p = index(path, i)
        name = as_str(vol.get("name"))
        vol_errs = _validate_volume_source(vol, p)
        if not name:
            vol_errs.append(required(child(p, "name")))
        else:
            vol_errs += validate_dns1123_label(name, child(p, "name"))
        if name in by_name:
            vol_errs.append(duplicate(child(p, "name"), name))
        # Only clean volumes can be mounted, exactly like Kubernetes' volume map.
        if vol_errs:
            errs += vol_errs
        else:
            by_name[name] = vol
    return by_name, errs


def _validate_volume_source(vol: dict[str, Any], path: str) -> list[FieldError]:
    present = [s for s in _VOLUME_SOURCES if vol.get(s) is not None]
    if not present:
        return [required(path, "must specify a volume type")]
    errs = [forbidden(child(path, _VOLUME_ERROR_PATH.get(s, s)),
                      "may not specify more than 1 volume type") for s in present[1:]]
    source, src = present[0], as_dict(vol.get(present[0]))
    p = child(path, source)
    required_fields = {"hostPath": "path", "secret": "secretName", "configMap": "name",
                       "persistentVolumeClaim": "claimName", "nfs": "server", "csi": "driver"}
    if source in required_fields and not src.get(required_fields[source]):
        errs.append(required(child(p, required_fields[source])))
    if source == "nfs" and not as_str(src.get("path")).startswith("/"):
        errs.append(invalid(child(p, "path"), as_str(src.get("path")), "must be an absolute path"))
    if source == "hostPath" and src.get("path"):
        errs += _no_backsteps(as_str(src["path"]), child(p, "path"))
        types = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                 "FileOrCreate", "Socket"]
        if src.get("type") is not None and src["type"] not in types:
            errs.append(not_supported(child(p, "type"), src["type"], types))
    if source == "emptyDir" and src.get("sizeLimit") is not None:
        q = try_quantity(src["sizeLimit"])
        if q is None or q.value < 0:
            errs.append(forbidden(child(p, "sizeLimit"),
                                  "SizeLimit field must be a valid resource quantity"))
    errs += _validate_mode(src.get("defaultMode"), child(p, "defaultMode"))
    for i, item in enumerate(map(as_dict, as_list(src.get("items")))):
        if source == "downwardAPI":
            errs += _validate_downward_file(item, p)
        else:
            errs += _validate_key_to_path(item, index(child(p, "items"), i))
    if source == "projected":
        errs += _validate_projections(src, p)
    return errs


def _validate_mode(mode: Any, path: str) -> list[FieldError]:
    n = as_int(mode)
    return [invalid(path, n, _FILE_MODE_MSG)] if n is not None and not 0 <= n <= 0o777 else []


def _no_backsteps(target: str, path: str) -> list[FieldError]:
    if ".." in target.replace("\\", "/").split("/"):
        return [invalid(path, target, "must not contain '..'")]
    return []


def descending_path_errors(target: str, path: str) -> list[FieldError]:
    """validateLocalDescendingPath: relative, with no '..' element."""
    errs = [invalid(path, target, "must be a relative path")] if target.startswith("/") else []
    return errs + _no_backsteps(target, path)


def _local_path_errors(target: str, path: str) -> list[FieldError]:
    """ValidateLocalNonReservedPath: a descending path that does not start with '..'."""
    errs = descending_path_errors(target, path)
    if target.startswith("..") and not target.startswith("../"):
        errs.append(invalid(path, target, "must not start with '..'"))
    return errs


def _validate_key_to_path(item: dict[str, Any], path: str) -> list[FieldError]:
    errs = [] if item.get("key") else [required(child(path, "key"))]
    errs += [] if item.get("path") else [required(child(path, "path"))]
    errs += _local_path_errors(as_str(item.get("path")), child(path, "path"))
    return errs + _validate_mode(item.get("mode"), child(path, "mode"))


def _validate_downward_file(item: dict[str, Any], path: str) -> list[FieldError]:
    errs = [] if item.get("path") else [required(child(path, "path"))]
    errs += _local_path_errors(as_str(item.get("path")), child(path, "path"))
    if item.get("fieldRef") is not None:
        errs += validate_field_ref(as_dict(item["fieldRef"]), child(path, "fieldRef"),
                                   _VOLUME_FIELDS)
        if item.get("resourceFieldRef") is not None:
            errs.append(invalid(path, "resource", "fieldRef and resourceFieldRef can not be "
                                                  "specified simultaneously"))
    elif item.get("resourceFieldRef") is not None:
        ref = as_dict(item["resourceFieldRef"])
        if not ref.get("containerName"):
            errs.append(required(child(child(path, "resourceFieldRef"), "containerName")))
        else:
            errs += validate_resource_ref(ref, child(path, "resourceFieldRef"))
    else:
        errs.append(required(path, "one of fieldRef and resourceFieldRef is required"))
    return errs + _validate_mode(item.get("mode"), child(path, "mode"))


def _validate_projections(src: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, source in enumerate(map(as_dict, as_list(src.get("sources")))):
        p = index(child(path, "sources"), i)
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken",
                             "clusterTrustBundle") if source.get(k) is not None]
        if len(kinds) > 1:
            errs.append(forbidden(p, "may not specify more than 1 volume type per source"))
        for kind in kinds:
            part, kp = as_dict(source[kind]), child(p, kind)
            if kind in ("secret", "configMap"):
                errs += [] if part.get("name") else [required(child(kp, "name"))]
                for j, item in enumerate(map(as_dict, as_list(part.get("items")))):
                    errs += _validate_key_to_path(item, index(child(kp, "items"), j))
            elif kind == "downwardAPI":
                for item in map(as_dict, as_list(part.get("items"))):
                    errs += _validate_downward_file(item, kp)
            elif kind == "serviceAccountToken":
                seconds = as_int(part.get("expirationSeconds")) or 0
                if seconds < 600:
                    errs.append(invalid(child(kp, "expirationSeconds"), seconds,
                                        "may not specify a duration less than 10 minutes"))
                elif seconds > 2**32:
                    errs.append(invalid(child(kp, "expirationSeconds"), seconds,
                                        "may not specify a duration larger than 2^32 seconds"))
                if not part.get("path"):
                    errs.append(required(child(kp, "path")))
    return errs


# -------------------------------------------------------------- downward API selectors


ENV_FIELDS = ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
              "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
              "status.podIPs"]
_VOLUME_FIELDS = ["metadata.annotations", "metadata.labels", "metadata.name",
                  "metadata.namespace", "metadata.uid"]
_CONVERTIBLE_FIELDS = {*ENV_FIELDS, *_VOLUME_FIELDS, "spec.restartPolicy", "spec.schedulerName",
                       "status.phase"}
_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")
_RESOURCE_FIELDS = ["limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                    "requests.ephemeral-storage", "requests.memory"]


def validate_field_ref(ref: dict[str, Any], path: str, allowed: list[str]) -> list[FieldError]:
    version, field_path = as_str(ref.get("apiVersion")), as_str(ref.get("fieldPath"))
    if not version:
        return [required(child(path, "apiVersion"))]
    if not field_path:
        return [required(child(path, "fieldPath"))]
    sub = _SUBSCRIPT.match(field_path)
    if version != "v1" or (not sub and field_path not in _CONVERTIBLE_FIELDS):
        reason = (f"unsupported pod version: {version}" if version != "v1"
                  else f"field label not supported: {field_path}")
        return [invalid(child(path, "fieldPath"), field_path,
                        f"error converting fieldPath: {reason}")]
    if sub:
        subscript = sub.group(2).lower() if "annotations" in sub.group(1) else sub.group(2)
        return details_to_errors(path, subscript, is_qualified_name(subscript))
    if field_path not in allowed:
        return [not_supported(child(path, "fieldPath"), field_path, allowed)]
    return []


def validate_resource_ref(ref: dict[str, Any], path: str) -> list[FieldError]:
    resource = as_str(ref.get("resource"))
    if not resource:
        return [required(child(path, "resource"))]
    errs: list[FieldError] = []
    if resource not in _RESOURCE_FIELDS and not resource.startswith(("requests.hugepages-",
                                                                     "limits.hugepages-")):
        errs.append(not_supported(child(path, "resource"), resource, _RESOURCE_FIELDS))
    divisor = try_quantity(ref.get("divisor", "0"))
    if divisor is not None and divisor.value and resource.endswith(".cpu") \
            and str(divisor) not in ("1m", "1"):
        errs.append(invalid(child(path, "divisor"), resource,
                            "only divisor's values 1m and 1 are supported with the cpu resource"))
    return errs
