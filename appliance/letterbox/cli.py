"""The `letterbox` command: one entry point for the appliance, its administration and clients.

Global options pick the state (`--data`) and the settings (`--config`); every
subcommand has `--help`. Errors a person can act on are printed as one line and
exit 1 (2 for usage errors); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from letterbox import __version__, config, control, settingsfile, state
from letterbox.boxkeys import BoxKeys
from letterbox.crypto import CryptoFailure, PersonalKey
from letterbox.drive import Drive, DriveError, DriveInUse, MailboxInfo
from letterbox.drive.layout import Layout
from letterbox.fsutil import write_atomic


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _size(value: str) -> int:
    try:
        return config.Size.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _human(n: int) -> str:
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


class Context:
    """What every subcommand needs: settings, the data directory, and the drive."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.data_dir: Path = args.data
        try:
            # What the setup page saved (DATA/box/settings.toml) wins over the file.
            self.config = config.load(args.config, overrides=settingsfile.read(args.data))
        except config.ConfigError as exc:
            raise UserError(str(exc)) from None

    def keys(self) -> BoxKeys:
        return BoxKeys.load_or_create(self.data_dir)

    def usb_drive_mounted(self) -> None:
        path = self.config.drive_path(self.data_dir)
        if not os.path.ismount(path):
            raise UserError(
                f"the USB drive is not mounted at {path} for this command: the running "
                "box keeps it to itself. Use the setup page, or the commands that go "
                "through the box (status, mailbox add, drive candidates|adopt|format)"
            )

    def open_drive(self, *, create: bool, offer_create: bool = False) -> Drive:
        """The drive, opened by this process: only when no box runs on --data (the
        commands ask a running box first, `ask_box`), and then under the drive's lock.

        A missing drive is made only with `create` (`mailbox add`, or `--create`):
        a wrong --data or a config without `drive.path` must not quietly become a new,
        empty drive (`offer_create`: the command has --create, say so). For a USB
        drive only when it is mounted here: the running box mounts it inside its own
        mount namespace (see the unit), so at the console the mount point is an empty
        directory, and opening it would make a new, empty drive on the SD card."""
        if self.config.drive.mode == "usb":
            self.usb_drive_mounted()
            create = False  # a USB drive is made by `drive format`, never implicitly
        path = self.config.drive_path(self.data_dir)
        if not create and not Layout(path).identity.exists():
            raise UserError(self.no_drive(path, offer_create=offer_create))
        try:
            return state.open_drive(self.config, self.data_dir, create=create)
        except DriveInUse as exc:
            raise UserError(self.in_use(exc)) from None
        except DriveError as exc:
            raise UserError(str(exc)) from None

    def no_drive(self, path: Path, *, offer_create: bool) -> str:
        where = "drive.path" if self.config.drive.path else "under --data: no drive.path is set"
        made = "`letterbox mailbox add` makes one" + (
            ", or --create an empty one" if offer_create else ""
        )
        return f"there is no Letterbox drive at {path} ({where}); check --data and --config. {made}"

    def in_use(self, exc: DriveError) -> str:
        return (
            f"{exc}, and no box answers on {control.socket_path(self.data_dir)}: if a "
            "box is starting, try again in a moment; if one runs with another --data, "
            "give that"
        )

    def ask_box(self, command: str, params: dict[str, object] | None = None) -> Any:
        """`command` in the box running on --data, or NO_BOX when none runs (then, and
        only then, may this process open the drive itself)."""
        try:
            return control.call(self.data_dir, command, params, timeout=600)
        except control.NotRunning:
            return NO_BOX
        except (control.ControlError, TimeoutError) as exc:
            raise UserError(str(exc) or "the box did not answer in time") from None


NO_BOX: Any = object()  # Context.ask_box: no box runs on --data


def _read_password(args: argparse.Namespace, prompt: str = "Password") -> str:
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} (again): ") != password:
            raise UserError("the passwords do not match")
    if not password:
        raise UserError("the password must not be empty")
    return password


def _find(drive: Drive, address: str) -> MailboxInfo:
    mailbox = drive.find_mailbox(address)
    if mailbox is None:
        raise UserError(f"no mailbox for {address}")
    return mailbox


# -- mailbox -----------------------------------------------------------------------------


def cmd_mailbox_add(ctx: Context, args: argparse.Namespace) -> int:
    quota = args.quota if args.quota is not None else ctx.config.mailbox.default_quota
    if args.end_to_end:
        return _add_end_to_end(ctx, args, quota)
    password = _read_password(args)
    params = {"address": args.address, "quota": quota, "password": password}
    made = _add_through_daemon(ctx, params)
    if made is None:  # no daemon: the drive is ours to open
        with ctx.open_drive(create=True) as drive:
            try:
                mailbox, code = drive.create_mailbox(args.address, quota=quota, password=password)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        made = {"address": mailbox.address, "domain": mailbox.domain, "quota": mailbox.quota}
        made["recovery_code"] = code
    code = made["recovery_code"]
    print(f"Created mailbox {made['address']} (quota {_human(made['quota'])}).")
    print(f"Mail for {made['domain']} is now accepted by this box.")
    print()
    print("Recovery code (shown once; write it down and keep it safe):")
    print()
    print(f"    {code}")
    print()
    print("With it you can set a new password if this one is forgotten. Without both,")
    print("nobody - not even this box - can read the mail in this mailbox.")
    return 0


def _add_through_daemon(ctx: Context, params: dict[str, object]) -> dict | None:
    """`mailbox.add` in the running box, or None when none runs.

    The daemon's Drive keeps its recipient map in memory: a mailbox written by this
    process would be refused at RCPT until the daemon restarted.
    """
    try:
        return control.call(ctx.data_dir, "mailbox.add", params, timeout=120)
    except control.NotRunning:
        return None
    except (control.ControlError, TimeoutError) as exc:
        raise UserError(str(exc) or "the box did not answer in time") from None


def _add_end_to_end(ctx: Context, args: argparse.Namespace, quota: int) -> int:
    """Make the person's key here, give the box only its public half, write the key file."""
    if args.key_file is None:
        raise UserError("--end-to-end needs --key-file FILE (where to write the person's key)")
    if args.key_file.exists():
        raise UserError(f"{args.key_file} exists already; refusing to overwrite a key file")
    passphrase = _read_password(args, "Passphrase for the key file")
    person = PersonalKey.generate()
    params = {"address": args.address, "quota": quota, "identity_key": person.identity_key.hex()}
    made = _add_through_daemon(ctx, params)
    if made is not None:
        address, size = made["address"], made["quota"]
        verify_key = bytes.fromhex(made["box_verify_key"])
    else:
        with ctx.open_drive(create=True) as drive:
            try:
                mailbox, _ = drive.create_mailbox(
                    args.address, quota=quota, identity_key=person.identity_key
                )
            except ValueError as exc:
                raise UserError(str(exc)) from None
            address, size, verify_key = mailbox.address, mailbox.quota, bytes(drive.keys.verify_key)
    data = person.to_file(passphrase, address, verify_key, state.argon2_limits(ctx.config))
    write_atomic(args.key_file, data, mode=0o600)
    print(f"Created end-to-end mailbox {address} (quota {_human(size)}).")
    print(f"Its key is in {args.key_file}, protected by the passphrase; the box keeps only")
    print("the public key and cannot read this mail. Copy the file to the person's computer,")
    print("delete it here, and read the mail with `letterbox fetch` or `letterbox bridge`.")
    return 0


def _boxes(rows: list[dict[str, Any]] | list[MailboxInfo]) -> list[dict[str, Any]]:
    return [
        r
        if isinstance(r, dict)
        else {
            "address": r.address,
            "quota": r.quota,
            "used": r.used,
            "messages": r.messages,
            "end_to_end": r.end_to_end,
        }
        for r in rows
    ]


def cmd_mailbox_list(ctx: Context, args: argparse.Namespace) -> int:
    got = ctx.ask_box("mailbox.list")
    if got is NO_BOX:
        with ctx.open_drive(create=args.create, offer_create=True) as drive:
            got = drive.mailboxes()
    boxes = _boxes(got)
    if not boxes:
        print("No mailboxes yet. Add one with: letterbox mailbox add ADDRESS")
        return 0
    width = max(len("ADDRESS"), *(len(m["address"]) for m in boxes))
    print(f"{'ADDRESS':<{width}}  {'QUOTA':>8}  {'USED':>8}  {'MESSAGES':>8}  MODE")
    for m in boxes:
        mode = "end-to-end" if m["end_to_end"] else "unlocked at login"
        print(
            f"{m['address']:<{width}}  {_human(m['quota']):>8}  {_human(m['used']):>8}  "
            f"{m['messages']:>8}  {mode}"
        )
    return 0


def _current_credential(args: argparse.Namespace) -> dict[str, object]:
    if args.recovery_code_stdin:
        return {"recovery_code": sys.stdin.readline().strip()}
    return {"password": _read_password(args, "Current password")}


def cmd_mailbox_passwd(ctx: Context, args: argparse.Namespace) -> int:
    """Set a new password, proving ownership with the old one or the recovery code."""
    if args.recovery_code_stdin:
        cred: dict[str, object] = {"recovery_code": sys.stdin.readline().strip()}
    else:
        cred = {"password": _read_password(args, "Current password")}
    # Through the box, first only the proof (so a wrong one is said before a new
    # password is asked for), then the change.
    params = {"address": args.address, **cred}
    if ctx.ask_box("mailbox.passwd", params) is not NO_BOX:
        new = _read_password(args, "New password")
        done = ctx.ask_box("mailbox.passwd", {**params, "new_password": new})
        print(f"Password of {done['address']} changed; its mail was not touched.")
        return 0
    with ctx.open_drive(create=False) as drive:
        mailbox = _find(drive, args.address)
        try:
            if "recovery_code" in cred:
                secret = drive.recover_key(mailbox.id, str(cred["recovery_code"]))
            else:
                secret = drive.unlock(mailbox.id, str(cred["password"]))
        except CryptoFailure as exc:
            raise UserError(str(exc)) from None
        new = _read_password(args, "New password")
        drive.change_password(mailbox.id, secret, new)
    print(f"Password of {mailbox.address} changed; its mail was not touched.")
    return 0


def cmd_mailbox_recovery_reset(ctx: Context, args: argparse.Namespace) -> int:
    password = _read_password(args, "Password")
    done = ctx.ask_box("mailbox.recovery_reset", {"address": args.address, "password": password})
    if done is not NO_BOX:
        address, code = done["address"], done["recovery_code"]
    else:
        with ctx.open_drive(create=False) as drive:
            mailbox = _find(drive, args.address)
            try:
                secret = drive.unlock(mailbox.id, password)
            except CryptoFailure as exc:
                raise UserError(str(exc)) from None
            address, code = mailbox.address, drive.reset_recovery_code(mailbox.id, secret)
    print(f"New recovery code for {address} (the old one no longer works):")
    print()
    print(f"    {code}")
    return 0


# -- drive -------------------------------------------------------------------------------


def cmd_drive_check(ctx: Context, args: argparse.Namespace) -> int:
    from letterbox.drive.check import check_unopened

    got = ctx.ask_box("drive.check")
    if got is not NO_BOX:
        print(got["report"])
        return 0 if got["ok"] else 1
    if ctx.config.drive.mode == "usb":
        ctx.usb_drive_mounted()
    try:
        report = check_unopened(ctx.config.drive_path(ctx.data_dir), ctx.keys())
    except DriveInUse as exc:
        raise UserError(ctx.in_use(exc)) from None
    print(report.render())
    return 0 if report.ok else 1


def cmd_drive_stats(ctx: Context, args: argparse.Namespace) -> int:
    from letterbox.commands import drive_stats_of

    got = ctx.ask_box("drive.stats")
    if got is NO_BOX:
        with ctx.open_drive(create=args.create, offer_create=True) as drive:
            got = drive_stats_of(drive)
    stats, boxes = got["stats"], got["mailboxes"]
    print(f"Drive {stats['drive_id']} (format {stats['format_version']})")
    print(f"  location:    {ctx.config.drive_path(ctx.data_dir)}")
    print(f"  mailboxes:   {stats['mailboxes']}")
    print(f"  messages:    {stats['deliveries']} deliveries in {stats['blobs']} blobs")
    print(f"  stored:      {_human(int(stats['stored_bytes']))}")
    print(
        f"  free:        {_human(int(stats['free_bytes']))} "
        f"(reserve {_human(int(stats['reserve_bytes']))})"
    )
    print(f"  evictions:   {stats['evictions']}")
    for m in boxes:
        pct = 100 * m["used"] / m["quota"] if m["quota"] else 0
        print(
            f"  {m['address']}: {_human(m['used'])} of {_human(m['quota'])} ({pct:.0f}%), "
            f"{m['messages']} messages"
        )
    return 0


# -- status ------------------------------------------------------------------------------

STATUS_NOT_RUNNING = 3  # like `systemctl status` for a unit that is not active


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    """What the running box is doing, asked over its control socket."""
    from letterbox.status import format_status

    try:
        snap = control.call(ctx.data_dir, "status", timeout=15)
    except control.NotRunning as exc:
        if args.json:
            print(json.dumps({"running": False, "message": str(exc)}))
        else:
            print(exc)
        return STATUS_NOT_RUNNING
    except (control.ControlError, TimeoutError) as exc:
        raise UserError(str(exc) or "the box did not answer in time") from None
    if args.json:
        print(json.dumps({"running": True, **snap}, indent=2, sort_keys=True))
    else:
        print(format_status(snap))
    return 0


def _drive_call(ctx: Context, command: str, params: dict[str, object] | None = None) -> dict:
    try:
        return control.call(ctx.data_dir, command, params, timeout=600)  # mkfs takes a while
    except control.NotRunning as exc:
        raise UserError(f"{exc}; start it first (the box owns the drive's mount)") from None
    except (control.ControlError, TimeoutError) as exc:
        raise UserError(str(exc) or "the box did not answer in time") from None


def cmd_drive_candidates(ctx: Context, args: argparse.Namespace) -> int:
    """USB drives the box could use, from the running box, else from a scan here."""
    from letterbox.usb import commands as usb

    try:
        got = control.call(ctx.data_dir, "drive.candidates", timeout=15)
        state_, found = got["state"], got["candidates"]
    except control.NotRunning:
        state_, found = None, [c.to_json() for c in usb.scan(ctx.config.drive.allow_loop)]
    except (control.ControlError, TimeoutError) as exc:
        raise UserError(str(exc) or "the box did not answer in time") from None
    if args.json:
        print(json.dumps({"state": state_, "candidates": found}, indent=2))
    else:
        print(usb.render_candidates(state_, found))
    return 0


def cmd_drive_adopt(ctx: Context, args: argparse.Namespace) -> int:
    st = _drive_call(ctx, "drive.adopt", {"candidate": args.candidate})
    print(f"Drive {st['drive_id']} on {st['device']} is online at {st['path']}.")
    return 0


def cmd_drive_format(ctx: Context, args: argparse.Namespace) -> int:
    confirm = args.confirm
    if confirm is None:
        found = _drive_call(ctx, "drive.candidates")["candidates"]
        match = [c for c in found if args.candidate in (c["id"], c["devnode"])]
        if not match:
            raise UserError(f"no drive {args.candidate!r} is plugged in")
        print(f"This erases everything on {match[0]['devnode']} ({match[0]['model']}).")
        confirm = input(f"Type {match[0]['devnode']} to erase it: ").strip()
    st = _drive_call(ctx, "drive.format", {"candidate": args.candidate, "confirm": confirm})
    print(f"Formatted {st['device']}: drive {st['drive_id']} is online at {st['path']}.")
    return 0


# -- run ---------------------------------------------------------------------------------


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from letterbox.app import run_appliance

    return run_appliance(ctx.config, ctx.data_dir, dev=args.dev)


# -- fetch and bridge (on the person's computer; logic in letterbox.e2e) ---------------------


def cmd_fetch(ctx: Context, args: argparse.Namespace) -> int:
    from letterbox.e2e import fetch

    return fetch.run(args.key, args.server, args.to, passphrase_stdin=args.passphrase_stdin)


def cmd_bridge(ctx: Context, args: argparse.Namespace) -> int:
    from letterbox.e2e import bridge

    return bridge.run(args.key, args.server, port=args.port)


# -- parser ------------------------------------------------------------------------------


def _create_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--create",
        action="store_true",
        help="make an empty drive if there is none (without it, a missing drive is an error)",
    )


def _key_and_server(p: argparse.ArgumentParser) -> None:
    """The arguments every end-to-end client command takes."""
    p.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="KEYFILE",
        help="the key file `mailbox add --end-to-end` wrote",
    )
    p.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="the box's web address, e.g. http://letterbox.local",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="letterbox",
        description="Letterbox: a home mail box. Receives the household's mail, keeps it "
        "encrypted on a USB drive, serves it to ordinary mail clients.",
    )
    parser.add_argument("--version", action="version", version=f"letterbox {__version__}")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(".letterbox"),
        metavar="DIR",
        help="directory holding all state: box keys, and the drive unless drive.path is set "
        "(default: ./.letterbox)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML settings file; every setting has a built-in default",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        parent: argparse._SubParsersAction,
        name: str,
        fn: Callable,
        help: str,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=description or help)
        p.set_defaults(func=fn)
        return p

    run = add(sub, "run", cmd_run, "run the appliance (SMTP and the other listeners)")
    run.add_argument(
        "--dev",
        action="store_true",
        help="unprivileged ports (SMTP 2525, POP3 1110 and 1995, web 8080), "
        "plaintext POP3 login on loopback, and the directory drive under --data",
    )

    p = add(
        sub,
        "status",
        cmd_status,
        "show what the running box is doing (exit 3 if none runs)",
        "Ask the running box on --data for its listeners, drive, mailboxes, usage, LAN "
        "name and version. Exits 3 when no box is running there.",
    )
    p.add_argument("--json", action="store_true", help="the snapshot as JSON")

    mailbox = sub.add_parser(
        "mailbox", help="add and list mailboxes", description="Manage the household's mailboxes."
    )
    msub = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    p = add(
        msub,
        "add",
        cmd_mailbox_add,
        "create a mailbox and its keyring",
        "Create a mailbox, make its domain local, and print its recovery code once.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--quota", type=_size, default=None, help="e.g. 2G, 500M (default: config)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (or key-file passphrase) from standard input",
    )
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="the box keeps only the public key; the person reads with "
        "`letterbox fetch` or `letterbox bridge` using the key file",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="with --end-to-end: where to write the person's key file",
    )
    p = add(msub, "list", cmd_mailbox_list, "list mailboxes with quota, usage and message count")
    _create_flag(p)
    p = add(
        msub,
        "passwd",
        cmd_mailbox_passwd,
        "set a new password (mail is not touched)",
        "Set a new password, proving ownership with the current password or, with "
        "--recovery-code-stdin, the recovery code.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read passwords from standard input, one per line",
    )
    p.add_argument(
        "--recovery-code-stdin",
        action="store_true",
        help="read the recovery code from the first line of standard input",
    )
    p = add(
        msub,
        "recovery-reset",
        cmd_mailbox_recovery_reset,
        "replace the recovery code (needs the password)",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )

    drive = sub.add_parser(
        "drive",
        help="check and describe the drive",
        description="Inspect the drive that holds the mail.",
    )
    dsub = drive.add_subparsers(dest="drive_command", required=True, metavar="ACTION")
    add(dsub, "check", cmd_drive_check, "verify every blob and index row; exit 1 on damage")
    p = add(dsub, "stats", cmd_drive_stats, "show usage, counts and free space")
    _create_flag(p)
    p = add(dsub, "candidates", cmd_drive_candidates, "list USB drives the box could use")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add(dsub, "adopt", cmd_drive_adopt, "use a Letterbox drive that is plugged in")
    p.add_argument("candidate", metavar="CANDIDATE", help="its id or device, from `candidates`")
    p = add(
        dsub,
        "format",
        cmd_drive_format,
        "erase a USB drive and make it the box's drive",
        "Erase a USB drive (ext4) and make it the box's drive. Asks for the device name "
        "as confirmation unless --confirm gives it.",
    )
    p.add_argument("candidate", metavar="CANDIDATE", help="its id or device, from `candidates`")
    p.add_argument("--confirm", metavar="DEVICE", help="the device name, e.g. /dev/sda1")

    p = add(
        sub,
        "fetch",
        cmd_fetch,
        "move an end-to-end mailbox's mail into a local Maildir",
        "Download, verify and decrypt an end-to-end mailbox's mail into a Maildir on this "
        "computer; each message is deleted on the box only once its copy here is on disk.",
    )
    _key_and_server(p)
    p.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="MAILDIR",
        help="the Maildir to deliver into (created if missing)",
    )
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="read the key file's passphrase from standard input",
    )

    p = add(
        sub,
        "bridge",
        cmd_bridge,
        "serve an end-to-end mailbox as POP3 on 127.0.0.1",
        "Serve an end-to-end mailbox to a desktop mail client as POP3 on 127.0.0.1, "
        "verifying and decrypting on this computer. The client logs in with the mailbox "
        "address and the key file's passphrase.",
    )
    _key_and_server(p)
    p.add_argument(
        "--port",
        type=int,
        default=11110,
        help="local POP3 port (default 11110; 0 picks a free one)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ctx = Context(args)
        return int(args.func(ctx, args) or 0)
    except UserError as exc:
        print(f"letterbox: {exc}", file=sys.stderr)
        return 1
    except (DriveError, CryptoFailure) as exc:
        print(f"letterbox: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
