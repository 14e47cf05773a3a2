"""Running CNI plugins as the CNI specification 1.0.0 says (what libcni does for containerd).

A plugin is an executable found on CNI_PATH. It gets the operation in environment variables
(CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH) and its network
configuration as JSON on stdin; it answers with a result (ADD), nothing (DEL, CHECK) or the
versions it speaks (VERSION) on stdout. On failure it exits non-zero with an error object
`{"code", "msg", "details"}`, which becomes a `CniError` naming the plugin and the operation.

A network configuration list ("conflist") is a chain: ADD runs the plugins in order, each
receiving the previous one's result as `prevResult`, and the last result is the chain's; DEL
runs them in reverse and CHECK in order, both with the cached ADD result as `prevResult`.
Runtime values a plugin asked for in `capabilities` (e.g. portMappings) reach it in
`runtimeConfig`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.runtime import spawn

SPEC_VERSION = "1.0.0"
DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Obj = dict[str, Any]

# Error codes of the specification (plugins may use 100+ for their own).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_RUNTIME = 999  # not from the plugin: it could not be run, or said something unreadable


class CniError(Exception):
    """A plugin failed: its error object, and which plugin doing what."""

    def __init__(self, plugin: str, command: str, code: int, msg: str,
                 details: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f'plugin type="{plugin}" failed ({command.lower()}): {msg}'
        if details:
            text += f": {details}"
        super().__init__(text)


class PluginNotFound(CniError):
    def __init__(self, plugin: str, dirs: Sequence[str]) -> None:
        super().__init__(plugin, "find", ERR_RUNTIME,
                         f'CNI plugin "{plugin}" not found in {":".join(dirs)}',
                         "install the Debian package containernetworking-plugins")


@dataclass(frozen=True)
class RuntimeConf:
    """What the runtime says about one attachment (one container, one interface)."""

    container_id: str
    netns: str
    ifname: str
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS, e.g. (("K8S_POD_NAME", "web-0"),)
    capability_args: Mapping[str, Any] = field(default_factory=dict)  # e.g. portMappings


@dataclass(frozen=True)
class IPConfig:
    address: str  # with prefix length, "10.42.0.5/24"
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)


def result_ips(result: Mapping[str, Any] | None) -> list[IPConfig]:
    """The `ips` of a result (0.3.0 and later shape; 0.3.x's `version` key is ignored)."""
    out = []
    for entry in (result or {}).get("ips") or []:
        address = entry.get("address")
        if not address:
            continue
        out.append(IPConfig(address=address, gateway=entry.get("gateway") or "",
                            interface=entry.get("interface")))
    return out


class CniPlugins:
    """The plugin executables in `dirs`, run as asyncio subprocesses."""

    def __init__(self, dirs: Sequence[str | Path] = DEFAULT_PLUGIN_DIRS,
                 timeout: float = 60.0) -> None:
        self.dirs = [os.fspath(d) for d in dirs]
        self.timeout = timeout
        self._found: dict[str, str] = {}

    def find(self, plugin: str) -> str:
        """The executable of plugin type `plugin` (first in `dirs`), or PluginNotFound."""
        if plugin in self._found:
            return self._found[plugin]
        if "/" in plugin or not plugin:
            raise CniError(plugin, "find", ERR_INVALID_CONFIG, f"invalid plugin type {plugin!r}")
        for d in self.dirs:
            candidate = os.path.join(d, plugin)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                self._found[plugin] = candidate
                return candidate
        raise PluginNotFound(plugin, self.dirs)

    # -- one plugin -------------------------------------------------------------------------

    async def exec(self, plugin: str, command: str, conf: Mapping[str, Any],
                   rt: RuntimeConf | None) -> Obj | None:
        """Run one plugin; its parsed stdout (None when it printed nothing)."""
        path = self.find(plugin)
        env = {
            "CNI_COMMAND": command,
            "CNI_PATH": os.pathsep.join(self.dirs),
            "PATH": os.environ.get("PATH", DEFAULT_PATH),  # portmap runs iptables
        }
        if rt is not None:
            env.update({
                "CNI_CONTAINERID": rt.container_id,
                "CNI_NETNS": rt.netns,
                "CNI_IFNAME": rt.ifname,
                "CNI_ARGS": ";".join(f"{k}={v}" for k, v in rt.args),
            })
        stdin = json.dumps(conf).encode()
        try:
            done = await spawn.run([path], input=stdin, env=env, timeout=self.timeout)
        except TimeoutError:
            raise CniError(plugin, command, ERR_RUNTIME,
                           f"no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise CniError(plugin, command, ERR_RUNTIME, f"cannot run {path}: {exc}") from exc
        out, err = done.stdout, done.stderr
        if done.returncode != 0:
            raise _error_from_output(plugin, command, done.returncode, out, err)
        if not out.strip():
            return None
        try:
            parsed = json.loads(out)
        except ValueError:
            raise CniError(plugin, command, ERR_DECODE, "unreadable output",
                           out.decode(errors="replace")[:500]) from None
        if not isinstance(parsed, dict):
            raise CniError(plugin, command, ERR_DECODE, "output is not a JSON object",
                           out.decode(errors="replace")[:500])
        if "code" in parsed and "msg" in parsed and "ips" not in parsed:
            # An error object with exit status 0 is still an error.
            raise _error_from_object(plugin, command, parsed)
        return parsed

    async def version(self, plugin: str) -> Obj:
        """The VERSION answer: {"cniVersion", "supportedVersions"}."""
        return await self.exec(plugin, "VERSION", {"cniVersion": SPEC_VERSION}, None) or {}

    # -- single network configurations -------------------------------------------------------

    async def add_network(self, conf: Mapping[str, Any], rt: RuntimeConf) -> Obj:
        result = await self.exec(conf["type"], "ADD", _with_runtime(conf, rt), rt)
        if result is None:
            raise CniError(conf["type"], "ADD", ERR_DECODE, "no result")
        return result

    async def del_network(self, conf: Mapping[str, Any], rt: RuntimeConf,
                          prev_result: Mapping[str, Any] | None = None) -> None:
        await self.exec(conf["type"], "DEL", _with_runtime(conf, rt, prev_result), rt)

    async def check_network(self, conf: Mapping[str, Any], rt: RuntimeConf,
                            prev_result: Mapping[str, Any]) -> None:
        await self.exec(conf["type"], "CHECK", _with_runtime(conf, rt, prev_result), rt)

    # -- configuration lists (chains) ---------------------------------------------------------

    async def add_network_list(self, conflist: Mapping[str, Any], rt: RuntimeConf) -> Obj:
        """ADD each plugin in order, passing each result on; the last result is the chain's."""
        prev: Obj | None = None
        for conf in plugin_configs(conflist):
            result = await self.exec(conf["type"], "ADD", _with_runtime(conf, rt, prev), rt)
            if result is None:
                raise CniError(conf["type"], "ADD", ERR_DECODE, "no result")
            prev = result
        if prev is None:
            raise CniError(str(conflist.get("name")), "ADD", ERR_INVALID_CONFIG,
                           "the configuration list has no plugins")
        return prev

    async def del_network_list(self, conflist: Mapping[str, Any], rt: RuntimeConf,
                               prev_result: Mapping[str, Any] | None = None) -> None:
        """DEL each plugin in reverse order with the cached ADD result."""
        for conf in reversed(plugin_configs(conflist)):
            await self.exec(conf["type"], "DEL", _with_runtime(conf, rt, prev_result), rt)

    async def check_network_list(self, conflist: Mapping[str, Any], rt: RuntimeConf,
                                 prev_result: Mapping[str, Any]) -> None:
        """CHECK each plugin in order with the cached ADD result (CNI 0.4.0 and later)."""
        for conf in plugin_configs(conflist):
            await self.exec(conf["type"], "CHECK", _with_runtime(conf, rt, prev_result), rt)


def plugin_configs(conflist: Mapping[str, Any]) -> list[Obj]:
    """Each plugin's configuration with the list's `name` and `cniVersion` (spec: 'Deriving
    execution configuration from plugin configuration')."""
    out = []
    for plugin in conflist.get("plugins") or []:
        conf = dict(plugin)
        conf["name"] = conflist["name"]
        conf["cniVersion"] = conflist.get("cniVersion", SPEC_VERSION)
        out.append(conf)
    return out


def _with_runtime(conf: Mapping[str, Any], rt: RuntimeConf,
                  prev_result: Mapping[str, Any] | None = None) -> Obj:
    """Add `runtimeConfig` (only the capabilities the plugin declared) and `prevResult`."""
    out = dict(conf)
    caps = conf.get("capabilities") or {}
    runtime = {k: v for k, v in rt.capability_args.items() if caps.get(k)}
    if runtime:
        out["runtimeConfig"] = {**(conf.get("runtimeConfig") or {}), **runtime}
    if prev_result is not None:
        out["prevResult"] = prev_result
    return out


def _error_from_object(plugin: str, command: str, obj: Mapping[str, Any]) -> CniError:
    code = obj.get("code")
    return CniError(plugin, command, code if isinstance(code, int) else ERR_RUNTIME,
                    str(obj.get("msg") or "failed"), str(obj.get("details") or ""))


def _error_from_output(plugin: str, command: str, status: int, out: bytes,
                       err: bytes) -> CniError:
    try:
        obj = json.loads(out)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "msg" in obj:
        return _error_from_object(plugin, command, obj)
    text = (err.strip() or out.strip()).decode(errors="replace")[:1000]
    return CniError(plugin, command, ERR_RUNTIME, f"exit status {status}", text)
