"""cni.py against fake plugins: tiny shell scripts that log what they were given and answer
like a CNI plugin would, so the spec's contract (environment, stdin, prevResult, runtimeConfig,
error objects) is checked without touching the host's network."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from dockyard.network.cni import (
    CniError,
    CniPlugins,
    PluginNotFound,
    RuntimeConf,
    plugin_configs,
    result_ips,
)

RESULT_A = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}],
    "ips": [{"interface": 0, "address": "10.9.0.5/24", "gateway": "10.9.0.1"},
            {"interface": 0, "address": "fd00::5/64"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}],
}
RESULT_B = {**RESULT_A, "dns": {"nameservers": ["10.9.0.10"]}}
ERROR = {"cniVersion": "1.0.0", "code": 7, "msg": "invalid subnet",
         "details": "10.9.0.0/33 is not a CIDR"}


class FakePlugins:
    """Writes plugin scripts into a directory; each logs its call and saves its stdin."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()
        self.log = root / "calls.log"
        self.inputs = root / "inputs"
        self.inputs.mkdir()

    def add(self, name: str, stdout: object = None, status: int = 0, stderr: str = "",
            sleep: float = 0) -> None:
        out = "" if stdout is None else (stdout if isinstance(stdout, str)
                                         else json.dumps(stdout))
        script = f"""#!/bin/sh
n=$(wc -l 2>/dev/null < {self.log} || echo 0)
cat > {self.inputs}/$n-{name}-$CNI_COMMAND.json
echo "{name} $CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH" \\
  >> {self.log}
{f'exec sleep {sleep}' if sleep else ''}
printf '%s' '{out}'
{f"echo '{stderr}' >&2" if stderr else ''}
exit {status}
"""
        path = self.dir / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stdin(self, index: int, name: str, command: str) -> dict:
        return json.loads((self.inputs / f"{index}-{name}-{command}.json").read_text())


@pytest.fixture
def fake(tmp_path: Path) -> FakePlugins:
    return FakePlugins(tmp_path)


RT = RuntimeConf(container_id="c1", netns="/run/netns/x", ifname="eth0",
                 args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")),
                 capability_args={"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                    "protocol": "tcp"}],
                                  "bandwidth": {"ingressRate": 1}})


async def test_add_passes_environment_and_config_and_parses_result(fake: FakePlugins) -> None:
    fake.add("a", RESULT_A)
    plugins = CniPlugins([fake.dir])
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "a", "x": 1}
    result = await plugins.add_network(conf, RT)
    assert result == RESULT_A
    assert fake.calls() == [
        f"a ADD|c1|/run/netns/x|eth0|IgnoreUnknown=1;K8S_POD_NAME=web|{fake.dir}"]
    assert fake.stdin(0, "a", "ADD") == conf  # no capabilities declared: no runtimeConfig
    ips = result_ips(result)
    assert [c.ip for c in ips] == ["10.9.0.5", "fd00::5"]
    assert ips[0].gateway == "10.9.0.1" and ips[1].gateway == ""


async def test_chain_passes_prev_result_and_only_declared_capabilities(
        fake: FakePlugins) -> None:
    fake.add("a", RESULT_A)
    fake.add("b", RESULT_B)
    conflist = {"cniVersion": "1.0.0", "name": "net", "plugins": [
        {"type": "a"},
        {"type": "b", "capabilities": {"portMappings": True}},
    ]}
    plugins = CniPlugins([fake.dir])
    result = await plugins.add_network_list(conflist, RT)
    assert result == RESULT_B  # the last plugin's result is the chain's
    first, second = fake.stdin(0, "a", "ADD"), fake.stdin(1, "b", "ADD")
    assert first == {"type": "a", "name": "net", "cniVersion": "1.0.0"}
    assert second["prevResult"] == RESULT_A
    assert second["name"] == "net" and second["cniVersion"] == "1.0.0"
    # b asked for portMappings only: bandwidth is not handed to it.
    assert second["runtimeConfig"] == {"portMappings": RT.capability_args["portMappings"]}

    await plugins.del_network_list(conflist, RT, prev_result=result)
    await plugins.check_network_list(conflist, RT, prev_result=result)
    order = [line.split("|")[0] for line in fake.calls()]
    assert order == ["a ADD", "b ADD", "b DEL", "a DEL", "a CHECK", "b CHECK"]
    assert fake.stdin(2, "b", "DEL")["prevResult"] == RESULT_B
    assert fake.stdin(3, "a", "DEL")["prevResult"] == RESULT_B
    assert fake.stdin(4, "a", "CHECK")["prevResult"] == RESULT_B


async def test_error_object_becomes_cni_error(fake: FakePlugins) -> None:
    fake.add("bad", ERROR, status=1)
    plugins = CniPlugins([fake.dir])
    with pytest.raises(CniError) as info:
        await plugins.add_network({"cniVersion": "1.0.0", "name": "n", "type": "bad"}, RT)
    err = info.value
    assert (err.plugin, err.command, err.code) == ("bad", "ADD", 7)
    assert err.msg == "invalid subnet" and err.details == "10.9.0.0/33 is not a CIDR"
    assert str(err) == ('plugin type="bad" failed (add): invalid subnet: '
                        '10.9.0.0/33 is not a CIDR')


async def test_chain_stops_at_first_error(fake: FakePlugins) -> None:
    fake.add("a", RESULT_A)
    fake.add("bad", ERROR, status=1)
    fake.add("c", RESULT_B)
    conflist = {"cniVersion": "1.0.0", "name": "n",
                "plugins": [{"type": "a"}, {"type": "bad"}, {"type": "c"}]}
    with pytest.raises(CniError, match="invalid subnet"):
        await CniPlugins([fake.dir]).add_network_list(conflist, RT)
    assert [line.split("|")[0] for line in fake.calls()] == ["a ADD", "bad ADD"]


async def test_unreadable_failure_keeps_stderr(fake: FakePlugins) -> None:
    fake.add("crashy", "", status=2, stderr="panic: runtime error")
    with pytest.raises(CniError) as info:
        await CniPlugins([fake.dir]).add_network({"name": "n", "type": "crashy"}, RT)
    assert info.value.msg == "exit status 2"
    assert "panic: runtime error" in info.value.details


async def test_garbage_output_and_empty_add_result_are_errors(fake: FakePlugins) -> None:
    fake.add("garbage", "not json")
    fake.add("silent", None)
    plugins = CniPlugins([fake.dir])
    with pytest.raises(CniError, match="unreadable output"):
        await plugins.add_network({"name": "n", "type": "garbage"}, RT)
    with pytest.raises(CniError, match="no result"):
        await plugins.add_network({"name": "n", "type": "silent"}, RT)
    # DEL prints nothing on success.
    await plugins.del_network({"name": "n", "type": "silent"}, RT)


async def test_missing_plugin_names_the_debian_package(tmp_path: Path) -> None:
    plugins = CniPlugins([tmp_path])
    with pytest.raises(PluginNotFound) as info:
        await plugins.add_network({"name": "n", "type": "bridge"}, RT)
    assert "containernetworking-plugins" in str(info.value)
    assert str(tmp_path) in str(info.value)


async def test_first_directory_wins_and_version(fake: FakePlugins, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    fake.add("v", {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]})
    (other / "v").write_text("#!/bin/sh\nexit 1\n")
    os.chmod(other / "v", 0o755)
    plugins = CniPlugins([fake.dir, other])
    assert plugins.find("v") == str(fake.dir / "v")
    answer = await plugins.version("v")
    assert answer["supportedVersions"] == ["0.4.0", "1.0.0"]
    assert fake.calls()[0].startswith("v VERSION|||||")  # no container for VERSION
    assert fake.stdin(0, "v", "VERSION") == {"cniVersion": "1.0.0"}


async def test_hung_plugin_times_out(fake: FakePlugins) -> None:
    fake.add("slow", RESULT_A, sleep=5)
    plugins = CniPlugins([fake.dir], timeout=0.3)
    with pytest.raises(CniError, match="no answer within 0.3s"):
        await plugins.add_network({"name": "n", "type": "slow"}, RT)


def test_plugin_configs_inherit_name_and_version() -> None:
    confs = plugin_configs({"cniVersion": "0.4.0", "name": "k",
                            "plugins": [{"type": "x", "name": "ignored"}]})
    assert confs == [{"type": "x", "name": "k", "cniVersion": "0.4.0"}]
