"""``rayweb token`` and ``rayweb secret``: proxy-auth tokens and named secrets, kept in the
cluster's store (``driver/secrets.py`` reaches it, locally or through a cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..driver.output import wide_console
from ..driver.secrets import StoreClient
from .common import AddressOption, user_errors, when

token_cli = typer.Typer(help="Proxy-auth tokens (for requires_proxy_auth=True endpoints).")
secret_cli = typer.Typer(help="Named secrets, kept on the cluster (rayweb.Secret.from_name).")


@token_cli.command("create")
def token_create(
    name: Annotated[str | None, typer.Option(help="A name to find the token by.")] = None,
    address: AddressOption = None,
) -> None:
    """Create a token. Its secret is shown once and stored only as a salted hash."""
    err = Console(stderr=True, soft_wrap=True)
    with user_errors(err, "creating the token"):
        key, secret = StoreClient(address).create_token(name)
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"Token key:    {key}")
    out.print(f"Token secret: {secret}")
    err.print(
        "The secret is not shown again. Send both as Modal-Key/Modal-Secret headers, or as "
        f"'Authorization: Bearer {key}.<secret>'."
    )


@token_cli.command("list")
def token_list(address: AddressOption = None) -> None:
    """List tokens (keys and names; secrets are never stored)."""
    from rich.table import Table

    with user_errors(Console(stderr=True), "listing tokens"):
        tokens = StoreClient(address).list_tokens()
    table = Table("key", "name", "created", "revoked")
    for t in tokens:
        table.add_row(t["key"], t["name"], when(t["created"]), when(t["revoked"]))
    wide_console().print(table)


@token_cli.command("revoke")
def token_revoke(
    key_or_name: Annotated[str, typer.Argument(help="The token's key (wk-...) or name.")],
    address: AddressOption = None,
) -> None:
    """Revoke a token; every replica refuses it within seconds."""
    with user_errors(Console(stderr=True), "revoking the token"):
        keys = StoreClient(address).revoke_token(key_or_name)
    Console(stderr=True).print(f"Revoked {', '.join(keys)}.")


@secret_cli.command("create")
def secret_create(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE pairs.")] = None,
    from_dotenv: Annotated[
        Path | None, typer.Option(help="Read KEY=VALUE lines from this .env file.")
    ] = None,
    from_json: Annotated[Path | None, typer.Option(help="Read a JSON object of strings.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing secret.")] = False,
    address: AddressOption = None,
) -> None:
    """Create a named secret (values are never printed)."""
    err = Console(stderr=True, soft_wrap=True)
    with user_errors(err, "creating the secret"):
        values = _secret_values(pairs or [], from_dotenv, from_json)
        StoreClient(address).put_secret(name, values, force=force)
    err.print(f"Created secret {name!r} with keys: {', '.join(sorted(values))}.", highlight=False)


def _secret_values(pairs: list[str], dotenv: Path | None, json_file: Path | None) -> dict[str, str]:
    import json

    from ..exception import InvalidError
    from ..secret import _parse_dotenv

    values: dict[str, str] = {}
    if dotenv is not None:
        values.update(_parse_dotenv(dotenv.read_text()))
    if json_file is not None:
        loaded = json.loads(json_file.read_text())
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise InvalidError(f"{json_file} must hold a JSON object of string values.")
        values.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidError(f"Expected KEY=VALUE, got {key!r}. Suggestion: MY_KEY=my-value")
        values[key] = value
    return values


@secret_cli.command("list")
def secret_list(address: AddressOption = None) -> None:
    """List secrets: names and keys, never values."""
    from rich.table import Table

    with user_errors(Console(stderr=True), "listing secrets"):
        secrets = StoreClient(address).list_secrets()
    table = Table("name", "keys", "created")
    for s in secrets:
        table.add_row(s["name"], ", ".join(s["keys"]), when(s["created"]))
    wide_console().print(table)


@secret_cli.command("delete")
def secret_delete(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    allow_missing: Annotated[bool, typer.Option(help="Succeed if it does not exist.")] = False,
    address: AddressOption = None,
) -> None:
    """Delete a named secret."""
    with user_errors(Console(stderr=True), "deleting the secret"):
        deleted = StoreClient(address).delete_secret(name, allow_missing=allow_missing)
    Console(stderr=True).print(f"Deleted secret {name!r}." if deleted else f"No secret {name!r}.")
