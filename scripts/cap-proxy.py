#!/usr/bin/env python3
"""A loopback HTTP proxy that caps request bodies, for hoist's benchmarks.

    python3 scripts/cap-proxy.py --upstream HOST:PORT [--cap BYTES] [--port 0]
        [--log FILE]

Forwards every request to the HTTP server at HOST:PORT (a registry on
loopback), streaming, except those whose body is larger than --cap bytes
(default 100000000, 100 MB): those get 413 Request Entity Too Large, as
from a reverse proxy with a body limit (nginx's `client_max_body_size`),
and the connection is closed. Python 3 standard library only.

- Binds 127.0.0.1 only. `--port 0` (the default) picks a free port. The first
  line on stdout is exactly `listening on http://127.0.0.1:PORT`; nothing else
  is printed on stdout.
- A body with Content-Length above the cap is refused before anything is
  forwarded. A body sent with `Transfer-Encoding: chunked` (its size unknown
  up front, as `docker push` sends a layer) is forwarded chunk by chunk while
  its bytes are counted; the chunk that would pass the cap is not forwarded:
  the connection upstream is dropped (the server sees a cut body), the client
  gets 413 and its connection is closed once it stops sending (a lingering
  close, so that it reads the answer instead of a reset).
- The Host header is passed on unchanged, so the server's Location headers
  name the proxy. One request per connection: every request goes upstream
  with `Connection: close`, and every answer comes back with it. When the
  server answers before the whole body went up (and closes), the body is no
  longer read and the answer is passed on.
  `Expect: 100-continue` is answered by the proxy (100, or 413 when the
  announced length is above the cap) and not passed on.
- `--log FILE`: append one JSON line per request once it is done:
  {"method", "path", "status", "body_bytes", "verdict", "started",
  "seconds"}, where verdict is "forwarded", "413" or "error: …" (a
  connection that was not HTTP, such as the TLS handshake `docker push`
  tries first), body_bytes the request body bytes received (forwarded or
  not; with a refused chunked body, its framing counted too), started the
  Unix time the connection was accepted, and seconds how long it was
  handled, lingering included.
"""

import argparse
import json
import socket
import socketserver
import sys
import threading
import time

BUFFER = 1 << 20
LINGER_SECONDS = 30
TOO_LARGE = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n"
    b"<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n"
    b"<hr><center>cap-proxy</center>\r\n</body>\r\n</html>\r\n"
)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade"}


class BadRequest(Exception):
    pass


def read_head(rfile):
    """The request or status line and the header lines, as (line, [(name, value)])."""
    line = rfile.readline(65537)
    if not line:
        return None, None
    if not line.endswith(b"\r\n") and not line.endswith(b"\n"):
        raise BadRequest("line too long")
    headers = []
    while True:
        h = rfile.readline(65537)
        if not h:
            raise BadRequest("connection closed in the headers")
        if h in (b"\r\n", b"\n"):
            break
        name, sep, value = h.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    return line.decode("latin-1").rstrip("\r\n"), headers


def header(headers, name):
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def encode_head(line, headers):
    out = [line]
    out += ["%s: %s" % (n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
    out.append("Connection: close")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


class Upstream:
    """The connection to the server. A send that fails (the server answered
    early and closed) marks it broken; the body is then no longer read, and
    the server's answer is passed on."""

    def __init__(self, address):
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.broken = False

    def send(self, data):
        if self.broken:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.broken = True

    def close(self):
        self.sock.close()


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = conn.makefile("rb", buffering=BUFFER)
        started = time.time()
        record = {"method": None, "path": None, "status": None, "body_bytes": 0, "verdict": None}
        upstream = None
        try:
            line, headers = read_head(rfile)
            if line is None:
                return
            parts = line.split(" ")
            if len(parts) != 3:
                raise BadRequest("bad request line")
            record["method"], record["path"] = parts[0], parts[1]
            chunked = "chunked" in (header(headers, "transfer-encoding") or "").lower()
            length = header(headers, "content-length")
            length = int(length) if length is not None and not chunked else None
            expect = (header(headers, "expect") or "").lower() == "100-continue"
            cap = self.server.cap

            if length is not None and length > cap:
                self.refuse(conn, rfile, record, drain=not expect)
                return
            if expect:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

            upstream = Upstream(self.server.upstream)
            upstream.send(encode_head(line, headers))

            if chunked:
                total = 0
                while not upstream.broken:
                    size_line = rfile.readline(1024)
                    if not size_line:
                        raise BadRequest("connection closed in a chunked body")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        upstream.send(size_line)
                        while True:  # trailers, then the blank line
                            t = rfile.readline(65537)
                            if not t:
                                raise BadRequest("connection closed in the trailers")
                            upstream.send(t)
                            if t in (b"\r\n", b"\n"):
                                break
                        break
                    if total + size > cap:
                        record["body_bytes"] = total
                        upstream.close()
                        upstream = None
                        self.refuse(conn, rfile, record, drain=True, received=total)
                        return
                    upstream.send(size_line)
                    left = size
                    while left and not upstream.broken:
                        data = rfile.read(min(left, BUFFER))
                        if not data:
                            raise BadRequest("connection closed in a chunk")
                        upstream.send(data)
                        left -= len(data)
                        total += len(data)
                        record["body_bytes"] = total
                    crlf = rfile.readline(3)
                    upstream.send(crlf)
            elif length:
                left = length
                while left and not upstream.broken:
                    data = rfile.read(min(left, BUFFER))
                    if not data:
                        raise BadRequest("connection closed in the body")
                    upstream.send(data)
                    left -= len(data)
                    record["body_bytes"] += len(data)

            # The answer: its head with Connection: close, then whatever
            # comes until the server closes (it was asked to).
            ufile = upstream.sock.makefile("rb", buffering=BUFFER)
            while True:
                status, rheaders = read_head(ufile)
                if status is None:
                    raise BadRequest("the server closed without answering")
                code = int(status.split(" ")[1])
                if code >= 200:
                    break  # an interim 1xx is not passed on: no Expect went upstream
            record["status"], record["verdict"] = code, "forwarded"
            conn.sendall(encode_head(status, rheaders))
            while True:
                data = ufile.read1(BUFFER)
                if not data:
                    break
                conn.sendall(data)
            if upstream.broken:  # the client may still be sending the body
                linger(conn, rfile)
        except (BadRequest, ValueError, OSError) as e:
            record["verdict"] = record["verdict"] or "error: %s" % e
        finally:
            if upstream is not None:
                upstream.close()
            record["started"] = round(started, 3)
            record["seconds"] = round(time.time() - started, 3)
            self.server.log(record)

    def refuse(self, conn, rfile, record, drain, received=None):
        """413, then a lingering close: read what the client still sends
        (until it is silent for LINGER_SECONDS) so that it reads the answer
        rather than a reset."""
        record["status"], record["verdict"] = 413, "413"
        conn.sendall(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/html\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(TOO_LARGE) + TOO_LARGE
        )
        if drain:
            record["body_bytes"] = (received or 0) + linger(conn, rfile)


def linger(conn, rfile):
    """Closes our side, then reads what the client still sends until it
    is silent for LINGER_SECONDS or closes: the byte count."""
    drained = 0
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(LINGER_SECONDS)
        while True:
            data = rfile.read1(BUFFER)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass
    return drained


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, upstream, cap, log_path):
        super().__init__(address, Handler)
        self.upstream, self.cap = upstream, cap
        self.log_lock = threading.Lock()
        self.log_file = open(log_path, "a", buffering=1) if log_path else None

    def log(self, record):
        if self.log_file is not None:
            with self.log_lock:
                self.log_file.write(json.dumps(record) + "\n")


def main():
    parser = argparse.ArgumentParser(description="a loopback proxy that answers 413 to request bodies above a cap")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server to forward to")
    parser.add_argument("--cap", type=int, default=100_000_000, help="largest request body forwarded, in bytes")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", help="append one JSON line per request")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    server = Server(("127.0.0.1", args.port), (host, int(port)), args.cap, args.log)
    sys.stdout.write("listening on http://127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
