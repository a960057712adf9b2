"""Starts the built agent (dist/agent.pyz) as a throw-away service on 127.0.0.1 inside the
test's sandbox, calls its API, and stops it: python3 integration_test.py dist/agent.pyz"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def main():
    bundle = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        command = [sys.executable, bundle, "--port", "0", "--port-file", port_file]
        service = subprocess.Popen(command)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(port_file) or not open(port_file).read():
                if service.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the service did not start (exit %s)" % service.poll())
                time.sleep(0.02)
            port = int(open(port_file).read())
            assert get(port, "/health") == (200, {"status": "ok"})
            status, body = get(port, "/plan?goal=ship%20v2")
            assert status == 200, (status, body)
            assert [s["stage"] for s in body["steps"]] == ["understand", "draft", "review", "ship"]
            assert body["steps"][-1]["tools"] == ["deploy"], body
            assert get(port, "/plan?goal=")[0] == 400
            assert get(port, "/nope")[0] == 404
            print("integration: 4 requests answered by the service on port %d" % port)
        finally:
            service.terminate()
            service.wait(timeout=10)


if __name__ == "__main__":
    main()
