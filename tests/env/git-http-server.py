#!/usr/bin/env python3
"""Serves git repositories over smart HTTP with git's own `git http-backend`, behind HTTP Basic auth.

    git-http-server.py ROOT USER PASSWORD [CERT KEY]   # prints its port (127.0.0.1), then serves
                                                       # (https with CERT and KEY, else http)

Tests use it to check that Weft fetches with the credentials of Argo CD's repository Secrets.

Environment (all optional):
    GIT_HTTP_PORT      the port to listen on (default: any free port)
    GIT_HTTP_LOG       a file that gets one line per request: "METHOD PATH AUTHORIZATION" (the header
                       as sent, "-" when none), so tests can see where credentials went
    GIT_HTTP_REDIRECT  a base URL: every request is answered with a 302 to that base + the request path
"""
import base64
import os
import ssl
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
EXPECTED = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LOG = os.environ.get("GIT_HTTP_LOG")
REDIRECT = os.environ.get("GIT_HTTP_REDIRECT")
BACKEND = os.path.join(subprocess.check_output(["git", "--exec-path"], text=True).strip(), "git-http-backend")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle_one(self):
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"{self.command} {self.path} {self.headers.get('Authorization') or '-'}\n")
        if REDIRECT:
            self.send_response(302)
            self.send_header("Location", REDIRECT.rstrip("/") + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("Authorization") != EXPECTED:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": USER,
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # Clients that fetch one commit by its id (kustomize's remote bases) may.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "uploadpack.allowAnySHA1InWant",
            "GIT_CONFIG_VALUE_0": "true",
        }
        out = subprocess.run([BACKEND], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = handle_one
    do_POST = handle_one


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("GIT_HTTP_PORT", "0"))), Handler)
if len(sys.argv) > 5:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
