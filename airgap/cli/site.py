"""Commands that manage the home itself: init, key export, trust, config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli._output import AppState, mapped_errors, out, state

key_app = typer.Typer(help="This site's public card.", no_args_is_help=True)
trust_app = typer.Typer(help="The sites whose signatures this home accepts.", no_args_is_help=True)
config_app = typer.Typer(help="Read and change config.toml.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.add_typer(key_app, name="key")
    app.add_typer(trust_app, name="trust")
    app.add_typer(config_app, name="config")


def _new_passphrase(app: AppState, no_passphrase: bool) -> str | None:
    from airgap.errors import ConfigError

    if no_passphrase:
        return None
    value = app.env.get("AIRGAP_PASSPHRASE")
    if value:
        return value
    import getpass
    import sys

    if sys.stdin.isatty() and not app.json:
        first = getpass.getpass("New passphrase for this home's keys: ")
        if first and first == getpass.getpass("Repeat it: "):
            return first
        raise ConfigError("the passphrases were empty or did not match")
    raise ConfigError(
        "no passphrase for the new keys",
        hint="Set AIRGAP_PASSPHRASE, run on a terminal to be asked, or pass --no-passphrase.",
    )


def init_cmd(
    ctx: typer.Context,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="Which side of the gap this home serves: inside or outside.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Site name shown to the other side. Default: <host>-<role>."),
    ] = None,
    no_passphrase: Annotated[
        bool,
        typer.Option(
            "--no-passphrase",
            help="Store the private keys unencrypted (mode 0600). For test and demo homes.",
        ),
    ] = False,
) -> None:
    """Create a home: config.toml, Ed25519 signing key, age identity, state.db, audit log.

    Example: `AIRGAP_PASSPHRASE=… airgap --home ~/.airgap-inside init --role inside --name lab`
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.home import init_home

        passphrase = _new_passphrase(app, no_passphrase)
        home, fingerprint = init_home(app.home, role=role, name=name, passphrase=passphrase)
    app.emit(
        {"home": str(app.home), "role": role, "name": home.name, "fingerprint": fingerprint},
        lambda: out.print(
            f"Created {role} home [bold]{escape(home.name)}[/] at {escape(str(app.home))}\n"
            f"fingerprint {fingerprint}\n"
            "Next: `airgap key export -o site.card`, carry the card across, and on the other "
            "side `airgap trust add site.card`."
        ),
    )


@key_app.command("export")
def key_export_cmd(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the card here instead of stdout."),
    ] = None,
) -> None:
    """Write this site's card (public keys only) and print its fingerprint.

    Compare the fingerprint with the other side by phone or in person before they trust it.
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.site import card_text, export_card

        home = app.open_home()
        card = home.card().to_json()
        text = card_text(home)
        if output is not None:
            export_card(home, output)
    if output is None and not app.json:
        print(text, end="")
        app.note(f"fingerprint {card['fingerprint']}")
        return
    app.emit(
        {"card": card, "file": str(output) if output else None},
        lambda: out.print(f"Wrote {escape(str(output))}\nfingerprint {card['fingerprint']}"),
    )


@trust_app.command("add")
def trust_add_cmd(
    ctx: typer.Context,
    card_path: Annotated[Path, typer.Argument(help="A site card from `airgap key export`.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; you compared the fingerprint.")
    ] = False,
) -> None:
    """Trust a peer site after showing its fingerprint for out-of-band comparison."""
    app = state(ctx)
    with mapped_errors(app):
        from airgap.site import trust_site
        from airgap.trust import SiteCard

        home = app.open_home()
        card = SiteCard.load(card_path)
        if not yes:
            if app.json or not _interactive():
                from airgap.errors import ConfigError

                raise ConfigError(
                    "refusing to trust a key without confirmation",
                    hint="Compare the fingerprint out of band, then re-run with --yes.",
                )
            out.print(f"Site {escape(card.name)} ({card.role})\nfingerprint {card.fingerprint}")
            typer.confirm(
                "Does this fingerprint match what the other site read to you?", abort=True
            )
        added = trust_site(home, card)
    app.emit(
        {"added": added, "name": card.name, "role": card.role, "fingerprint": card.fingerprint},
        lambda: out.print(
            f"{'Trusted' if added else 'Already trusted'} {escape(card.name)} ({card.role}) "
            f"{card.fingerprint}"
        ),
    )


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()


@trust_app.command("list")
def trust_list_cmd(ctx: typer.Context) -> None:
    """List trusted sites (this home's own key first)."""
    app = state(ctx)
    with mapped_errors(app):
        home = app.open_home()
        keys = list(home.trust_store())
    rows = [
        {"name": k.name, "role": k.role, "fingerprint": k.fingerprint, "self": k.own} for k in keys
    ]

    def human() -> None:
        table = Table("name", "role", "fingerprint", "")
        for row in rows:
            table.add_row(
                escape(row["name"]),
                row["role"],
                row["fingerprint"],
                "this home" if row["self"] else "",
            )
        out.print(table)

    app.emit({"sites": rows}, human)


@trust_app.command("remove")
def trust_remove_cmd(
    ctx: typer.Context,
    fingerprint: Annotated[str, typer.Argument(help="Fingerprint, or a unique prefix of it.")],
) -> None:
    """Stop trusting a site; its signatures are refused from now on."""
    app = state(ctx)
    with mapped_errors(app):
        from airgap.site import untrust_site

        removed = untrust_site(app.open_home(), fingerprint)
    app.emit(
        {"removed": removed.fingerprint, "name": removed.name},
        lambda: out.print(f"Removed {escape(removed.name)} {removed.fingerprint}"),
    )


@config_app.command("get")
def config_get_cmd(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. cisco.api_base.")],
) -> None:
    """Print a setting and where it comes from (default, config.toml or environment)."""
    app = state(ctx)
    with mapped_errors(app):
        home = app.open_home()
        value = home.config.get(key)
        source = home.config.sources.get(key, "unset")
    app.emit(
        {"key": key, "value": value, "source": source},
        lambda: print("" if value is None else value),
    )


@config_app.command("set")
def config_set_cmd(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. bigiq.url.")],
    value: Annotated[str, typer.Argument(help="The new value.")],
) -> None:
    """Change a setting in config.toml. Secrets are refused: set them in the environment.

    Example: `airgap config set bigiq.url https://bigiq.example.net`
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.config import env_name
        from airgap.site import set_setting

        stored = set_setting(app.open_home(), key, value)
        shadowed = env_name(key) in app.env
    app.emit(
        {"key": key, "value": stored},
        lambda: out.print(
            f"{key} = {escape(str(stored))}"
            + (f"\n(note: {env_name(key)} in the environment overrides it)" if shadowed else "")
        ),
    )
