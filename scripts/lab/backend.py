#!/usr/bin/env python3
"""A lab backend: HTTP on :8080 and UDP echo on :9000, both dual-stack, each
answer naming the backend, so the lab shows which one the VIP reached; HTTP
answers carry the client address the backend saw in `X-Peer`.

usage: backend.py [NAME] [--http-port P] [--no-udp]
HTTP/1.1 keeps connections alive, so a client can hold one open for long."""
import http.server
import socket
import socketserver
import sys
import threading

ARGS = sys.argv[1:]
HTTP_PORT = 8080
if "--http-port" in ARGS:
    i = ARGS.index("--http-port")
    HTTP_PORT = int(ARGS[i + 1])
    del ARGS[i:i + 2]
UDP = "--no-udp" not in ARGS
ARGS = [a for a in ARGS if a != "--no-udp"]
NAME = ARGS[0] if ARGS else socket.gethostname()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"{NAME}\n".encode()
        # The connection's source as this backend sees it (what source NAT made of it).
        peer = self.client_address[0].removeprefix("::ffff:")
        self.send_response(200)
        self.send_header("X-Peer", peer)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class DualStackServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def udp_echo():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 9000))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(f"{NAME} ".encode() + data, peer)


if UDP:
    threading.Thread(target=udp_echo, daemon=True).start()
DualStackServer(("::", HTTP_PORT), Handler).serve_forever()
