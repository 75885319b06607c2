"""A standard-library Python app: the python buildpack detects it by its
requirements.txt and, with no Procfile, runs `python3 app.py` as web."""
import http.server
import json
import os
import signal
import sys

from greeting import greet


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (json.dumps({
            "message": greet(os.environ.get("GREETING", "hello")),
            "unbuffered": os.environ.get("PYTHONUNBUFFERED", ""),
        }) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


def main():
    server = http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "5000"))), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("python-app listening on", server.server_address, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
