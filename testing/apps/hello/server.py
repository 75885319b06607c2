"""A twelve-factor hello app: it listens on $PORT and greets with $GREETING."""
import http.server
import os
import signal
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/status/"):
            # /status/503 answers with that status: a health check that fails
            code = int(self.path.split("/")[2] or 200)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = "{} from {} ({})\n".format(
            os.environ.get("GREETING", "hello"),
            os.environ.get("DEIS_FORMATION", "an app"),
            os.environ.get("DEIS_RELEASE", "v?"),
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main():
    server = http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "5000"))), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening on", server.server_address, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
