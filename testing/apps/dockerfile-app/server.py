"""Served from an image built from the app's Dockerfile."""
import http.server
import os
import signal
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("%s from dockerfile-app\n" % os.environ.get("GREETING", "hello")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "5000"))), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("dockerfile-app listening on", server.server_address, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
