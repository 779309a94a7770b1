"""The drive commands on the control socket: `drive.candidates`, `drive.adopt`, `drive.format`.

The CLI's `letterbox drive candidates|adopt|format` sends these to the running
daemon, which owns the mount and the open Drive (control.py). A refusal
(DriveActionError) goes back as the command's error, a sentence for a person.
"""

from __future__ import annotations

import contextlib
from typing import Any

from letterbox.control import ControlError, ControlServer
from letterbox.usb.model import Candidate, DriveActionError, DriveControl


def _param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError(f"missing parameter {name!r}")
    return value


def register(server: ControlServer, drives: DriveControl) -> None:
    async def candidates(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "state": drives.state().to_json(),
            "candidates": [c.to_json() for c in drives.candidates()],
        }

    async def adopt(params: dict[str, Any]) -> dict[str, Any]:
        try:
            return (await drives.adopt(_param(params, "candidate"))).to_json()
        except DriveActionError as exc:
            raise ControlError(str(exc)) from None

    async def format_(params: dict[str, Any]) -> dict[str, Any]:
        confirm = params.get("confirm")
        try:
            state = await drives.format(
                _param(params, "candidate"), confirm if isinstance(confirm, str) else ""
            )
        except DriveActionError as exc:
            raise ControlError(str(exc)) from None
        return state.to_json()

    server.register("drive.candidates", candidates)
    server.register("drive.adopt", adopt)
    server.register("drive.format", format_)


# -- the CLI's side (cli.py: `letterbox drive candidates|adopt|format`) -----------------


def scan(allow_loop: bool) -> list[Candidate]:
    """The candidates as this process sees them, for when no daemon runs (read-only:
    the same classification as the manager, with blkid and debugfs probes)."""
    from letterbox.usb import privileged
    from letterbox.usb.classify import classify
    from letterbox.usb.monitor import present

    found = []
    for event in present():
        props = dict(event.props)
        if classify(props, size=event.size, allow_loop=allow_loop) is None:
            continue
        with contextlib.suppress(privileged.PrivilegedError):
            props.update(privileged.probe(event.devnode))
        drive_id = ""
        if props.get("ID_FS_TYPE") == "ext4" and not privileged.mounts_of(event.devnode):
            drive_id = privileged.read_drive_id(event.devnode)
        c = classify(props, size=event.size, allow_loop=allow_loop, drive_id=drive_id)
        if c is not None:
            found.append(c)
    return sorted(found, key=lambda c: c.devnode)


def render_candidates(state: dict[str, Any] | None, candidates: list[dict[str, Any]]) -> str:
    lines = []
    if state is not None:
        line = f"Drive: {state['state']}"
        if state.get("device"):
            line += f" on {state['device']}"
        if state.get("drive_id"):
            line += f" (drive {state['drive_id']})"
        lines.append(line)
        if state.get("reason"):
            lines.append(f"  {state['reason']}")
        lines.append("")
    if not candidates:
        lines.append("No USB drives found. Plug one in and try again.")
        return "\n".join(lines)
    what = {
        "letterbox": "Letterbox drive: adopt it",
        "empty": "empty: format it",
        "foreign": "has other data: formatting erases it",
    }
    for c in candidates:
        cand = Candidate(**c)
        mark = " [in use]" if cand.in_use else ""
        lines.append(f"{cand.id}{mark}")
        lines.append(f"    {cand.describe()}")
        lines.append(
            f"    {what[cand.kind]}" + (f" (drive {cand.drive_id})" if cand.drive_id else "")
        )
    return "\n".join(lines)
