"""Answers "built" on $PORT: the hostile build app's process, if it ever runs."""
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"built\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("", int(os.environ.get("PORT", "5000"))), Handler).serve_forever()
