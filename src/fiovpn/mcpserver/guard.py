"""MCP guardrails (SPEC section 11): ``fiovpn mcp --read-only`` serves only the
tools annotated read-only; ``--allow-devices GLOB`` makes every device-touching
tool (one with a ``device`` parameter) refuse other devices; every
device-touching call, allowed or refused, is a line in the engineer's journal
(``detail.via``: ``mcp``).

``Guard.install(server, journal_path)`` wraps the server's ``tool`` decorator,
so tools added later (by anyone) get the same treatment.
"""

import fnmatch
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from fiovpn.services.journal import record_device_call


@dataclass(frozen=True)
class Guard:
    read_only: bool = False
    allow_devices: str | None = None  # a shell-style glob over device names (or IPs)

    def allows(self, device: str) -> bool:
        return self.allow_devices is None or fnmatch.fnmatchcase(device, self.allow_devices)

    def install(self, server: MCPServer, journal_path: Callable[[], Path]) -> None:
        original = server.tool
        guard = self

        def tool(name: str | None = None, *, annotations: ToolAnnotations | None = None,
                 **kwargs: Any) -> Callable[[Any], Any]:
            register = original(name, annotations=annotations, **kwargs)

            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
                if guard.read_only and not (annotations and annotations.read_only_hint):
                    return fn  # not served at all: the client never sees it
                return register(guard._wrap(fn, journal_path))
            return decorate

        server.tool = tool  # type: ignore[method-assign,assignment]

    def _wrap(self, fn: Callable[..., Any], journal_path: Callable[[], Path]
              ) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        if "device" not in signature.parameters:
            return fn
        name = fn.__name__

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            device = str(signature.bind_partial(*args, **kwargs).arguments.get("device", ""))
            allowed = self.allows(device)
            record_device_call(journal_path(), action=name, device=device, via="mcp",
                               detail={"allowed": allowed})
            if not allowed:
                raise ToolError(f"refused: device {device!r} is not allowed for this MCP "
                                f"server (--allow-devices {self.allow_devices!r}); ask the "
                                "user to run it themselves or to widen --allow-devices")
            return fn(*args, **kwargs)
        return guarded
