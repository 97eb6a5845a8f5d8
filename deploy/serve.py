"""`invoke serve`: serve a stage an earlier deploy left, with the built-in FTP server, until the host has it all (or,
with stay, until Ctrl-C)."""

import ipaddress

from deploy.errors import DeployError
from deploy.stage import load_stage


def parse_bind(bind):
    """(address, port) from ADDRESS:PORT ([v6]:PORT for IPv6), or a one-line DeployError."""
    address, colon, port_text = str(bind).rpartition(":")
    address = address.strip("[]")
    if not colon or not address:
        raise DeployError(f"--bind {bind}", "expected ADDRESS:PORT, e.g. 192.168.1.1:21 or 127.0.0.1:2121")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DeployError(f"--bind {bind}", f"'{address}' is not an IP address") from None
    if ip.is_unspecified:
        raise DeployError(f"--bind {bind}", "give the address the machine reaches us on (FETCH.TXT names it), "
                                            "not a wildcard")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise DeployError(f"--bind {bind}", f"'{port_text}' is not a port: use 0 to 65535 (0: any free port)")
    return address, int(port_text)


def serve_stage(host, bind=None, stay=False, console=None, stage_root=None):
    from deploy.ftpserve import RichProgress, StageServer, check_link_address, client_command, typed_session

    if host.connection != "ftp-serve":
        raise DeployError(host.name, f"connects by {host.connection}, not ftp-serve: `invoke serve` is for hosts that "
                                     f"fetch from us; use `invoke deploy --host {host.name}`")
    link, ftp = host.get("link") or {}, host.get("ftp") or {}
    address, port = parse_bind(bind) if bind else (link.get("address", "127.0.0.1"), ftp.get("port", 21))
    check_link_address(address, link.get("netmask"), link.get("interface"))
    stage = load_stage(host.name, stage_root)
    say = console.print if console else (lambda *args, **kwargs: None)
    with RichProgress({item.name: item.size for item in stage.files}) as progress:
        server = StageServer(stage.directory, stage.names(), bind=(address, port), user=ftp.get("user"),
                             password_env=ftp.get("password_env"), stay=stay, on_progress=progress)
        where = server.address
        say(f"serving {stage.directory} on {where[0]}:{where[1]}" + (" until Ctrl-C" if stay else ""))
        say(f"first time on {host.name}, type: " + " / ".join(typed_session(where, stage.names(), ftp.get("user"))),
            soft_wrap=True)
        say(f"afterwards: GET (or {client_command(where)})")
        try:
            summary = server.serve_until_complete()
        except KeyboardInterrupt:
            _report(say, server.summary())
            raise
    _report(say, summary)
    return summary


def _report(say, summary):
    for record in summary:
        state = "" if record.complete else " (cut off)"
        say(f"sent {record.file}: {record.bytes:,} bytes in {record.seconds:.1f} s to {record.client}{state}")
