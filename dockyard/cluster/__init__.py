"""A local multi-node cluster on one machine (`dockyard cluster up|down|status`).

`hosts.py` makes the hosts (a bridge and one network namespace per node), `etcd.py` the etcd
members, `process.py` starts and ends detached processes by pid, and `local.py` puts them
together and records what it made in DATA_DIR/cluster.json.
"""
