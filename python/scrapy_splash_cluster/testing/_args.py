"""A render request's arguments as Splash 3.5 reads, checks and caches them.

Why the mock checks arguments at all: a balancer must tell a 400 (the request
is wrong, resending it anywhere is useless) from a node failure, so the mock
refuses what Splash refuses, with the same ``info``. The order and the checks
follow ``splash/render_options.py`` and ``splash/resources.py``:

* GET query arguments, or for POST the query first and a JSON object on top
  (``application/javascript`` bodies become ``js_source``); other content
  types get 415;
* ``timeout`` within ``0..max_timeout`` (default 30 s or ``max_timeout`` if
  lower), ``wait`` within ``0..timeout``, 0/1 flags, ``engine`` and what
  Splash 3.5's chromium engine does not implement, ``url`` or ``lua_source``
  required;
* ``save_args`` / ``load_args``: the argument cache is per process (an LRU of
  500 values), so a key saved on one node, or before a restart, is a 498
  ExpiredArguments elsewhere.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ._errors import (
    TWISTED_NOT_BYTES,
    BadOption,
    ScriptError,
    bad_option,
    error,
    method_not_allowed,
    raise_bad_argument,
)
from ._http import Request, Response

__all__ = [
    "ARGCACHE_SIZE",
    "DEFAULT_TIMEOUT",
    "ArgumentCache",
    "RenderArgs",
    "flag",
    "parse_args",
    "validate",
]

#: Splash's render ``timeout`` when the request gives none.
DEFAULT_TIMEOUT = 30.0
#: Splash keeps this many saved arguments per process (its LRU's size).
ARGCACHE_SIZE = 500

# What Splash 3.5's chromium engine refuses, each with a 400 BadOption whose
# info is "<argument> is not implemented" (seen against a real node).
_CHROMIUM_UNSUPPORTED = (
    "headers",
    "baseurl",
    "js_source",
    "js_profile",
    "body",
    "resource_timeout",
    "request_body",
    "response_body",
    "html5_media",
    "render_all",
)
_JSON_FLAGS = ("html", "png", "jpeg", "har", "iframes", "script", "console", "history")


def parse_args(request: Request) -> dict[str, Any] | Response:
    """Arguments as Splash reads them: query first, a JSON body on top; or the
    405/415/400 answer of a request whose arguments cannot be read."""
    args: dict[str, Any] = {}
    if request.query:
        for key, value in parse_qsl(request.query, keep_blank_values=True):
            args.setdefault(key, value)
    if request.method == "GET":
        return args
    if request.method != "POST":
        return method_not_allowed("GET, POST")
    content_type = request.headers.get("content-type", "")
    supported = ["application/javascript", "application/json"]
    if not any(ct in content_type for ct in supported):
        unsupported = error(
            415,
            "UnsupportedContentType",
            "Request Content-Type is not supported",
            {"supported": supported, "received": request.headers.get("content-type")},
        )
        # Splash 3.5 writes its error JSON, then Twisted appends its own
        # "Request did not return bytes" page to the same body (seen
        # against a real node): the body is not one JSON document.
        return dataclasses.replace(unsupported, body=unsupported.body + TWISTED_NOT_BYTES)
    try:
        text = request.body.decode("utf-8")
        if "application/json" in content_type:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("the JSON body must be an object")
            args.update(data)
        if "application/javascript" in content_type:
            args["js_source"] = text
    except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
        return bad_option(
            {"type": "invalid_json", "description": "Can't decode JSON", "message": str(exc)}
        )
    return args


class ArgumentCache:
    """Splash's ``save_args`` / ``load_args`` store: one per process, an LRU."""

    def __init__(self, size: int = ARGCACHE_SIZE) -> None:
        self._size = size
        self._values: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Forget every value, as a new process starts with an empty cache."""
        self._values.clear()

    def apply(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | Response:
        """Resolve ``load_args`` and store ``save_args``.

        Returns the arguments with loaded values in place of their keys, and
        the saved names with their keys (for ``X-Splash-Saved-Arguments``);
        or the 498 ExpiredArguments answer when a key is not held here (never
        saved here, evicted, or saved before a restart), as in Splash.
        """
        load = args.pop("load_args", None)
        if isinstance(load, str):
            load = dict(p.split("=", 1) for p in load.split(";") if "=" in p)
        if isinstance(load, dict):
            expired = [name for name, key in load.items() if key not in self._values]
            if expired:
                return error(
                    498,
                    "ExpiredArguments",
                    "Arguments stored with ``save_args`` are expired",
                    {"expired": sorted(expired)},
                )
            for name, key in load.items():
                self._values.move_to_end(key)
                args[name] = self._values[key]
        saved: dict[str, str] = {}
        save = args.pop("save_args", None)
        names = save.split(",") if isinstance(save, str) else save
        for name in names or ():
            if name in args:
                key = hashlib.sha1(
                    json.dumps(args[name], sort_keys=True).encode(), usedforsecurity=False
                ).hexdigest()
                self._values[key] = args[name]
                self._values.move_to_end(key)
                saved[name] = key
        while len(self._values) > self._size:
            self._values.popitem(last=False)
        return args, saved


@dataclass(frozen=True, slots=True)
class RenderArgs:
    """What the checks made of a render request's arguments."""

    args: dict[str, Any]
    #: Splash's render timeout, seconds.
    timeout: float
    #: The ``wait`` argument, seconds (added to the render time and the timer).
    wait: float
    #: The page to render; ``about:blank`` for a script given no url.
    url: str


def validate(endpoint: str, args: dict[str, Any], max_timeout: float) -> RenderArgs:
    """Splash's argument checks, in Splash's order; raises BadOption or ScriptError."""
    timeout = _number(args, "timeout", min(max_timeout, DEFAULT_TIMEOUT), 0.0, max_timeout)
    wait = _number(args, "wait", 0.0, 0.0, timeout)
    engine = args.get("engine") or "webkit"
    if engine not in ("webkit", "chromium"):
        raise_bad_argument("engine", f"Unknown render engine {engine}")
    if engine == "chromium" and endpoint not in ("/render.html", "/render.png"):
        raise_bad_argument(
            "engine",
            f"Render engine chromium does not support {endpoint}",
            supported=["/render.html", "/render.png"],
        )
    if engine == "chromium":
        refused = [a for a in _CHROMIUM_UNSUPPORTED if args.get(a)]
        if str(args.get("http_method") or "GET").upper() != "GET":
            refused.append("http_method")
        if refused:
            raise BadOption(f"{refused[0]} is not implemented")
    url = args.get("url")
    if endpoint in ("/execute", "/run"):
        source = args.get("lua_source")
        if source is None or source == "":
            raise_bad_argument(
                "lua_source", "Required argument is missing: lua_source", type_="argument_required"
            )
        if "function main" not in source and "main = function" not in source:
            # The mock runs no Lua; a script without a main function is
            # the one error it can tell, answered as Splash answers it.
            raise ScriptError(source)
        url = url if isinstance(url, str) and url else "about:blank"
    else:
        if url is None or url == "":
            raise_bad_argument(
                "url", "Required argument is missing: url", type_="argument_required"
            )
        if not isinstance(url, str):
            raise_bad_argument("url", "Argument 'url' has a wrong type", required_type="str")
    if endpoint == "/render.json":
        for name in _JSON_FLAGS:
            flag(args, name)
    return RenderArgs(args, timeout, wait, url)


def _number(args: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    """A float argument checked as Splash's ``RenderOptions.get`` does."""
    value = args.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise_bad_argument(name, f"Argument {name!r} has a wrong type", required_type="float")
    if not low <= number <= high:
        raise_bad_argument(
            name, "Argument is out of the allowed range", min=low, max=high, value=number
        )
    return number


def flag(args: dict[str, Any], name: str) -> int:
    """A 0/1 argument (``html=1``); Splash parses these as ints in 0..1."""
    value = args.get(name)
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise_bad_argument(name, f"Argument {name!r} has a wrong type", required_type="int")
    if not 0 <= number <= 1:
        raise_bad_argument(name, "Argument is out of the allowed range", min=0, max=1, value=number)
    return number
