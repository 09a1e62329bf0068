"""An HTTP server in Python's standard library that takes its listening
socket at fd 3, as prefork's -worker-protocol plain and systemd give it.

GET /pid answers the process id; GET /sleep?ms=N answers after N ms.
Under systemd (NOTIFY_SOCKET set) it checks LISTEN_FDS and LISTEN_PID,
sends READY=1 once serving, STATUS= and WATCHDOG=1 every second, and
STOPPING=1 on SIGTERM. SIGTERM stops accepting, finishes in-flight
requests (closing keep-alive connections after their next response) and
exits 0.
"""

import http.server
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

SD_LISTEN_FDS_START = 3
stopping = threading.Event()


def notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())


def check_activation():
    # sd_listen_fds(3): the variables are meant for this very process.
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("inherit_server: LISTEN_PID=%r, want %d" % (os.environ.get("LISTEN_PID"), os.getpid()))
    if os.environ.get("LISTEN_FDS") != "1":
        sys.exit("inherit_server: LISTEN_FDS=%r, want 1" % os.environ.get("LISTEN_FDS"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is closed after a second, so that a
    # drain (server_close waits for every connection's thread) ends soon.
    timeout = 1

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/sleep":
            ms = int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(ms / 1000)
        elif url.path != "/pid":
            self.send_error(404)
            return
        body = str(os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            # Draining: the client reconnects, to another worker.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close waits for in-flight requests
    block_on_close = True

    def __init__(self, sock):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


def main():
    systemd = "NOTIFY_SOCKET" in os.environ
    if systemd:
        check_activation()
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    server = Server(sock)

    def stop(signum, frame):
        stopping.set()
        notify("STOPPING=1")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if systemd:
        def beat():
            while True:
                notify("WATCHDOG=1")
                time.sleep(1)
        threading.Thread(target=beat, daemon=True).start()
        notify("READY=1\nSTATUS=serving")
    server.serve_forever(poll_interval=0.05)
    server.server_close()


if __name__ == "__main__":
    main()
