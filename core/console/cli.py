"""`relaybot operator add/list/remove`: the accounts that may sign in to the console."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from core.bots import BotRegistry
from core.console.accounts import AccountError, OperatorAccounts, check_new_password
from core.errors import ConfigError
from core.settings import Settings


def add_operator_command(commands: Any) -> None:
    """Register `relaybot operator` on the CLI's subcommands (an argparse `_SubParsersAction`)."""
    operator = commands.add_parser("operator", help="manage the operators who may sign in to the console")
    actions = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create an operator account (asks for the password twice)")
    add.add_argument("email", metavar="EMAIL", help="the operator's email: their sign-in name")
    add.add_argument(
        "--bots", help="comma-separated bots the operator may serve (default: every bot)", metavar="BOT,BOT"
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin (scripts)"
    )
    actions.add_parser("list", help="print every operator and the bots they serve")
    remove = actions.add_parser("remove", help="delete an operator account (their sign-ins end)")
    remove.add_argument("email", metavar="EMAIL")
    operator.set_defaults(handler=_operator)


async def _operator(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "add":
        bots = _bots(settings, args.bots)
        password = _read_password(args.password_stdin)
    accounts = await OperatorAccounts.open(settings.effective_database_url, rounds=settings.console.password_rounds)
    try:
        if args.action == "add":
            operator = await accounts.add(args.email, password, bots=bots)
            print(f"added operator {operator.email} ({operator.describe_bots()})")
        elif args.action == "list":
            operators = await accounts.list()
            for one in operators:
                print(f"{one.email}\t{one.describe_bots()}\tadded {one.created_at:%Y-%m-%d %H:%M} UTC")
            if not operators:
                print("no operators yet: add one with `relaybot operator add EMAIL`", file=sys.stderr)
        elif not await accounts.remove(args.email):
            print(f"relaybot: no operator {args.email!r}", file=sys.stderr)
            return 1
        else:
            print(f"removed operator {args.email}")
        return 0
    finally:
        await accounts.close()


def _bots(settings: Settings, given: str | None) -> list[str] | None:
    if given is None:
        return None
    names = [name.strip() for name in given.split(",") if name.strip()]
    if not names:
        raise ConfigError("--bots names no bot; leave it out to let the operator serve every bot")
    registry = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
    return [registry.require(name).name for name in names]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            raise AccountError("the two passwords differ; nothing was stored")
    # Checked before the database is opened, so a short password costs nothing to retype.
    check_new_password(password)
    return password
