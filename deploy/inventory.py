"""The hosts: inventory.yaml in Ansible's shape (all / children / hosts / vars).

Each host names its target profile, its address and its connection. Variables flow down: all.vars, then each enclosing
group's vars, then the host's own. Credentials are only ever references (an environment variable, ssh-agent, a key
file): a key that looks like a password, token or key, or a URL with a password in it, is refused.
"""

import dataclasses
import ipaddress
import re
from pathlib import Path

from deploy.errors import DeployError
from deploy.profile import ROOT, Number, Required, Text, check, known_targets, load_profile, optional, read_yaml

INVENTORY = ROOT / "inventory.yaml"
CONNECTIONS = ["ftp-serve", "ftp-push", "sftp", "adb", "emulator", "vm", "manual"]
# The keys a host (or a group's vars) may set; checked with the profile's schema machinery (deploy.profile.check).
HOST_SCHEMA = {
    "target": Required(str),  # one of known_targets(): see host_schema()
    "connection": Required(CONNECTIONS),
    "address": str,
    "port": Number(low=1, high=65535),
    "path": str,
    "link": {"address": Required(str), "netmask": str, "interface": str},
    "ssh": {"user": str, "key_file": str, "agent": bool, "legacy": bool, "build": str, "known_hosts": str},
    "ftp": {"port": Number(low=0, high=65535), "user": str, "password_env": str},
    "adb": {"serial": Text(empty=True)},
    "fetch": ["ftp", "copy"],
    "description": str,
    "model": str,
    "tokenizer": str,
}


def host_schema():
    """HOST_SCHEMA with the targets that exist now."""
    return dict(HOST_SCHEMA, target=Required(known_targets()))


# A host name becomes a folder under stage/ and build/: one plain path component.
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "credential")  # anywhere in a key
SECRET_WORDS = {"pass", "pwd", "key", "apikey", "token", "auth"}  # a whole word of a key (not `tokenizer`)
REFERENCE_SUFFIXES = ("_env", "_file", "_path", "_hosts")
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


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
    _refuse_secrets(path, "all", data["all"])
    inventory = Inventory(path, {}, {}, {})
    inventory.tree = _walk(inventory, "all", data["all"] or {}, (), {})
    for host in inventory.hosts.values():
        _check_host(path, host)
    return inventory


def _walk(inventory, name, group, parents, inherited):
    path = inventory.path
    check(group, {"vars": optional(host_schema()), "children": dict, "hosts": dict}, path, name)
    merged = {**inherited, **(group.get("vars") or {})}
    node = {"children": {}, "hosts": []}
    inventory.groups.setdefault(name, [])
    for host_name, host_vars in (group.get("hosts") or {}).items():
        if not isinstance(host_name, str) or not HOST_NAME.match(host_name):
            raise DeployError(path, f"host name {host_name!r} (in group '{name}') becomes a folder name: use letters, "
                                    f"digits, '.', '_' and '-', starting with a letter or digit")
        check(host_vars or {}, optional(host_schema()), path, host_name)
        if host_name in inventory.hosts:
            raise DeployError(path, f"host '{host_name}' is listed twice")
        inventory.hosts[host_name] = Host(host_name, (*parents, name), {**merged, **(host_vars or {})})
        node["hosts"].append(host_name)
    for child, child_group in (group.get("children") or {}).items():
        node["children"][child] = _walk(inventory, child, child_group or {}, (*parents, name), merged)
    for group_name in (*parents, name):
        inventory.groups.setdefault(group_name, [])
    for host_name in node["hosts"]:
        for group_name in (*parents, name):
            inventory.groups[group_name].append(host_name)
    return node


def _refuse_secrets(path, where, value):
    """Refuse anything that holds a secret rather than a reference to one: a key named like a password or token
    (except `*_env`, `*_file` and the like, which name where the secret is), or a URL with a password in it, at any
    depth, in mappings and lists alike. The message never repeats the value."""
    if isinstance(value, dict):
        for key, child in value.items():
            name = str(key).lower()
            words = set(re.split(r"[^a-z0-9]+", name))
            if (any(part in name for part in SECRET_PARTS) or words & SECRET_WORDS) and \
                    not name.endswith(REFERENCE_SUFFIXES):
                raise DeployError(path, f"'{where}.{key}': no passwords in the inventory (nor tokens or keys); name "
                                        f"an environment variable instead ('{key}_env: VARIABLE'), or a key file")
            _refuse_secrets(path, f"{where}.{key}", child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_secrets(path, f"{where}[{index}]", item)
    elif isinstance(value, str) and URL_WITH_PASSWORD.search(value):
        raise DeployError(path, f"'{where}' holds a URL with a password in it; put the password in an environment "
                                f"variable and name it with password_env")


def _check_host(path, host):
    where = host.name
    check(host.vars, host_schema(), path, where)
    if host.connection in ("ftp-serve", "ftp-push", "sftp", "vm") and not host.get("address"):
        raise DeployError(path, f"host '{where}': a {host.connection} connection needs an address")
    if host.connection in ("ftp-serve", "vm") and not host.get("link"):
        raise DeployError(path, f"host '{where}': {host.connection} needs link.address (our address on the link)")
    if host.connection == "vm" and not load_profile(host.target).get("machine"):
        raise DeployError(path, f"host '{where}': target {host.target} has no 'machine' block to boot "
                                f"(targets/{host.target}.yaml); p2-linux has one")
    link = host.get("link") or {}
    try:
        ip = ipaddress.ip_address(link.get("address", "127.0.0.1"))
        ipaddress.ip_network(f"{ip}/{link.get('netmask', ip.max_prefixlen)}", strict=False)
    except ValueError as error:
        raise DeployError(path, f"'{where}.link': {error} (our address on the link, e.g. 192.168.1.1, and its "
                                f"netmask, e.g. 255.255.255.0)") from None
    build = (host.get("ssh") or {}).get("build")
    if build is not None:
        toolchains = [toolchain["name"] for toolchain in load_profile(host.target).toolchains]
        if build not in toolchains:
            raise DeployError(path, f"'{where}.ssh.build' is {build!r}; {host.target} has the toolchains "
                                    f"{', '.join(toolchains)}")
