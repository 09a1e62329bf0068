#!/usr/bin/env python3
"""A prefork worker written in Python that first behaves, then attacks.

It shows that the worker protocol is implementable outside Go, and it is
the chaos suite's hostile worker. Usage (as the supervisor's COMMAND):

    supervisor -mode MODE -- python3 hostile_worker.py --go GOFILE --once ONCEFILE

The protocol, as this script speaks it (see internal/ipc):

* fd 3 is the control channel, one end of an AF_UNIX SOCK_SEQPACKET
  socketpair: one packet is one frame.
* A frame is a 4-byte header -- version (1), type (1 byte), payload length
  (uint16, little-endian) -- and the payload.
* Worker -> supervisor: READY (type 1, empty payload: we use no optional
  features), HEARTBEAT (type 2, 29 bytes: conns, requests, rss as uint64,
  goroutines as uint32, healthy as one byte; every second at the latest),
  MESSAGE (type 6, opaque bytes).
* Supervisor -> worker: DRAIN (type 4, grace in ms as uint32): stop taking
  connections, finish the open ones, exit. In reuseport mode also CONNS
  (below) on fd 3: connections that waited in the backlog of a slot whose
  worker died, which the supervisor accepted and passes on.
* fd 4, in shared and reuseport mode, is a listening TCP socket to accept
  on. In rr mode it is a second SEQPACKET channel on which the supervisor
  sends CONNS frames (type 5, payload: a count byte) with that many accepted
  connections attached as SCM_RIGHTS.
* EOF on fd 3 means the supervisor is gone: exit.

Once GOFILE exists, the worker breaks the protocol in every way the test
names, below the supervisor's limit of protocol errors. The one worker that
creates ONCEFILE first then goes over the limit, and must be replaced.
Every step is logged to stderr as a JSON line with "logger":"hostile".
"""

import json
import os
import socket
import struct
import sys
import threading
import time

VERSION = 1
READY, HEARTBEAT, LOAD, DRAIN, CONNS, MESSAGE = 1, 2, 3, 4, 5, 6
PEER_SIZE = 19  # internal/ipc: one peer record, unused here
MAX_FDS = 64

draining = threading.Event()
lock = threading.Lock()
stats = {"conns": 0, "requests": 0}


def log(msg, **fields):
    fields.update(logger="hostile", msg=msg, pid=os.getpid())
    print(json.dumps(fields, separators=(",", ":")), file=sys.stderr, flush=True)


def frame(ftype, payload=b""):
    """A well-formed frame: version, type, little-endian length, payload."""
    return struct.pack("<BBH", VERSION, ftype, len(payload)) + payload


def heartbeat():
    with lock:
        conns, requests = stats["conns"], stats["requests"]
    rss = 0
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    healthy = 1
    return frame(HEARTBEAT, struct.pack("<QQQIB", conns, requests, rss, threading.active_count(), healthy))


def serve_conn(conn):
    """Answer one HTTP/1.1 request with this process's pid, then close."""
    with lock:
        stats["conns"] += 1
    try:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        body = str(os.getpid()).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with lock:
            stats["requests"] += 1
    except OSError:
        pass
    finally:
        conn.close()
        with lock:
            stats["conns"] -= 1


def spawn(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def accept_loop(ls):
    """shared and reuseport: accept on the inherited listening socket."""
    # A timeout makes accept wake up to notice a drain. It puts the socket
    # in non-blocking mode, which Go's workers on the same open file (shared
    # mode) use anyway.
    ls.settimeout(0.2)
    while not draining.is_set():
        try:
            conn, _ = ls.accept()
        except (socket.timeout, BlockingIOError, InterruptedError):
            continue  # another worker took it, or the timeout to check drain
        spawn(serve_conn, conn)


def handoff_loop(ch):
    """rr: take connections the supervisor hands over as SCM_RIGHTS."""
    ch.settimeout(0.2)
    while not draining.is_set():
        try:
            data, fds, _, _ = socket.recv_fds(ch, 4 + 1 + MAX_FDS * PEER_SIZE, MAX_FDS)
        except (socket.timeout, BlockingIOError, InterruptedError):
            continue
        if not data:
            return  # the supervisor closed the channel
        serve_fds(fds)


def serve_fds(fds):
    for fd in fds:
        spawn(serve_conn, socket.socket(fileno=fd))


def control_loop(ctl):
    """Read the supervisor's frames: conns to serve; drain: finish and exit."""
    while True:
        try:
            # recv_fds, not recv: with a plain recv the kernel would drop
            # (close) the connections a CONNS frame carries.
            data, fds, _, _ = socket.recv_fds(ctl, 65536, MAX_FDS)
        except InterruptedError:
            continue
        if not data:
            log("supervisor gone")
            os._exit(0)
        if len(data) >= 5 and data[1] == CONNS:
            serve_fds(fds)
            continue
        for fd in fds:
            os.close(fd)
        if len(data) >= 4 and data[1] == DRAIN:
            grace_ms = struct.unpack("<I", data[4:8])[0] if len(data) >= 8 else 1000
            log("draining", grace_ms=grace_ms)
            draining.set()
            deadline = time.monotonic() + grace_ms / 1000
            while time.monotonic() < deadline:
                with lock:
                    if stats["conns"] == 0:
                        break
                time.sleep(0.01)
            os._exit(0)


def heartbeat_loop(ctl):
    while True:
        ctl.send(heartbeat())
        time.sleep(0.5)


def send_counted(ctl, kind, packets, fds=None):
    """Send each packet (with fds attached if given) and log how many."""
    for p in packets:
        if fds is None:
            ctl.send(p)
        else:
            socket.send_fds(ctl, [p], fds)
    log("abuse", kind=kind, frames=len(packets), fds=len(packets) * len(fds or []))


def abuse(ctl, once_file):
    """Break the protocol, each way a few times: 35 bad frames in all, under
    the supervisor's limit of 64."""
    # Garbage: a wrong version byte, and packets shorter than a header.
    send_counted(ctl, "garbage", [bytes([0xEE]) + os.urandom(n) for n in (3, 17, 63, 200, 1000, 4096, 9, 40)]
                 + [b"\x01", b"\x01\x02\x00"])
    # Unknown or wrong-direction types: 0, past the last, conns and drain.
    send_counted(ctl, "unknown-type", [frame(t, b"x" * 4) for t in (0, 7, 99, 255, DRAIN, CONNS, 128, 200)])
    # Lengths that lie, and fixed-size types with the wrong size.
    send_counted(ctl, "wrong-length", [
        struct.pack("<BBH", VERSION, MESSAGE, 10) + b"abc",      # says 10, has 3
        struct.pack("<BBH", VERSION, MESSAGE, 0) + b"abc",       # says 0, has 3
        struct.pack("<BBH", VERSION, MESSAGE, 65535) + b"x",     # says 64 KiB
        frame(HEARTBEAT, b"\x00" * 5),                            # 29 expected
        frame(LOAD, b""),                                         # 4 expected
        frame(READY, b"\x00\x00"),                                # 0 or 4
        frame(HEARTBEAT, b"\x00" * 30),
        struct.pack(">BBH", VERSION, HEARTBEAT, 29) + b"\x00" * 29,  # big-endian length
    ])
    # Descriptors on the control channel: 8 heartbeats with 3 each, and one
    # with 100 (more than the supervisor's buffer takes: the kernel closes
    # what does not fit, MSG_CTRUNC). The supervisor must close them all.
    devnull = [os.open("/dev/null", os.O_RDONLY) for _ in range(100)]
    send_counted(ctl, "fds", [heartbeat()] * 8, devnull[:3])
    send_counted(ctl, "fds", [heartbeat()], devnull)
    for fd in devnull:
        os.close(fd)
    # Ready twice more: harmless, must be ignored.
    send_counted(ctl, "ready-twice", [frame(READY)] * 2)
    # A flood of application messages, far past the supervisor's rate.
    send_counted(ctl, "message-flood", [frame(MESSAGE, b"m" * 100)] * 2000)
    try:
        fd = os.open(once_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        log("abuse done", over_limit=False)
        return
    os.close(fd)
    # The chosen one: past the limit of 64 protocol errors.
    send_counted(ctl, "over-limit", [b"\xee\xee\xee\xee"] * 70)
    log("abuse done", over_limit=True)


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    go_file, once_file = args["--go"], args["--once"]
    mode = os.environ["PREFORK_MODE"]
    ctl = socket.socket(fileno=3)  # family and type are read from the fd
    # Our end is our own open file: blocking sends wait for the supervisor
    # to read, rather than failing with EAGAIN.
    ctl.setblocking(True)
    fd4 = socket.socket(fileno=4)
    spawn(handoff_loop if mode == "rr" else accept_loop, fd4)
    ctl.send(frame(READY))
    log("ready", mode=mode, slot=os.environ.get("PREFORK_WORKER_ID"))
    spawn(heartbeat_loop, ctl)
    spawn(control_loop, ctl)
    # Wait for the test's signal (a file) to start the attack.
    while not os.path.exists(go_file):
        time.sleep(0.05)
    try:
        abuse(ctl, once_file)
    except OSError as e:
        log("abuse interrupted", error=str(e))  # replaced meanwhile
    threading.Event().wait()  # serve until drained or orphaned


if __name__ == "__main__":
    main()
