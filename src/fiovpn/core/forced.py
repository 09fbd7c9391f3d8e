"""The admins' forced command: which ``fiovpn server …`` commands an admin
without a root shell may run, with which arguments (SPEC section 11).

``SSH_ORIGINAL_COMMAND`` (what the admin's ``ssh`` asked for) is split with
``shlex`` (never given to a shell), its leading ``fiovpn`` word (any path,
``python -m fiovpn`` or a ``sudo -n --`` in front) dropped, and the rest
checked against a whitelist: the registry, access, journal and status
commands, each with its own options, every value of a plain character set.
Anything else is refused with one line saying what is allowed.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from fiovpn.errors import BadInput

# command -> options that take a value; "--json" is a flag everywhere
ALLOWED: dict[tuple[str, ...], frozenset[str]] = {
    ("clients", "add"): frozenset({"--public-key", "--ip", "--name", "--groups", "--expires"}),
    ("clients", "remove"): frozenset({"--public-key", "--name"}),
    ("clients", "renew"): frozenset({"--public-key", "--name", "--expires"}),
    ("clients", "list"): frozenset(),
    ("clients", "check"): frozenset({"--public-key"}),
    ("access", "grant"): frozenset({"--public-key", "--name", "--group", "--device", "--for"}),
    ("access", "revoke"): frozenset({"--public-key", "--name", "--group", "--device"}),
    ("access", "list"): frozenset(),
    ("journal",): frozenset({"--since", "--action"}),
    ("status",): frozenset(),
}
FLAGS = frozenset({"--json"})
# keys (base64: + / =), IPs, names, group lists, durations, UTC timestamps
_VALUE = re.compile(r"^[A-Za-z0-9._:,+/=@-]{1,200}$")


def allowed_commands() -> str:
    return ", ".join("server " + " ".join(c) for c in ALLOWED)


def _refuse(message: str) -> BadInput:
    return BadInput(f"{message}; admins may run only: {allowed_commands()}",
                    code="not_allowed")


def _strip_program(argv: list[str]) -> list[str]:
    if argv[:3] == ["sudo", "-n", "--"]:
        argv = argv[3:]
    elif argv[:2] == ["sudo", "-n"]:
        argv = argv[2:]
    if argv and PurePosixPath(argv[0]).name == "fiovpn":
        return argv[1:]
    if len(argv) >= 3 and PurePosixPath(argv[0]).name.startswith("python") \
            and argv[1:3] == ["-m", "fiovpn"]:
        return argv[3:]
    raise _refuse(f"not a fiovpn command: {argv[0] if argv else '(nothing)'!r}")


def parse_forced_command(original: str | None) -> list[str]:
    """``SSH_ORIGINAL_COMMAND`` -> the checked ``fiovpn`` arguments (``server …``).

    Raises ``BadInput`` (code ``not_allowed``) for anything not on the list:
    no command (an interactive login), another program, a shell
    metacharacter, an unknown option or subcommand.
    """
    if not original or not original.strip():
        raise _refuse("this key has no shell")
    if "\n" in original or "\r" in original or "\0" in original:
        raise _refuse("a command holds a line break")
    try:
        argv = shlex.split(original, posix=True)
    except ValueError as exc:
        raise _refuse(f"cannot read the command ({exc})") from None
    args = _strip_program(argv)
    if not args or args[0] != "server":
        raise _refuse("only `fiovpn server …` commands")
    rest = args[1:]
    command = next((c for c in sorted(ALLOWED, key=len, reverse=True)
                    if tuple(rest[:len(c)]) == c), None)
    if command is None:
        raise _refuse(f"`fiovpn server {' '.join(rest[:2])}` is not allowed")
    takes = ALLOWED[command]
    out = ["server", *command]
    words = rest[len(command):]
    i = 0
    while i < len(words):
        word = words[i]
        opt, eq, inline = word.partition("=")
        if opt in FLAGS and not eq:
            out.append(opt)
            i += 1
            continue
        if opt not in takes:
            raise _refuse(f"option {opt!r} is not allowed for `server {' '.join(command)}`")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(words):
                raise _refuse(f"option {opt} needs a value")
            value = words[i + 1]
            i += 2
        if not _VALUE.fullmatch(value) or value.startswith("-"):
            raise _refuse(f"the value of {opt} holds a character admins may not send "
                          f"({value[:40]!r})")
        out += [opt, value]
    return out


def forced_command_line(program: list[str], name: str, config: str | None) -> str:
    """The ``command="…"`` value of an admin's ``authorized_keys`` line."""
    words = [*program, "server", *(["--config", config] if config else []),
             "admin-command", "--name", name]
    line = shlex.join(words)
    if '"' in line or "\\" in line:
        raise BadInput("the fiovpn path or the settings path holds a quote or backslash: "
                       "it cannot go into authorized_keys", code="bad_path")
    return line
