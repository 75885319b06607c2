"""The static buildpack's file server: serves the app's files on $PORT.

Configured by static.json at the app's root (see the buildpack's README).
Standard library only; run as `python3 .deis/static/server.py` from /app.
"""
import fnmatch
import http.server
import json
import os
import posixpath
import signal
import sys
import urllib.parse

APP = os.getcwd()


def load_config():
    path = os.path.join(APP, "static.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


CONFIG = load_config()
ROOT = os.path.realpath(os.path.join(APP, CONFIG.get("root", ".")))
CLEAN_URLS = bool(CONFIG.get("clean_urls", False))
ERROR_PAGE = CONFIG.get("error_page")
HEADERS = CONFIG.get("headers", {})


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=ROOT, **kwargs)

    def hidden(self, url_path):
        parts = [p for p in posixpath.normpath(url_path).split("/") if p]
        return any(p.startswith(".") for p in parts)

    def resolve(self, url_path):
        """The file a URL path names, or None."""
        if self.hidden(url_path):
            return None
        path = self.translate_path(url_path)
        real = os.path.realpath(path)
        if real != ROOT and not real.startswith(ROOT + os.sep):
            return None
        if os.path.isdir(real):
            index = os.path.join(real, "index.html")
            return index if os.path.isfile(index) else None
        if os.path.isfile(real):
            return real
        if CLEAN_URLS and os.path.isfile(real + ".html"):
            return real + ".html"
        return None

    def send_head(self):
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        target = self.resolve(url_path)
        if os.path.isdir(self.translate_path(url_path)) and target and not url_path.endswith("/"):
            self.send_response(301)
            self.send_header("Location", url_path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        status = 200
        if target is None:
            status = 404
            if ERROR_PAGE:
                page = os.path.realpath(os.path.join(ROOT, ERROR_PAGE))
                if page.startswith(ROOT + os.sep) and os.path.isfile(page):
                    target = page
            if target is None:
                self.send_error(404, "Not Found")
                return None
        try:
            f = open(target, "rb")
        except OSError:
            self.send_error(404, "Not Found")
            return None
        st = os.fstat(f.fileno())
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(target))
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Last-Modified", self.date_time_string(st.st_mtime))
        for pattern, headers in HEADERS.items():
            if fnmatch.fnmatch(url_path, pattern):
                for k, v in headers.items():
                    self.send_header(k, v)
        self.end_headers()
        return f

    def list_directory(self, path):
        self.send_error(404, "Not Found")
        return None

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main():
    port = int(os.environ.get("PORT", "5000"))
    server = http.server.ThreadingHTTPServer(("", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving %s on port %d" % (ROOT, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
