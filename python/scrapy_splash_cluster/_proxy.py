"""A Splash request's proxy, and the headers that never go to the website.

Scrapy's HttpProxyMiddleware resolves a request's proxy (``meta["proxy"]``,
or ``http_proxy``/``https_proxy`` for the page's scheme) and moves its
credentials into a ``Proxy-Authorization`` header. For a Splash request the
crawler does not fetch the page, Splash does: the proxy must become Splash's
``proxy`` argument (``[protocol://][user:password@]host[:port]``), or the page
is fetched from the node's own address, and the header must not be copied
into Splash's ``headers`` argument, which Splash sends to the website as is.

What Splash 3.5 does with it, measured (tests/e2e/test_proxy.py):

- webkit (render.* and execute) fetches through the proxy with the
  credentials;
- chromium ignores ``proxy`` and fetches the page directly, so a proxied
  chromium request is refused here rather than sent from the node's address;
- Splash parses the argument with ``urlparse`` and does not unquote the
  credentials, and knows only ``http`` and ``socks5`` proxies (1080 when no
  port is given).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote, urlsplit

from scrapy import Request

__all__ = ["SITE_EXCLUDED_HEADERS", "ProxyError", "splash_proxy"]

# Never copied into Splash's ``headers`` argument: the proxy's credentials;
# the hop-by-hop headers (RFC 9110 7.6.1), which describe the crawler's own
# connection; Host and Content-Length, which the browser sets for the page's
# request. And Accept-Encoding: measured on Splash 3.5, webkit leaves an
# answer compressed when the request named an encoding itself (a gzip or br
# page renders as binary garbage), while on its own it asks for gzip and
# deflate and decodes them; scrapy-splash never forwarded it either (it ran
# before HttpCompressionMiddleware).
SITE_EXCLUDED_HEADERS = frozenset(
    {
        "proxy-authorization",
        "proxy-connection",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)

_SPLASH_PROXY_SCHEMES = ("http", "socks5")
# Characters that end a URL's authority: Splash's urlparse would cut the
# credentials there.
_AUTHORITY_ENDS = "/?#"


class ProxyError(ValueError):
    """A request's proxy cannot be given to Splash; the message says why and
    never holds the proxy's credentials."""


def _masked(proxy: str) -> str:
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    credentials = "***@" if parts.username is not None else ""
    return f"{parts.scheme}://{credentials}{host}{port}"


def _credentials_from_header(request: Request, proxy: str) -> tuple[str, str] | None:
    header = request.headers.get(b"Proxy-Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        raise ProxyError(
            f"{request}: the Proxy-Authorization for {_masked(proxy)} is not basic auth; "
            "Splash's proxy argument takes only user:password"
        )
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        raise ProxyError(
            f"{request}: the Proxy-Authorization for {_masked(proxy)} is not valid base64"
        ) from None
    user, _, password = decoded.partition(":")
    return user, password


def splash_proxy(request: Request, engine: str | None) -> str | None:
    """The ``proxy`` argument for Splash from the request's proxy, with its
    credentials (from the URL, or from the header HttpProxyMiddleware moved
    them to); None when the request has no proxy."""
    proxy = request.meta.get("proxy")
    if not proxy:
        return None
    proxy = str(proxy)
    shown = _masked(proxy)
    if engine == "chromium":
        raise ProxyError(
            f"{request}: Splash 3.5's chromium engine ignores the proxy argument and would "
            f"fetch the page from the node's own address, not through {shown}; use the "
            'webkit engine for proxied requests, or set meta["proxy"] = None'
        )
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if parts.scheme not in _SPLASH_PROXY_SCHEMES or not parts.hostname:
        raise ProxyError(
            f"{request}: Splash cannot use the proxy {shown}; its proxy argument takes "
            "http:// or socks5:// proxies"
        )
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
    else:
        user, password = _credentials_from_header(request, proxy) or (None, None)
    # Splash assumes 1080 without a port; Scrapy assumes the scheme's default.
    port = parts.port or (80 if parts.scheme == "http" else 1080)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if user is None:
        return f"{parts.scheme}://{host}:{port}"
    if ":" in user or any(c in user + password for c in _AUTHORITY_ENDS + "@"):
        raise ProxyError(
            f"{request}: the credentials of the proxy {shown} hold a character Splash's "
            "proxy argument cannot carry (':' in the user name, or one of '/?#@'): Splash "
            "does not unquote them"
        )
    return f"{parts.scheme}://{user}:{password}@{host}:{port}"
