"""The hosts: inventory.yaml in Ansible's shape (all / children / hosts / vars).

Each host names its target profile, its address and its connection. Variables flow down: all.vars, then each enclosing
group's vars, then the host's own. Credentials are only ever references (an environment variable, ssh-agent, a key
file): a key that looks like a password is refused.
"""

import dataclasses
from pathlib import Path

from deploy.errors import DeployError
from deploy.profile import ROOT, known_targets, load_profile, read_yaml

INVENTORY = ROOT / "inventory.yaml"
CONNECTIONS = ["ftp-serve", "ftp-push", "sftp", "adb", "emulator", "vm", "manual"]
HOST_KEYS = {"target", "address", "connection", "port", "path", "link", "ssh", "ftp", "adb", "fetch", "description",
             "model", "tokenizer"}
SECRET_WORDS = ("password", "passwd", "secret")


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    groups: tuple  # enclosing groups, outermost first
    vars: dict

    def __getitem__(self, key):
        return self.vars[key]

    def get(self, key, default=None):
        return self.vars.get(key, default)

    @property
    def target(self):
        return self.vars["target"]

    @property
    def connection(self):
        return self.vars["connection"]


@dataclasses.dataclass
class Inventory:
    path: Path
    hosts: dict  # name -> Host
    groups: dict  # name -> list of host names (every host below the group)
    tree: dict  # group -> {"children": {...}, "hosts": [...]}, for drawing

    def select(self, limit=None):
        """Hosts named by `limit`: comma-separated host or group names (all hosts when empty)."""
        if not limit:
            return list(self.hosts.values())
        chosen = []
        for name in [part.strip() for part in str(limit).split(",") if part.strip()]:
            if name in self.hosts:
                names = [name]
            elif name in self.groups:
                names = self.groups[name]
            else:
                known = ", ".join(sorted([*self.groups, *self.hosts]))
                raise DeployError(self.path, f"no host or group '{name}' (known: {known})")
            chosen += [self.hosts[n] for n in names if self.hosts[n] not in chosen]
        return chosen


def load_inventory(path=None):
    path = Path(path or INVENTORY)
    data = read_yaml(path, "the inventory")
    if set(data) != {"all"}:
        raise DeployError(path, "the top level must be a single 'all' group")
    inventory = Inventory(path, {}, {}, {})
    inventory.tree = _walk(inventory, "all", data["all"] or {}, (), {})
    for host in inventory.hosts.values():
        _check_host(path, host)
    return inventory


def _walk(inventory, name, group, parents, inherited):
    if not isinstance(group, dict) or set(group) - {"vars", "children", "hosts"}:
        raise DeployError(inventory.path, f"group '{name}' may only hold vars, children and hosts")
    merged = {**inherited, **(group.get("vars") or {})}
    _refuse_secrets(inventory.path, name, group.get("vars") or {})
    node = {"children": {}, "hosts": []}
    inventory.groups.setdefault(name, [])
    for host_name, host_vars in (group.get("hosts") or {}).items():
        host_vars = host_vars or {}
        _refuse_secrets(inventory.path, host_name, host_vars)
        if host_name in inventory.hosts:
            raise DeployError(inventory.path, f"host '{host_name}' is listed twice")
        inventory.hosts[host_name] = Host(host_name, (*parents, name), {**merged, **host_vars})
        node["hosts"].append(host_name)
    for child, child_group in (group.get("children") or {}).items():
        node["children"][child] = _walk(inventory, child, child_group or {}, (*parents, name), merged)
    for group_name in (*parents, name):
        inventory.groups.setdefault(group_name, [])
    for host_name in node["hosts"]:
        for group_name in (*parents, name):
            inventory.groups[group_name].append(host_name)
    return node


def _refuse_secrets(path, where, values):
    for key, value in values.items():
        if any(word in str(key).lower() for word in SECRET_WORDS) and not str(key).endswith("_env"):
            raise DeployError(path, f"'{where}.{key}': no passwords in the inventory; name an environment variable "
                                    f"instead ('{key}_env: VARIABLE')")
        if isinstance(value, dict):
            _refuse_secrets(path, f"{where}.{key}", value)


def _check_host(path, host):
    unknown = set(host.vars) - HOST_KEYS
    if unknown:
        raise DeployError(path, f"host '{host.name}': unknown key '{sorted(unknown)[0]}' "
                                f"(allowed: {', '.join(sorted(HOST_KEYS))})")
    for key in ("target", "connection"):
        if key not in host.vars:
            raise DeployError(path, f"host '{host.name}' has no '{key}'")
    if host.target not in known_targets():
        raise DeployError(path, f"host '{host.name}': unknown target '{host.target}' "
                                f"(known: {', '.join(known_targets())})")
    if host.connection not in CONNECTIONS:
        raise DeployError(path, f"host '{host.name}': connection '{host.connection}' is not one of "
                                f"{', '.join(CONNECTIONS)}")
    if host.connection in ("ftp-serve", "ftp-push", "sftp", "vm") and not host.get("address"):
        raise DeployError(path, f"host '{host.name}': a {host.connection} connection needs an address")
    if host.connection in ("ftp-serve", "vm") and not (host.get("link") or {}).get("address"):
        raise DeployError(path, f"host '{host.name}': {host.connection} needs link.address (our address on the link)")
    if host.connection == "vm" and not load_profile(host.target).get("machine"):
        raise DeployError(path, f"host '{host.name}': target {host.target} has no 'machine' block to boot "
                                f"(targets/{host.target}.yaml); p2-linux has one")
