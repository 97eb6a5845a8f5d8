"""Every key of a profile and of an inventory host, given a wrong value, ends in one DeployError naming the file and
the key (never another exception); every shipped profile and the shipped inventory load cleanly."""

import copy

import pytest
import yaml

from deploy.errors import DeployError
from deploy.inventory import HOST_SCHEMA, load_inventory
from deploy.profile import (SCHEMA, FileName, ListOf, MapOf, Number, OrNone, Required, Text, known_targets,
                            load_profile)


def _unwrap(schema):
    while isinstance(schema, (Required, OrNone)):
        schema = schema.schema
    if isinstance(schema, list) and len(schema) == 1 and isinstance(schema[0], (dict, type, Text, FileName)):
        return ListOf(schema[0])
    return schema


def key_paths(schema, path=()):
    """(path, schema) of every key, nested ones too; a list of mappings is entered through its first item."""
    schema = _unwrap(schema)
    if isinstance(schema, dict):
        for key, child in schema.items():
            yield (*path, key), child
            yield from key_paths(child, (*path, key))
    elif isinstance(schema, ListOf) and isinstance(_unwrap(schema.item), dict):
        yield from key_paths(schema.item, (*path, 0))


def wrong_values(schema):
    """Values of the wrong type, out of range, unknown or empty for `schema`."""
    nullable = isinstance(schema, OrNone) or isinstance(schema, Required) and isinstance(schema.schema, OrNone)
    schema = _unwrap(schema)
    found = [] if nullable else [None]
    if isinstance(schema, dict):
        return found + ["text", 5, [1, 2], True]
    if isinstance(schema, ListOf):
        item = _unwrap(schema.item)
        found += ["text", 5, {"a": 1}, [None]]
        found += [[{"a": 1}]] if not isinstance(item, dict) else [["text"], [5]]
        return found + ([[]] if schema.at_least else [])
    if isinstance(schema, MapOf):
        return found + ["text", 5, [1], {"KEY": [1]}, {"KEY": {"a": 1}}]
    if isinstance(schema, list):
        return found + ["nonsense", 999, "", [], {"a": 1}, True]
    if isinstance(schema, Number):
        found += ["text", "", -1, -0.5, float("inf"), float("nan"), True, [], {}]
        found += [0] if (schema.low or 0) > 0 or schema.above is not None else []
        found += [1.5] if float not in schema.kinds else []
        found += [schema.high + 1] if schema.high is not None else []
        return found
    if isinstance(schema, FileName):
        return found + [5, "", "..", ".", "a/b", "../x", "/abs", "C:\\X", "a\\b", [], True]
    if isinstance(schema, Text) or schema is str:
        return found + [5, 1.5, True, [], {"a": 1}] + ([] if isinstance(schema, Text) and schema.empty else ["", " "])
    if schema is bool:
        return found + ["yes", 5, "", []]
    raise AssertionError(f"no wrong values for {schema!r}")


def _key_text(path):
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _set(data, path, value):
    for part in path[:-1]:
        data = data[part] if isinstance(part, int) else data.setdefault(part, {})
    data[path[-1]] = value


def _cases(schema):
    return [pytest.param(path, value, id=f"{_key_text(path)}={value!r}")
            for path, child in key_paths(schema) for value in wrong_values(child)]


# --- profiles ---------------------------------------------------------------------------------------------------------

def _profile_base():
    data = copy.deepcopy(load_profile("host").data)
    data["name"] = "t"
    data["published"] = [{"model": "m", "tok_s": 1.5, "source": "s"}]
    data["toolchains"][0]["port"] = {"kernel": "scalar"}
    return data


@pytest.mark.parametrize("path, value", _cases({key: value for key, value in SCHEMA.items() if key != "extends"}))
def test_every_profile_key_refuses_wrong_values(tmp_path, path, value):
    data = _profile_base()
    _set(data, path, value)
    file = tmp_path / "t.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError) as caught:
        load_profile("t", targets_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{file}: ") and f"'{_key_text(path)}" in message and "\n" not in message, message


@pytest.mark.parametrize("value", [5, ["host"], ""])  # resolved before the schema is checked
def test_extends_must_name_a_target(tmp_path, value):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"extends": value, "name": "t"}))
    with pytest.raises(DeployError, match="'extends'"):
        load_profile("t", targets_dir=tmp_path)


@pytest.mark.parametrize("key", ["name", "cpu", "os", "port", "files", "toolchains", "cpu.arch", "cpu.endianness",
                                 "port.kernel", "files.model", "toolchains[0].cc", "toolchains[0].name"])
def test_required_keys(tmp_path, key):
    data = _profile_base()
    *parents, last = key.replace("[0]", ".0").split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[last]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match=f"missing required key '{_escape(key)}'"):
        load_profile("t", targets_dir=tmp_path)


def _escape(text):
    return text.replace("[", r"\[").replace("]", r"\]")


@pytest.mark.parametrize("files, message", [
    ({"program": "run", "model": "m.bin", "tokenizer": "m.bin"}, "'files.tokenizer' is 'm.bin', the same name as "
                                                                 "'files.model'"),
    ({"program": "run", "model": "M.BIN", "tokenizer": "m.bin"}, "the same name as 'files.model'"),
    ({"program": "run", "model": "../m.bin", "tokenizer": "t.bin"}, "'files.model' is '../m.bin', expected a file "
                                                                    "name"),
    ({"program": "/bin/run", "model": "m.bin", "tokenizer": "t.bin"}, "'files.program' is '/bin/run'"),
])
def test_file_names(tmp_path, files, message):
    data = _profile_base()
    data["files"] = files
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match=_escape(message).replace("(", r"\(").replace(")", r"\)")):
        load_profile("t", targets_dir=tmp_path)


def test_8_3_names_where_the_disk_needs_them(tmp_path):
    data = _profile_base()
    data["disk"] = {"names": "8.3"}
    data["files"] = {"program": "RUN.EXE", "model": "stories15M.bin", "tokenizer": "TOK.BIN"}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match="'files.model' is 'stories15M.bin', not an 8.3 name as disk.names says"):
        load_profile("t", targets_dir=tmp_path)
    data["files"]["model"] = "MODEL.BIN"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    assert load_profile("t", targets_dir=tmp_path)["files"]["model"] == "MODEL.BIN"


def test_bundle_toolchain_needs_its_script(tmp_path):
    data = _profile_base()
    data["toolchains"].append({"name": "b", "kind": "bundle", "cc": "bcc32", "command": ["bcc32", "RUN.C"]})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match=r"missing required key 'toolchains\[1\].script'"):
        load_profile("t", targets_dir=tmp_path)


@pytest.mark.parametrize("name", known_targets())
def test_shipped_profiles_load(name):
    assert load_profile(name).name == name


# --- inventory --------------------------------------------------------------------------------------------------------

HOST = {"target": "rpi4", "connection": "sftp", "address": "x", "port": 22, "path": "/p", "description": "d",
        "ssh": {"user": "u"}, "link": {"address": "127.0.0.1"}, "ftp": {"port": 21}, "adb": {"serial": ""},
        "fetch": "ftp", "model": "tiny260k", "tokenizer": "tiny260k"}


def _inventory(tmp_path, data):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path, value", _cases(HOST_SCHEMA))
@pytest.mark.parametrize("level", ["host", "group vars"])
def test_every_host_key_refuses_wrong_values(tmp_path, level, path, value):
    host = copy.deepcopy(HOST)
    group_vars = {}
    _set(host if level == "host" else group_vars, path, value)
    if level == "group vars" and path[0] in host:
        del host[path[0]]
    file = _inventory(tmp_path, {"all": {"vars": group_vars, "hosts": {"h": host}}})
    with pytest.raises(DeployError) as caught:
        load_inventory(file)
    message = str(caught.value)
    key = _key_text(("h" if level == "host" else "all.vars", *path))
    assert message.startswith(f"{file}: ") and "\n" not in message, message
    assert f"'{key}" in message, message


@pytest.mark.parametrize("text, message", [
    ("all:\n  hosts: [a, b]\n", "'all.hosts' is ['a', 'b'], expected a mapping"),
    ("all:\n  children: [a]\n", "'all.children' is ['a'], expected a mapping"),
    ("all:\n  children: {g: [1]}\n", "'g' must be a mapping with keys vars, children, hosts"),
    ("all:\n  hosts: {h: 5}\n", "'h' must be a mapping"),
    ("all:\n  hosts: {h: [1]}\n", "'h' must be a mapping"),
    ("all:\n  vars: [1]\n", "'all.vars' must be a mapping"),
    ("all:\n  colour: red\n", "unknown key 'all.colour'"),
    ("all:\n  hosts: {h: {connection: emulator}}\n", "missing required key 'h.target'"),
    ("all:\n  hosts: {h: {target: rpi4}}\n", "missing required key 'h.connection'"),
    ("all:\n  hosts: {h: {target: rpi4, connection: sftp}}\n", "host 'h': a sftp connection needs an address"),
    ("all:\n  hosts: {h: {target: rpi4, connection: emulator, link: {address: ourbox}}}\n",
     "'h.link': 'ourbox' does not appear to be an IPv4 or IPv6 address"),
    ("all:\n  hosts: {h: {target: rpi4, connection: emulator, link: {address: 10.0.0.1, netmask: 255.0.255.0}}}\n",
     "'h.link': '10.0.0.1/255.0.255.0' does not appear to be an IPv4 or IPv6 network"),
    ("all:\n  hosts: {h: {target: rpi4, connection: sftp, address: a, ssh: {build: borland}}}\n",
     "'h.ssh.build' is 'borland'; rpi4 has the toolchains aarch64-linux-gnu-gcc"),
])
def test_inventory_shapes(tmp_path, text, message):
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    with pytest.raises(DeployError) as caught:
        load_inventory(path)
    assert str(caught.value) == f"{path}: " + message or str(caught.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", ".hidden", "..", "", "has space", 5])
def test_host_names_become_folder_names(tmp_path, name):
    path = _inventory(tmp_path, {"all": {"hosts": {name: {"target": "rpi4", "connection": "emulator"}}}})
    with pytest.raises(DeployError, match="becomes a folder name"):
        load_inventory(path)


@pytest.mark.parametrize("host_vars", [
    {"ssh": {"user": "u", "password": "x"}}, {"ssh": {"user": "u", "passphrase": "x"}}, {"ftp": {"pass": "x"}},
    {"ftp": {"pwd": "x"}}, {"ftp": {"token": "x"}}, {"ssh": {"private_key": "x"}}, {"ftp": {"api-key": "x"}},
    {"ftp": {"client_secret": "x"}}, {"ssh": {"options": [{"password": "x"}]}},
    {"ssh": {"passwords": ["a", "b"]}}, {"description": "see ftp://user:hunter2@host/dir"},
    {"address": "sftp://u:p@10.0.0.2"}, {"ssh": {"options": ["-o", "ProxyCommand=curl http://a:b@c"]}},
])
def test_secrets_are_refused(tmp_path, host_vars):
    host = {"target": "rpi4", "connection": "emulator", **host_vars}
    path = _inventory(tmp_path, {"all": {"hosts": {"h": host}}})
    with pytest.raises(DeployError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert "no passwords in the inventory" in message or "holds a URL with a password" in message, message
    assert "hunter2" not in message and "'x'" not in message


def test_references_to_secrets_are_fine(tmp_path):
    host = {"target": "rpi4", "connection": "sftp", "address": "h", "tokenizer": "tiny260k",
            "description": "mirror at http://example.org/x and user@host",
            "ssh": {"user": "u", "key_file": "~/.ssh/id", "known_hosts": "kh", "agent": True},
            "ftp": {"user": "u", "password_env": "FTP_PASSWORD"}}
    assert load_inventory(_inventory(tmp_path, {"all": {"hosts": {"h": host}}})).hosts["h"]["ftp"]["user"] == "u"


def test_inventory_naming_a_folder(tmp_path):
    with pytest.raises(DeployError, match=f"^{tmp_path}: cannot read the inventory: Is a directory$"):
        load_inventory(tmp_path)


def test_shipped_inventory_loads():
    inventory = load_inventory()
    assert inventory.hosts and all(host.target in known_targets() for host in inventory.hosts.values())


@pytest.mark.parametrize("name", known_targets())
def test_every_profile_gives_its_disk_read_bandwidth_with_a_source(name):
    disk = load_profile(name).get("disk") or {}
    assert disk.get("read_mb_s", 0) > 0 and disk.get("source"), f"{name}: disk.read_mb_s and disk.source"
