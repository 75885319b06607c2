"""A twelve-factor hello app: it listens on $PORT and greets with $GREETING."""
import http.server
import os
import signal
import sys
import threading
import time

# Requests being answered; on SIGTERM the app finishes them before it exits,
# as a Heroku app should: the platform stops routing to a container before
# it stops it, but requests already sent to it are still in flight.
busy = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one_request(self):
        global busy
        # Counted from the first byte of the request line on.
        if not self.rfile.peek(1):
            self.close_connection = True
            return
        with lock:
            busy += 1
        try:
            super().handle_one_request()
        finally:
            with lock:
                busy -= 1

    def do_GET(self):
        if self.path.startswith("/status/"):
            # /status/503 answers with that status: a health check that fails
            code = int(self.path.split("/")[2] or 200)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        fail = os.environ.get("FAIL_STATUS")
        if fail:
            # FAIL_STATUS=500 makes every answer but /status/N fail: a bad release
            # that still passes a TCP health check.
            body = b"failing on purpose\n"
            self.send_response(int(fail))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
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

    def drain():
        # Exit once no request has been in flight for a moment (idle
        # keep-alive connections do not count). It keeps accepting until
        # then: the platform sends no new request after SIGTERM, but a
        # connection still in the listen backlog must be served, not reset.
        quiet = 0
        while quiet < 5:
            time.sleep(0.1)
            with lock:
                quiet = quiet + 1 if busy == 0 else 0
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=drain, daemon=True).start())
    crash = os.environ.get("CRASH_AFTER")
    if crash:
        # CRASH_AFTER=3 makes the app exit 3 seconds after it started: a bad
        # release that passes its health checks, goes live, then crash-loops.
        threading.Timer(float(crash), lambda: os._exit(3)).start()
    print("listening on", server.server_address, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
