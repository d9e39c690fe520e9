"""`python -m export.serve` in a child process on a free loopback port, as users start it,
and the HTTP helpers the serving tests share."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    started = 0  # servers started in this process (tests/slow_rule.py reads it)

    def __init__(self, *argv, ready="/v1/models/davidnet", command=None, env=None, cwd=ROOT):
        """`command`: the server's command line before its flags (default: this Python's
        `-m export.serve`, with this repository on PYTHONPATH)."""
        Server.started += 1
        self.port, self.grpc_port = free_port(), free_port()
        command = command or [sys.executable, "-m", "export.serve"]
        self.proc = subprocess.Popen(
            # no drain unless a test asks for one (a later --drain-seconds wins)
            [*command, "--drain-seconds", "0", *argv,
             "--port", str(self.port), "--grpc-port", str(self.grpc_port)],
            cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT) if env is None else env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.request("GET", ready)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.stop()[1][-3000:]}")

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, method, path, payload=None):
        body = None if payload is None else (
            payload if isinstance(payload, bytes) else json.dumps(payload))
        status, answer = self.request(method, path, body)
        return status, json.loads(answer)

    def predict(self, payload, path="/v1/models/davidnet:predict"):
        return self.json("POST", path, payload)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_for(condition, timeout=30, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")
