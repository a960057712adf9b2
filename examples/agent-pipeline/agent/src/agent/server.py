"""The agent's HTTP API: GET /health, GET /plan?goal=... (JSON). Binds 127.0.0.1 only."""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from agent.planner import plan


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            return self.reply(200, {"status": "ok"})
        if url.path == "/plan":
            goal = parse_qs(url.query).get("goal", [""])[0]
            try:
                return self.reply(200, {"goal": goal, "steps": plan(goal)})
            except ValueError as e:
                return self.reply(400, {"error": str(e)})
        return self.reply(404, {"error": "no such endpoint"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--port-file", help="write the port here once listening")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(server.server_address[1]))
    server.serve_forever()
