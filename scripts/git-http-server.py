#!/usr/bin/env python3
"""A git smart-HTTP server on loopback, for hoist's tests and benchmarks.

    python3 scripts/git-http-server.py --root DIR [--port 0] [--token TOKEN]
        [--token-env VAR] [--public ORG/NAME.git]... [--delay-ms N] [--fail-first N]
        [--log FILE] [--lfs-corrupt OID]... [--redirect-to URL] [--verbose]

Serves every bare repository under DIR at http://127.0.0.1:PORT/<path
relative to DIR> (for example /org/name.git/info/refs?service=git-upload-pack)
by running `git http-backend` as a CGI program, found with `git --exec-path`.
Python 3.11 standard library only.

- Binds 127.0.0.1 only. `--port 0` (the default) picks a free port. The first
  line on stdout is exactly `listening on http://127.0.0.1:PORT`; nothing else
  is printed on stdout.
- `--token TOKEN`: every request must carry `Authorization: Basic
  base64(<any user>:TOKEN)`; otherwise (no header, another scheme, a wrong
  token) the answer is 401 with `WWW-Authenticate: Basic realm="git"`.
  `--token-env VAR` reads the token from the environment variable VAR
  instead, which keeps it out of the process list. Repositories named with
  `--public org/name.git` (repeatable) need no auth.
  Auth is checked before the repository's existence, as a real forge does:
  a missing repository is 401 without a token and 404 with one.
- Request bodies may come with Content-Length or `Transfer-Encoding: chunked`
  (libgit2 sends chunked POSTs); chunked bodies are decoded before they reach
  the backend. `Content-Encoding: gzip` is passed on as HTTP_CONTENT_ENCODING
  for http-backend to undo. The `Git-Protocol` header becomes GIT_PROTOCOL.
- Responses always carry Content-Length (the backend's output is buffered),
  so connections can be kept alive.
- Fetching a bare commit sha works when the repository allows it
  (`uploadpack.allowReachableSHA1InWant` / `allowAnySHA1InWant` in its config);
  the server adds nothing of its own.
- `--delay-ms N`: sleep N ms before answering each POST to git-upload-pack.
- `--redirect-to URL`: answer every request with 302 Found to URL followed
  by the request's path and query (a forge that moved to another host).
- `--fail-first N`: answer the first N requests with 503 Service Unavailable
  (a flaky forge, for retry tests).
- `--log FILE`: append one JSON line per request, written before the response
  is sent: {"method", "path", "query", "status", "bytes", "command"}, where
  bytes is the response body's size, auth whether the request carried an
  Authorization header, and command is, for POSTs to
  git-upload-pack, "ls-refs" or "fetch" (protocol v2 sends both as POSTs;
  protocol v0, which libgit2 speaks, POSTs only to fetch), otherwise null.
- Git LFS (the batch API, `basic` transfer, download only):
  `POST <repo>/info/lfs/objects/batch` answers for each object stored at
  `<repo dir>/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>` (git-lfs's own layout)
  with a download action on this server, whose `header` carries the
  request's `Authorization` (as Gitea does), or with a 404 object error;
  `GET <repo>/info/lfs/objects/<oid>` serves the object. Both are under
  the same `--token`/`--public` rules as git; `--lfs-corrupt OID`
  (repeatable) serves that object with its first byte changed.
- Quiet: no per-request output on stderr unless `--verbose`. Exits with
  status 0 on SIGTERM or SIGINT.
"""

import argparse
import base64
import binascii
import gzip
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib

# The paths http-backend answers, after the repository's own path.
SERVICE_PATH = re.compile(
    r"^/(?P<repo>.+?)/(?:HEAD|info/refs|git-upload-pack|git-receive-pack"
    r"|objects/.+|info/lfs/objects/batch|info/lfs/objects/[0-9a-f]{64})$"
)
LFS_BATCH = "/info/lfs/objects/batch"
LFS_OBJECT = re.compile(r"/info/lfs/objects/(?P<oid>[0-9a-f]{64})$")
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"

# The only GIT_* variables of the server's own environment passed on to the
# backend: a GIT_DIR or similar inherited from a hook would point it elsewhere.
KEEP_GIT_VARS = {
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_CONFIG_SYSTEM",
    "GIT_EXEC_PATH",
}


class Config:
    def __init__(self, args):
        self.root = os.path.realpath(args.root)
        self.token = args.token
        self.public = {p.strip("/") for p in args.public}
        self.delay = args.delay_ms / 1000.0
        self.failures_left = args.fail_first
        self.log_path = args.log
        self.lfs_corrupt = set(args.lfs_corrupt)
        self.redirect_to = args.redirect_to
        self.verbose = args.verbose
        self.log_lock = threading.Lock()
        exec_path = subprocess.run(
            ["git", "--exec-path"], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.backend = os.path.join(exec_path, "git-http-backend")
        base = {}
        for key, value in os.environ.items():
            if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                continue
            if key.startswith("GIT_") and key not in KEEP_GIT_VARS:
                continue
            if key == args.token_env:
                continue
            base[key] = value
        self.base_env = base

    def log(self, record):
        if self.log_path is None:
            return
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self.log_lock:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)


def pkt_command(body, encoding):
    """The v2 command (`command=ls-refs`) of an upload-pack POST body, or
    "fetch" for a protocol v0 body (wants and haves)."""
    try:
        if encoding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
    except (OSError, EOFError, zlib.error):
        return None
    if len(body) < 4:
        return None
    try:
        size = int(body[:4], 16)
    except ValueError:
        return None
    first = body[4:size].decode("utf-8", "replace").strip()
    if first.startswith("command="):
        return first[len("command="):]
    return "fetch"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hoist-test-git-http"
    # Headers and body go out in two writes; without TCP_NODELAY the body
    # waits for the client's delayed ACK (about 40 ms on every response),
    # which real forges behind nginx or Go's net/http do not do.
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    @property
    def config(self):
        return self.server.config

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if self.config.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def read_body(self):
        """The request body, chunked transfer coding removed."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Trailer fields, up to the empty line.
                    while True:
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)  # the CRLF after the chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def authorized_user(self):
        """(ok, user): the user named by a Basic header carrying the token."""
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        user, sep, password = decoded.partition(":")
        if not sep:
            return False, None
        ok = hmac.compare_digest(password.encode(), self.config.token.encode())
        return ok, user or "token"

    def serve(self):
        raw_path, _, query = self.path.partition("?")
        path = urllib.parse.unquote(raw_path)
        record = {
            "method": self.command,
            "path": path,
            "query": query,
            "status": 0,
            "bytes": 0,
            "auth": bool(self.headers.get("Authorization")),
            "command": None,
        }
        if self.config.redirect_to:
            location = self.config.redirect_to.rstrip("/") + self.path
            self.reply(record, 302, "Found", [("Location", location)], b"moved\n")
            return
        with self.config.log_lock:
            fail = self.config.failures_left > 0
            self.config.failures_left -= int(fail)
        if fail:
            self.reply(record, 503, "Service Unavailable", [], b"try again later\n")
            return
        try:
            body = self.read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            self.reply(record, 400, "Bad Request", [], b"bad request body\n")
            return

        match = SERVICE_PATH.match(path)
        repo = match.group("repo") if match else None
        if repo is not None and ".." in repo.split("/"):
            repo = None

        user = None
        if self.config.token is not None and repo not in self.config.public:
            ok, user = self.authorized_user()
            if not ok:
                self.reply(
                    record,
                    401,
                    "Unauthorized",
                    [("WWW-Authenticate", 'Basic realm="git"')],
                    b"authentication required\n",
                )
                return

        if repo is None or not os.path.isdir(os.path.join(self.config.root, repo)):
            self.reply(record, 404, "Not Found", [], b"repository not found\n")
            return

        if path.endswith(LFS_BATCH) or LFS_OBJECT.search(path):
            self.serve_lfs(record, path, repo, body)
            return

        upload_pack_post = self.command == "POST" and path.endswith("/git-upload-pack")
        if upload_pack_post:
            record["command"] = pkt_command(
                body, self.headers.get("Content-Encoding", "").strip().lower()
            )
            if self.config.delay > 0:
                time.sleep(self.config.delay)

        env = dict(self.config.base_env)
        env.update(
            {
                "GIT_PROJECT_ROOT": self.config.root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": self.server_version,
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(self.server.server_address[1]),
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
            }
        )
        if self.headers.get("Content-Type"):
            env["CONTENT_TYPE"] = self.headers["Content-Type"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if user is not None:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = "Basic"

        try:
            proc = subprocess.run(
                [self.config.backend], input=body, env=env, capture_output=True
            )
        except OSError as e:
            sys.stderr.write("git-http-server: cannot run http-backend: %s\n" % e)
            self.reply(record, 500, "Internal Server Error", [], b"backend failed\n")
            return
        if proc.stderr and self.config.verbose:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        status, reason, headers, out = parse_cgi(proc.stdout)
        if status is None:
            sys.stderr.write(
                "git-http-server: http-backend gave no headers (exit %d): %s\n"
                % (proc.returncode, proc.stderr.decode("utf-8", "replace").strip())
            )
            self.reply(record, 500, "Internal Server Error", [], b"backend failed\n")
            return
        self.reply(record, status, reason, headers, out)

    def lfs_path(self, repo, oid):
        return os.path.join(self.config.root, repo, "lfs", "objects", oid[0:2], oid[2:4], oid)

    def serve_lfs(self, record, path, repo, body):
        json_type = [("Content-Type", LFS_MEDIA_TYPE)]
        if path.endswith(LFS_BATCH):
            if self.command != "POST":
                self.reply(record, 405, "Method Not Allowed", [], b"")
                return
            try:
                request = json.loads(body)
                objects = request["objects"]
            except (ValueError, KeyError, TypeError):
                answer = json.dumps({"message": "invalid batch request"}).encode()
                self.reply(record, 422, "Unprocessable Entity", json_type, answer)
                return
            base = "http://127.0.0.1:%d/%s" % (self.server.server_address[1], repo)
            header = {}
            if self.headers.get("Authorization"):
                header["Authorization"] = self.headers["Authorization"]
            answers = []
            for obj in objects:
                oid, size = str(obj.get("oid", "")), obj.get("size")
                stored = self.lfs_path(repo, oid) if re.fullmatch(r"[0-9a-f]{64}", oid) else None
                if stored and os.path.isfile(stored) and os.path.getsize(stored) == size:
                    answers.append({
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {"download": {
                            "href": "%s/info/lfs/objects/%s" % (base, oid),
                            "header": header,
                            "expires_in": 3600,
                        }},
                    })
                else:
                    answers.append({
                        "oid": oid,
                        "size": size,
                        "error": {"code": 404, "message": "Object does not exist"},
                    })
            answer = json.dumps({"transfer": "basic", "objects": answers}).encode()
            self.reply(record, 200, "OK", json_type, answer)
            return
        oid = LFS_OBJECT.search(path).group("oid")
        stored = self.lfs_path(repo, oid)
        if self.command != "GET" or not os.path.isfile(stored):
            self.reply(record, 404, "Not Found", [], b"no such object\n")
            return
        with open(stored, "rb") as f:
            data = f.read()
        if oid in self.config.lfs_corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.reply(record, 200, "OK", [("Content-Type", "application/octet-stream")], data)

    def reply(self, record, status, reason, headers, body):
        record["status"] = status
        record["bytes"] = len(body)
        self.config.log(record)
        try:
            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def parse_cgi(output):
    """(status, reason, headers, body) of a CGI response; status is None
    when the output has no header block."""
    ends = [
        (idx, len(sep))
        for sep in (b"\r\n\r\n", b"\n\n")
        if (idx := output.find(sep)) >= 0
    ]
    if not ends:
        return None, None, [], b""
    idx, seplen = min(ends)
    head, body = output[:idx], output[idx + seplen:]
    status, reason, headers = 200, "OK", []
    for line in head.decode("latin-1").splitlines():
        if not line.strip():
            continue
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        lower = name.lower()
        if lower == "status":
            code, _, text = value.partition(" ")
            status, reason = int(code), text or None
        elif lower in ("content-length", "transfer-encoding", "connection"):
            continue
        else:
            headers.append((name, value))
    return status, reason, headers, body


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Parallel clients open many connections at once; the default backlog
    # of 5 would make the kernel drop some of them.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            if self.config.verbose:
                super().handle_error(request, client_address)
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(
        description="git smart-HTTP server on 127.0.0.1 (git http-backend as CGI)"
    )
    parser.add_argument("--root", required=True, help="directory of bare repositories")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", help="require Basic auth with this password")
    parser.add_argument(
        "--token-env", metavar="VAR", help="read the --token from this variable"
    )
    parser.add_argument(
        "--public",
        action="append",
        default=[],
        metavar="REPO",
        help="org/name.git served without auth (repeatable)",
    )
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--log", help="append one JSON line per request")
    parser.add_argument(
        "--lfs-corrupt",
        action="append",
        default=[],
        metavar="OID",
        help="serve this LFS object with a changed byte (repeatable)",
    )
    parser.add_argument(
        "--redirect-to",
        metavar="URL",
        help="answer every request with 302 to URL + the request's path (a moved forge)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        parser.error("--root %s is not a directory" % args.root)
    if args.token_env:
        if args.token is not None:
            parser.error("--token and --token-env exclude each other")
        args.token = os.environ.get(args.token_env)
        if not args.token:
            parser.error("--token-env: %s is unset or empty" % args.token_env)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    server = Server(("127.0.0.1", args.port), Handler)
    server.config = Config(args)
    sys.stdout.write("listening on http://127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
