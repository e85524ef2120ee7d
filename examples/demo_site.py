"""The demo's website: a small shop whose pages build their content with JavaScript.

Why a site of our own: the demo must run offline, in seconds, and show what
Splash is for. Every page's raw HTML holds an empty ``<div id="app"></div>``,
the page's data as JSON and a small inline script that builds the title, the
product list (links and prices) and the next-page link from that data. A plain
Scrapy request (or ``curl``) sees no products and no links to follow; a
browser, or Splash, sees the whole catalogue.

The pages follow the convention that the mock Splash node's fetch mode
emulates, since the mock cannot run JavaScript (see
``scrapy_splash_cluster.testing._pages.build_app_html``, the one definition of
the DOM the script builds). The script below must build exactly that DOM, so
that a real Splash and the mock render these pages alike; it is ES5, which
the QtWebKit of Splash's default engine runs. ``tests/test_demo.py`` runs the
script under Node.js against the mock's rules.

Standard library only: ``http.server`` in a daemon thread, on 127.0.0.1 and
an ephemeral port.
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["PAGE_SCRIPT", "Catalogue", "DemoSite", "Product"]

_ADJECTIVES = ("Amber", "Brisk", "Cobalt", "Dusky", "Ember", "Frosted", "Golden", "Hazel")
_MATERIALS = ("Ceramic", "Walnut", "Linen", "Copper", "Glass")
_THINGS = ("Teapot", "Lantern", "Notebook", "Kettle", "Vase", "Clock")

# The script every page runs: it builds #app from #page-data. It must produce
# the DOM of the mock's build_app_html (the convention), element for element.
PAGE_SCRIPT = """\
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("page-data").textContent);
  var app = document.getElementById("app");
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, name)) {
        node.setAttribute(name, attrs[name]);
      }
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }
  app.appendChild(el("h1", {}, data.title));
  var fields = data.fields || [];
  if (fields.length) {
    var dl = el("dl", {"class": "fields"});
    for (var i = 0; i < fields.length; i++) {
      dl.appendChild(el("dt", {}, fields[i][0]));
      dl.appendChild(el("dd", {}, fields[i][1]));
    }
    app.appendChild(dl);
  }
  var items = data.items || [];
  if (items.length) {
    var ul = el("ul", {"class": "products"});
    for (var j = 0; j < items.length; j++) {
      var li = el("li", {"class": "product"});
      li.appendChild(el("a", {"href": items[j].href}, items[j].name));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", {"class": "price"}, items[j].price));
      ul.appendChild(li);
    }
    app.appendChild(ul);
  }
  if (data.next) {
    app.appendChild(el("a", {"class": "next", "href": data.next}, "Next page"));
  }
})();
"""

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} | Demo Shop</title>
</head>
<body>
<noscript>This shop needs JavaScript.</noscript>
<div id="app"></div>
<script type="application/json" id="page-data">{data}</script>
<script>
{script}</script>
</body>
</html>
"""

_NOT_FOUND = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Not found | Demo Shop</title></head>
<body><h1>Not found</h1><p>No page at {path}.</p></body>
</html>
"""


@dataclass(frozen=True)
class Product:
    """One product: what its page shows once rendered."""

    number: int
    name: str
    price: str
    sku: str
    path: str


@dataclass(frozen=True)
class Catalogue:
    """The shop's pages, computed (not stored): ``pages`` listings of
    ``products`` products each, so that the demo and its tests agree on what
    a complete crawl finds."""

    pages: int = 12
    products: int = 10

    def __post_init__(self) -> None:
        if self.pages < 1 or self.products < 1:
            raise ValueError("a catalogue needs at least one page and one product per page")

    @staticmethod
    def listing_path(page: int) -> str:
        """Path of listing page ``page`` (1-based)."""
        return f"/catalogue/page-{page}.html"

    def product(self, page: int, index: int) -> Product:
        """Product ``index`` (0-based) of listing page ``page``."""
        number = (page - 1) * self.products + index + 1
        n = number - 1
        adjective = _ADJECTIVES[n % len(_ADJECTIVES)]
        material = _MATERIALS[(n // len(_ADJECTIVES)) % len(_MATERIALS)]
        thing = _THINGS[(n // (len(_ADJECTIVES) * len(_MATERIALS))) % len(_THINGS)]
        cents = 500 + (number * 1297) % 9000
        return Product(
            number=number,
            name=f"{adjective} {material} {thing}",
            price=f"€{cents // 100}.{cents % 100:02d}",
            sku=f"DS-{number:04d}",
            path=f"/product/{number:04d}.html",
        )

    def listing(self, page: int) -> list[Product]:
        """The products of listing page ``page``."""
        return [self.product(page, i) for i in range(self.products)]

    def all_products(self) -> list[Product]:
        """Every product, in catalogue order."""
        return [p for page in range(1, self.pages + 1) for p in self.listing(page)]

    @property
    def total_pages(self) -> int:
        """Listing pages plus product pages: what a complete crawl renders."""
        return self.pages * (1 + self.products)

    def _product_at(self, path: str) -> Product | None:
        """The product whose page is at ``path``, if any."""
        digits = path.removeprefix("/product/").removesuffix(".html")
        if not digits.isdigit() or not 1 <= int(digits) <= self.pages * self.products:
            return None
        number = int(digits)
        product = self.product((number - 1) // self.products + 1, (number - 1) % self.products)
        return product if product.path == path else None

    def page_data(self, path: str) -> dict[str, Any] | None:
        """The JSON a page carries, or None when there is no page at ``path``."""
        for page in range(1, self.pages + 1):
            if path == self.listing_path(page):
                products = self.listing(page)
                return {
                    "title": f"Catalogue, page {page} of {self.pages}",
                    "items": [{"name": p.name, "price": p.price, "href": p.path} for p in products],
                    "next": self.listing_path(page + 1) if page < self.pages else None,
                }
        product = self._product_at(path)
        if product is not None:
            return {
                "title": product.name,
                "fields": [
                    ["Price", product.price],
                    ["SKU", product.sku],
                    ["Description", f"Item {product.number} of the demo shop."],
                ],
                "items": [],
                "next": None,
            }
        return None


def render_raw_page(data: dict[str, Any]) -> str:
    """A page's raw HTML, as the server sends it: data and script, no content.

    The JSON goes into a script element with every ``<`` escaped as
    ``\\u003c``, so that no text in it can close the element early.
    """
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    return _PAGE.format(title=html.escape(data["title"]), data=payload, script=PAGE_SCRIPT)


class DemoSite:
    """The shop, served on 127.0.0.1 from a daemon thread until ``stop()``.

    Counts the pages it served (``page_loads``): the demo uses the count as
    the crawl's progress, since every render loads its page from here.
    """

    def __init__(self, catalogue: Catalogue, host: str = "127.0.0.1", port: int = 0) -> None:
        self.catalogue = catalogue
        self._lock = threading.Lock()
        self._page_loads = 0
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "DemoShop/1.0"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(HTTPStatus.FOUND, b"", location=Catalogue.listing_path(1))
                    return
                data = site.catalogue.page_data(path)
                if data is None:
                    body = _NOT_FOUND.format(path=html.escape(path)).encode()
                    self._send(HTTPStatus.NOT_FOUND, body)
                    return
                site._count()
                self._send(HTTPStatus.OK, render_raw_page(data).encode())

            def _send(self, status: HTTPStatus, body: bytes, location: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if location is not None:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the crawl's log is the demo's output."""

        return Handler

    def _count(self) -> None:
        with self._lock:
            self._page_loads += 1

    @property
    def page_loads(self) -> int:
        """Pages served with 200 since start (renders that loaded a page)."""
        with self._lock:
            return self._page_loads

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoSite:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-site", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DemoSite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Serve the shop until Ctrl-C: ``python examples/demo_site.py [--port 8000]``."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="Serve the demo shop on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any)")
    parser.add_argument("--pages", type=int, default=12, help="listing pages (default 12)")
    parser.add_argument("--products", type=int, default=10, help="products per page (default 10)")
    args = parser.parse_args()
    with DemoSite(Catalogue(args.pages, args.products), port=args.port) as site:
        print(f"Demo shop at {site.url}{Catalogue.listing_path(1)} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
