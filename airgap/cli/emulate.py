"""`airgap emulate`: local Cisco, BIG-IQ and BIG-IP emulators, and emulated device captures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from airgap.cli._output import AppState, mapped_errors, out, state

app = typer.Typer(
    help="Local stand-ins for the vendor APIs and for devices, for demos and tests.",
    no_args_is_help=True,
)

Port = Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0 picks a free one).")]
Latency = Annotated[float, typer.Option("--latency", help="Milliseconds added to each call.")]
FaultSpec = Annotated[
    str | None,
    typer.Option(
        "--faults", help="Injected faults, e.g. 429=0.1,500=0.05,reset=0.02,slow=0.1 (rates)."
    ),
]
Tls = Annotated[bool, typer.Option("--tls", help="Serve HTTPS with a self-signed certificate.")]
CertOut = Annotated[
    Path | None, typer.Option("--cert-out", help="Write the certificate (PEM) here (with --tls).")
]


def _serve(st: AppState, server: object, name: str) -> None:
    from airgap.emulators.server import EmulatorServer

    assert isinstance(server, EmulatorServer)
    st.emit({"url": server.url, "cert": str(server.cert_path) if server.cert_path else None})
    if not st.json:
        # The URL goes to stdout alone so scripts can read it; the rest is for people.
        print(server.url, flush=True)
        st.note(f"{name} emulator listening; stats at {server.url}/_emulator/stats; Ctrl-C stops")
        if server.cert_path:
            st.note(f"certificate: {server.cert_path}")
    try:
        server.serve_forever()
    finally:
        server.stop()


def _credential_notes(st: AppState, credential: str, username: str, password_given: bool) -> None:
    """Tell a person which variables give the inventory's credential; never a password value
    they did not choose (the emulator accepts any non-empty one unless --password is given)."""
    from airgap.devices.credentials import env_prefix

    prefix = env_prefix(credential)
    value = "<the --password you gave>" if password_given else "<any non-empty password>"
    st.note(f"the inventory names the credential {credential!r}; set before collect or apply:")
    st.note(f"  export {prefix}USERNAME={username}")
    st.note(f"  export {prefix}PASSWORD='{value}'")


def _credential_json(credential: str, username: str) -> dict[str, object]:
    from airgap.devices.credentials import env_prefix

    prefix = env_prefix(credential)
    return {
        "name": credential,
        "username_env": f"{prefix}USERNAME",
        "username": username,
        "password_env": f"{prefix}PASSWORD",
    }


@app.command("cisco")
def cisco_cmd(
    ctx: typer.Context,
    port: Port = 0,
    latency: Latency = 0.0,
    poll_delay: Annotated[
        float, typer.Option("--poll-delay", help="Seconds before a poll turns COMPLETE.")
    ] = 1.0,
    faults: FaultSpec = None,
    token_ttl: Annotated[
        float, typer.Option("--token-ttl", help="Token lifetime, seconds.")
    ] = 3599,
    client_secret: Annotated[
        str | None, typer.Option("--client-secret", help="Require this client secret.")
    ] = None,
    strict_nonce: Annotated[
        bool,
        typer.Option(
            "--strict-nonce",
            help="Refuse reused nonces (default: count them). Any non-empty nonce is accepted "
            "the first time, whatever its length.",
        ),
    ] = False,
    licenses: Annotated[
        int | None,
        typer.Option(
            "--licenses",
            help="Licenses purchased of every tag (default: 1,000 of the sample tags, 10,000 "
            "of others).",
            min=0,
        ),
    ] = None,
    tls: Tls = False,
    cert_out: CertOut = None,
) -> None:
    """Run the Cisco Smart Software Licensing API emulator.

    Point an outside home at it with
    `airgap config set cisco.api_base URL/services/api/smart-accounts-and-licensing/` and
    `airgap config set cisco.token_url URL/oauth2/default/v1/token`.
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.emulators.cisco import build_cisco_server

        server = build_cisco_server(
            port=port,
            latency_ms=latency,
            poll_delay=poll_delay,
            faults=faults,
            token_ttl=token_ttl,
            client_secret=client_secret,
            strict_nonce=strict_nonce,
            tls=tls,
            cert_out=cert_out,
            licenses=licenses,
        )
    _serve(st, server, "Cisco")


@app.command("bigiq")
def bigiq_cmd(
    ctx: typer.Context,
    port: Port = 0,
    latency: Latency = 0.0,
    task_delay: Annotated[
        float, typer.Option("--task-delay", help="Seconds a licensing task stays STARTED.")
    ] = 0.0,
    faults: FaultSpec = None,
    token_ttl: Annotated[float, typer.Option("--token-ttl", help="Token lifetime, seconds.")] = 300,
    password: Annotated[
        str | None, typer.Option("--password", help="Require this password for admin.")
    ] = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool", help="Utility pool NAME:CAPACITY (repeatable; replaces the default)."
        ),
    ] = None,
    tls: Tls = False,
    cert_out: CertOut = None,
) -> None:
    """Run the F5 BIG-IQ License Manager emulator (user admin; pool demo-utility by default).

    Point an outside home at it with `airgap config set bigiq.url URL`.
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.emulators.bigiq import BigIqEmulator, parse_pool_specs
        from airgap.emulators.server import EmulatorServer, Faults

        emulator = BigIqEmulator(
            token_ttl=token_ttl,
            password=password,
            task_delay=task_delay,
            pools=parse_pool_specs(pool) if pool else None,
        )
        server = EmulatorServer(
            emulator,
            port=port,
            latency_ms=latency,
            faults=Faults.parse(faults) if faults else None,
            tls=tls,
            cert_out=cert_out,
        )
    _serve(st, server, "BIG-IQ")


@app.command("bigip")
def bigip_cmd(
    ctx: typer.Context,
    inventory_out: Annotated[
        Path,
        typer.Option("--inventory-out", help="Write the inventory (CSV) of the emulated devices."),
    ],
    devices: Annotated[
        int, typer.Option("--devices", min=1, help="How many BIG-IPs, one port each.")
    ] = 1,
    port: Annotated[
        int, typer.Option("--port", help="TCP port of the first device (0 picks a free one).")
    ] = 0,
    latency: Latency = 0.0,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Injected faults as rates: 429, 500, reset, slow, and the device kinds auth "
            "(login refused) and restart (a 503 window), e.g. 429=0.05,auth=0.02,restart=0.01.",
        ),
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Require this password for admin.")
    ] = None,
    token_ttl: Annotated[
        float, typer.Option("--token-ttl", help="Token lifetime, seconds.")
    ] = 1200,
    restart_seconds: Annotated[
        float,
        typer.Option("--restart-seconds", help="Seconds a device answers 503 after reloadlic."),
    ] = 2.0,
    cert_out: Annotated[
        Path | None,
        typer.Option("--cert-out", help="Write the devices' certificate (PEM) here."),
    ] = None,
) -> None:
    """Run a fleet of emulated F5 BIG-IPs (iControl REST over HTTPS, one port per device).

    Writes an inventory whose rows point at the devices (credential `lab`: user admin,
    any non-empty password unless --password is given) and prints the stats URL.
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.emulators.bigip import CREDENTIAL_NAME as BIGIP_CREDENTIAL
        from airgap.emulators.bigip import USERNAME as BIGIP_USERNAME
        from airgap.emulators.bigip import build_bigip_fleet

        fleet = build_bigip_fleet(
            devices,
            port=port,
            latency_ms=latency,
            faults=faults,
            password=password,
            token_ttl=token_ttl,
            restart_seconds=restart_seconds,
            cert_out=cert_out,
        )
        try:
            fleet.write_inventory(inventory_out)
        except BaseException:
            fleet.stop()
            raise
    st.emit(
        {
            "stats_url": fleet.stats_url,
            "inventory": str(inventory_out),
            "cert": str(fleet.cert_path),
            "devices": devices,
            "credential": _credential_json(BIGIP_CREDENTIAL, BIGIP_USERNAME),
        }
    )
    if not st.json:
        # The stats URL goes to stdout alone so scripts can read it; the rest is for people.
        print(fleet.stats_url, flush=True)
        st.note(
            f"{devices} emulated BIG-IP(s) listening, one port each (see {inventory_out}); "
            "Ctrl-C stops"
        )
        st.note(f"certificate: {fleet.cert_path}")
        _credential_notes(st, BIGIP_CREDENTIAL, BIGIP_USERNAME, password is not None)
    try:
        fleet.serve_forever()
    finally:
        fleet.stop()


@app.command("device")
def device_cmd(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--pid", help="Product id, e.g. C9300-24T.")],
    sn: Annotated[str, typer.Option("--sn", help="Serial number, e.g. FOC2437L1ZK.")],
    output: Annotated[Path, typer.Option("--out", help="Folder to write the captures into.")],
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Default: dev-<sn in lower case>.")
    ] = None,
    return_code: Annotated[
        bool, typer.Option("--return-code", help="Also write a return-code capture.")
    ] = False,
) -> None:
    """Write what an operator would capture from a device: UDI, signed RUM report, return code.

    Example: `airgap emulate device --pid C9300-24T --sn FOC2437L1ZK --out captures/`
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.emulators.device import write_device

        files = write_device(pid=pid, sn=sn, hostname=hostname, out=output, return_code=return_code)
    written = [files.udi, files.rum, *([files.return_code] if files.return_code else [])]
    st.emit(
        {"hostname": files.hostname, "files": [str(p) for p in written]},
        lambda: out.print("\n".join(f"wrote {escape(str(p))}" for p in written)),
    )


@app.command("ios-xe")
def iosxe_cmd(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option("--devices", help="How many devices to emulate.")],
    inventory_out: Annotated[
        Path, typer.Option("--inventory-out", help="Write the inventory (CSV) here.")
    ],
    latency: Latency = 0.0,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Device faults, e.g. auth=0.05,refused=0.05,timeout=0.02,disconnect=0.05,seed=1.",
        ),
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Require this password for admin.")
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(
            "--transport", help="slp-rest or ssh for every row (default: they alternate)."
        ),
    ] = None,
    host_key_seed: Annotated[
        str,
        typer.Option(
            "--host-key-seed", help="SSH host keys derive from this; the same seed, the same keys."
        ),
    ] = "airgap-emulator",
    cert_out: Annotated[
        Path | None,
        typer.Option(
            "--cert-out",
            help="Write the HTTPS certificate (PEM) here (default: beside the inventory).",
        ),
    ] = None,
) -> None:
    """Run an emulated fleet of Cisco IOS XE devices (SLP REST API over HTTPS, CLI over SSH).

    Every device listens on its own HTTPS and SSH port on 127.0.0.1; the inventory written
    names one of them per device and the credential `lab` (AIRGAP_DEVICE_LAB_USERNAME=admin,
    AIRGAP_DEVICE_LAB_PASSWORD=any non-empty password unless --password is given).
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.emulators.iosxe import CREDENTIAL_NAME, USERNAME, start_fleet

        cert = cert_out or inventory_out.with_name(inventory_out.stem + "-ca.pem")
        fleet = start_fleet(
            devices=devices,
            latency_ms=latency,
            faults=faults,
            password=password,
            transport=transport,
            host_key_seed=host_key_seed,
            cert_out=cert,
        )
        try:
            fleet.write_inventory(inventory_out)
        except BaseException:
            fleet.stop()
            raise
    st.emit(
        {
            "stats_url": fleet.stats_url,
            "inventory": str(inventory_out),
            "cert": str(fleet.cert_path),
            "devices": devices,
            "credential": _credential_json(CREDENTIAL_NAME, USERNAME),
        }
    )
    if not st.json:
        print(fleet.stats_url, flush=True)
        st.note(
            f"{devices} IOS XE devices listening; inventory {escape(str(inventory_out))}, "
            f"certificate {escape(str(fleet.cert_path))}; Ctrl-C stops"
        )
        _credential_notes(st, CREDENTIAL_NAME, USERNAME, password is not None)
    fleet.serve_forever()
