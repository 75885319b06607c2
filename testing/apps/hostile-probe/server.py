"""Probes the container it runs in: what it can connect to, which privileges
it has, and how many processes it may start. See README.md."""
import http.server
import json
import os
import signal
import socket
import sys
import threading
import urllib.parse


def connect(target):
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error: %s" % e


def probe(targets):
    results = {}

    def one(t):
        results[t] = connect(t)

    threads = [threading.Thread(target=one, args=(t,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def status_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return "unreadable: %s" % e


def writable(directory):
    path = os.path.join(directory, ".probe-%d" % os.getpid())
    try:
        with open(path, "w") as f:
            f.write("x")
        os.remove(path)
        return True
    except OSError:
        return False


def cgroup(v2, v1):
    # cgroup v2 has one tree, v1 one per controller
    return read(v2) if os.path.exists(v2) else read(v1)


def privileges():
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "CapEff": status_field("CapEff"),
        "CapBnd": status_field("CapBnd"),
        "NoNewPrivs": status_field("NoNewPrivs"),
        "pids.max": cgroup("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
        "memory.max": cgroup("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "root_writable": writable("/"),
        "root_readonly": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "tmp_writable": writable("/tmp"),
        "app_writable": writable("/app") if os.path.isdir("/app") else False,
    }


def forkbomb(limit):
    pids, err = [], ""
    try:
        while len(pids) < limit:
            pids.append(os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ))
    except OSError as e:
        err = str(e)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    return {"started": len(pids), "error": err}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/probe":
            self.answer(200, probe(q.get("t", [])))
        elif url.path == "/priv":
            self.answer(200, privileges())
        elif url.path == "/forkbomb":
            self.answer(200, forkbomb(int(q.get("max", ["2048"])[0])))
        else:
            self.answer(200, "probe %s (%s)\n" % (os.environ.get("DEIS_FORMATION"), os.environ.get("DEIS_RELEASE")))

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
