"""`invoke serve`: serve a stage an earlier deploy left, with the built-in FTP server, until the host has it all."""

from deploy.stage import load_stage


def serve_stage(host, bind=None, stay=False, console=None):
    from deploy.ftpserve import RichProgress, StageServer, check_link_address, client_command, typed_session, \
        write_fetch_scripts

    stage = load_stage(host.name)
    link, ftp = host.get("link") or {}, host.get("ftp") or {}
    address, port = link.get("address", "127.0.0.1"), ftp.get("port", 21)
    if bind:
        address, _, port_text = bind.rpartition(":")
        port = int(port_text)
    check_link_address(address, link.get("netmask"), link.get("interface"))
    names = stage.names()
    write_fetch_scripts(stage.directory, names, (address, port), user=ftp.get("user"))
    if console:
        console.print(f"serving {stage.directory} on {address}:{port}")
        console.print(f"first time on {host.name}, type: " + " / ".join(typed_session((address, port), names,
                                                                                      ftp.get("user"))))
        console.print(f"afterwards: GET (or {client_command((address, port))})")
    with RichProgress({item.name: item.size for item in stage.files}) as progress:
        server = StageServer(stage.directory, names, bind=(address, port), user=ftp.get("user"),
                             password_env=ftp.get("password_env"), stay=stay, on_progress=progress)
        server.start()
        summary = server.serve_until_complete()
    if console:
        for record in summary:
            console.print(f"sent {record.file}: {record.bytes:,} bytes in {record.seconds:.1f} s to {record.client}")
    return summary
