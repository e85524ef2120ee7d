"""What a finished render answers: the page, the images, the HAR, render.json.

Why a module of its own: both render modes answer through the same shapes
(static mode renders a fixed page naming the url and the node, fetch mode the
page it loaded), and the demo site's tests check its JavaScript against the
one definition of the page convention kept here (:func:`build_app_html`).

The shapes are Splash 3.5's: render.html the page, render.png / render.jpeg
an image (a constant 1x1 grey one here), render.har a one-entry HAR whose
response carries the page's status, render.json ``{url, requestedUrl,
geometry, title}`` plus what its 0/1 flags ask for (``html``, ``png``,
``jpeg``, ``history``, ``har``) and the mock's ``node``. The mock runs no
Lua: ``/execute`` and ``/run`` answer a JSON summary of what they got, or for
a loaded page what the usual session script returns (``{url, http_status,
html, cookies}``).

The mock cannot run JavaScript either. It emulates one page convention, the
one the demo site in ``examples/`` follows (see :func:`emulate_page_script`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any

from ._args import flag
from ._errors import HTML, json_response
from ._fetch import Page, merge_cookies
from ._http import Response

__all__ = [
    "JPEG_BYTES",
    "PNG_BYTES",
    "add_rendered_by",
    "build_app_html",
    "emulate_page_script",
    "fixed_page",
    "page_title",
    "render_answer",
    "script_summary",
    "static_page",
]

# A 1x1 grey PNG and a 1x1 grey baseline JPEG (checked with djpeg): constant
# bytes, so tests can compare them.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR42mP4DwABAQEAHLCMmQAAAABJRU5ErkJggg=="
)
JPEG_BYTES = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAP/EABQQAQAA"
    "AAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AP//Z"
)
_APP_DIV = '<div id="app"></div>'
_PAGE_DATA_RE = re.compile(r'<script type="application/json" id="page-data">(.*?)</script>', re.S)
_HEAD_RE = re.compile(r"<head(?:\s[^>]*)?>", re.I)
_TITLE_RE = re.compile(r"<title(?:\s[^>]*)?>(.*?)</title>", re.S | re.I)


def _serialize_text(value: str) -> str:
    """A text node as a browser serialises it (the HTML spec's algorithm)."""
    return (
        value.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _serialize_attr(value: str) -> str:
    """An attribute value as a browser serialises it, between double quotes."""
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def build_app_html(data: Any) -> str:
    """The HTML a convention page's script puts into ``#app``, for ``data``.

    The one definition of the convention's rendering rules (the demo site's
    JavaScript builds the same DOM; ``tests/test_demo.py`` runs that script
    against this function). ``data`` is the page's JSON::

        {"title": str,
         "fields": [[name, value], ...],                         optional
         "items": [{"name": str, "price": str, "href": str}, ...],  optional
         "next": str or null}                                     optional

    and the script appends to ``#app``, in this order, with nothing between::

        <h1>TITLE</h1>
        <dl class="fields"><dt>NAME</dt><dd>VALUE</dd>...</dl>   (fields not empty)
        <ul class="products"><li class="product"><a href="HREF">NAME</a>
            <span class="price">PRICE</span></li>...</ul>        (items not empty;
            one space between the link and the price, no other whitespace)
        <a class="next" href="NEXT">Next page</a>                (next not empty)

    A browser serialises the text and attributes the script set (with
    ``textContent`` and ``setAttribute``) with the escaping done here. Every
    value must be a string (a script would turn other types into text its own
    way): ValueError otherwise, and the caller then leaves the page
    unrendered, as a browser whose page script threw.
    """
    if not isinstance(data, dict):
        raise ValueError("the page data must be a JSON object")
    parts = [f"<h1>{_serialize_text(_string(data.get('title'), 'title'))}</h1>"]
    fields = data.get("fields") or []
    if not isinstance(fields, list):
        raise ValueError("fields must be a list of [name, value] pairs")
    if fields:
        parts.append('<dl class="fields">')
        for pair in fields:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"a field must be a [name, value] pair, got {pair!r}")
            name, value = (_serialize_text(_string(v, "a field")) for v in pair)
            parts.append(f"<dt>{name}</dt><dd>{value}</dd>")
        parts.append("</dl>")
    items = data.get("items") or []
    if not isinstance(items, list):
        raise ValueError("items must be a list")
    if items:
        parts.append('<ul class="products">')
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"an item must be an object, got {item!r}")
            href = _serialize_attr(_string(item.get("href"), "an item's href"))
            name = _serialize_text(_string(item.get("name"), "an item's name"))
            price = _serialize_text(_string(item.get("price"), "an item's price"))
            parts.append(
                f'<li class="product"><a href="{href}">{name}</a> '
                f'<span class="price">{price}</span></li>'
            )
        parts.append("</ul>")
    next_href = data.get("next")
    if next_href is not None and _string(next_href, "next"):
        parts.append(f'<a class="next" href="{_serialize_attr(next_href)}">Next page</a>')
    return "".join(parts)


def emulate_page_script(page: str) -> str:
    """The page as a browser would serialise it after the page's script ran.

    The mock cannot run JavaScript, so this emulates one script: a page that
    holds, literally, ``<div id="app"></div>`` and
    ``<script type="application/json" id="page-data">DATA</script>`` (DATA
    with ``</`` written ``<\\/``, as JSON allows) gets ``#app`` filled with
    :func:`build_app_html` of DATA. The rest of the page is left as fetched
    (the scripts stay, as in a browser's DOM), without the normalisation a
    browser's serialiser would apply. A page without both markers, or whose
    DATA breaks the convention, is returned unchanged: what a browser shows
    when the script finds nothing to do, or throws.
    """
    match = _PAGE_DATA_RE.search(page)
    if match is None or _APP_DIV not in page:
        return page
    try:
        built = build_app_html(json.loads(match.group(1)))
    except ValueError:
        return page
    return page.replace(_APP_DIV, f'<div id="app">{built}</div>', 1)


def add_rendered_by(page: str, node: str) -> str:
    """Insert ``<meta name="rendered-by" content=NODE>`` first in the head."""
    meta = f'<meta name="rendered-by" content="{_serialize_attr(node)}">'
    head = _HEAD_RE.search(page)
    if head is None:
        return meta + page
    return page[: head.end()] + meta + page[head.end() :]


def page_title(page: str) -> str:
    match = _TITLE_RE.search(page)
    return html.unescape(match.group(1)).strip() if match else ""


def fixed_page(url: str, node: str) -> str:
    """Static mode's page: it names the url and the node that rendered it."""
    e_url, e_name = html.escape(url), html.escape(node)
    return (
        f"<html><head><title>Rendered {e_url}</title></head><body>"
        f'<div id="node">{e_name}</div><div id="url">{e_url}</div>'
        '<div id="rendered">rendered by mock splash</div></body></html>'
    )


def static_page(url: str, node: str) -> Page:
    """Static mode's page as if it had been loaded: 200, HTML, :func:`fixed_page`."""
    return Page(url, 200, "OK", [("Content-Type", HTML)], fixed_page(url, node))


def render_answer(
    node: str, endpoint: str, requested_url: str, args: dict[str, Any], page: Page
) -> Response:
    """A render endpoint's answer for ``page`` (``requested_url`` before redirects)."""
    if endpoint == "/render.html":
        return Response(200, page.text.encode(), HTML)
    if endpoint == "/render.png":
        return Response(200, PNG_BYTES, "image/png")
    if endpoint == "/render.jpeg":
        return Response(200, JPEG_BYTES, "image/jpeg")
    if endpoint in ("/execute", "/run"):
        # What the usual session script returns: splash:init_cookies,
        # splash:go, then {html, cookies = splash:get_cookies()}.
        return json_response(
            {
                "url": page.url,
                "http_status": page.status,
                "html": page.text,
                "node": node,
                "cookies": merge_cookies(args.get("cookies"), page),
                "lua_source_length": _source_length(args),
            }
        )
    title = page_title(page.text)
    har = _har(page, title)
    if endpoint == "/render.har":
        return json_response(har)
    data: dict[str, Any] = {
        "url": page.url,
        "requestedUrl": requested_url,
        "geometry": [0, 0, 1024, 768],
        "title": title,
        "node": node,
    }
    if flag(args, "html"):
        data["html"] = page.text
    if flag(args, "png"):
        data["png"] = base64.b64encode(PNG_BYTES).decode()
    if flag(args, "jpeg"):
        data["jpeg"] = base64.b64encode(JPEG_BYTES).decode()
    if flag(args, "history"):
        data["history"] = har["log"]["entries"]
    if flag(args, "har"):
        data["har"] = har
    return json_response(data)


def script_summary(node: str, url: str, args: dict[str, Any]) -> Response:
    """``/execute`` and ``/run`` with no page loaded: the mock cannot run Lua,
    so it reports what it got."""
    cookies = args.get("cookies")
    return json_response(
        {
            "url": url,
            "html": fixed_page(url, node),
            "node": node,
            "cookies": cookies if cookies is not None else [],
            "lua_source_length": _source_length(args),
        }
    )


def _source_length(args: dict[str, Any]) -> int:
    source = args.get("lua_source")
    return len(source) if isinstance(source, str) else 0


def _har(page: Page, title: str) -> dict[str, Any]:
    """A one-entry HAR of the page's answer."""
    started = "1970-01-01T00:00:00.000Z"
    mime = next((v for k, v in page.headers if k.lower() == "content-type"), HTML)
    entry = {
        "pageref": "1",
        "startedDateTime": started,
        "time": 0,
        "request": {
            "method": "GET",
            "url": page.url,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "queryString": [],
            "headersSize": -1,
            "bodySize": -1,
        },
        "response": {
            "status": page.status,
            "statusText": page.reason,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [{"name": k, "value": v} for k, v in page.headers],
            "content": {"size": len(page.text), "mimeType": mime},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(page.text),
        },
        "cache": {},
        "timings": {"blocked": 0, "dns": 0, "connect": 0, "send": 0, "wait": 0, "receive": 0},
    }
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "mock-splash", "version": "1.0"},
            "browser": {"name": "mock-splash", "version": "1.0"},
            "pages": [
                {
                    "id": "1",
                    "title": title,
                    "startedDateTime": started,
                    "pageTimings": {"onContentLoad": 0, "onLoad": 0},
                }
            ],
            "entries": [entry],
        }
    }
