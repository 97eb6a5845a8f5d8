"""`invoke serve`: serve a stage an earlier deploy left, with the built-in FTP server, until the host has it all."""

from deploy.stage import load_stage


def serve_stage(host, bind=None, stay=False, console=None):
    from deploy.ftpserve import StageServer, check_link_address, client_command, write_fetch_scripts

    stage = load_stage(host.name)
    link = host.get("link") or {}
    address, port = link.get("address", "127.0.0.1"), (host.get("ftp") or {}).get("port", 21)
    if bind:
        address, _, port_text = bind.rpartition(":")
        port = int(port_text)
    check_link_address(address, link.get("netmask"), link.get("interface"))
    ftp = host.get("ftp") or {}
    scripts = write_fetch_scripts(stage.directory, stage.names(), address, user=ftp.get("user"))
    server = StageServer(stage.directory, stage.names() + [path.name for path in scripts], bind=(address, port),
                         user=ftp.get("user"), password_env=ftp.get("password_env"), stay=stay)
    server.start()
    if console:
        console.print(f"serving {stage.directory} on {address}:{server.address[1]}; on {host.name} type: "
                      f"{client_command(address)}")
    try:
        summary = server.wait_complete()
    finally:
        server.stop()
    if console:
        for record in summary:
            console.print(f"sent {record.file}: {record.bytes:,} bytes in {record.seconds:.1f} s to {record.client}")
    return summary
