"""Load on the web app: concurrent clients segmenting on cached embeddings, on loopback only.

Starts ``medsamkit serve`` in its own process on 127.0.0.1 (a free port, a random token), opens
one image per client (each client is its own session: one encoder pass each), then for a bounded
time every client sends ``POST /api/images/{id}/segment`` with a random box, one request after
the other. Prints a markdown table: requests, errors (must be 0), latency p50/p95/max, throughput,
and the server process's memory (resident after the images are open, and its peak), with the
machine's load average before and after. Stops by itself.

``--propagate N`` also opens an N-slice volume and starts propagating an object through it when
the clients start: the table then shows the segment latencies while a propagation runs, and
how long the propagation took under that load.

    python benchmarks/bench_server.py --clients 8 --seconds 30 [--size 512] [--model litemedsam] [--propagate 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

HOST = "127.0.0.1"  # load goes to loopback only


def image_png(size: int, seed: int) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(50, 15, (size, size, 3)).clip(0, 255).astype(np.uint8), (7, 7), 0)
    for _ in range(4):
        c = rng.integers(size // 5, 4 * size // 5, 2)
        cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(size // 12, size // 6)),
                   tuple(int(v) for v in rng.integers(150, 250, 3)), -1)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


class Client:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()

    def upload(self, name: str, data: bytes) -> str:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, out = self.request("POST", "api/images", body, f"multipart/form-data; boundary={boundary}")
        assert status == 201, status
        return json.loads(out)["id"]


def volume_bytes(slices: int, size: int, folder: str) -> bytes:
    """A synthetic MR-like NIfTI with a ball through its middle slices."""
    from medsamkit.io import write_volume
    from medsamkit.io.geometry import Geometry

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (slices, size, size)).clip(1, None)
    zz, yy, xx = np.mgrid[:slices, :size, :size]
    vol[(xx - size / 2) ** 2 + (yy - size / 2) ** 2 + ((zz - slices / 2) * size / slices) ** 2 < (size / 4) ** 2] = 800
    path = os.path.join(folder, "volume.nii.gz")
    write_volume(path, vol.astype(np.int16), Geometry(spacing=(1.0, 1.0, 1.0)))
    with open(path, "rb") as f:
        return f.read()


def open_volume(client: Client, slices: int, size: int) -> str:
    """Upload the volume and add an object on its middle slice, to be propagated over all slices."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        session = client.upload("volume.nii.gz", volume_bytes(slices, size, folder))
    body = {"box": [size // 4 - 4, size // 4 - 4, 3 * size // 4 + 4, 3 * size // 4 + 4], "slice": slices // 2,
            "z_range": [0, slices - 1]}
    client.request("POST", f"api/images/{session}/objects", json.dumps(body).encode(), "application/json")
    return session


def memory_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def start_server(model: str, clients: int) -> tuple[subprocess.Popen, str, str]:
    token = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "medsamkit.cli.main", "-q", "serve", "--host", HOST, "--port", "0",
                             "--token", token, "--model", model, "--max-sessions", str(clients + 1)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    line = proc.stdout.readline()
    match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, match.group(1), token


def run_client(client: Client, session: str, size: int, deadline: float, seed: int, out: dict) -> None:
    rng = np.random.default_rng(seed)
    latencies, errors = [], []
    while time.perf_counter() < deadline:
        x0, y0 = rng.integers(0, size // 2, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        body = json.dumps({"boxes": [[int(x0), int(y0), int(min(x0 + w, size)), int(min(y0 + h, size))]]}).encode()
        start = time.perf_counter()
        try:
            status, data = client.request("POST", f"api/images/{session}/segment", body, "application/json")
            if status != 200 or not data.startswith(b"\x89PNG"):
                errors.append(f"status {status}")
        except (urllib.error.URLError, OSError) as exc:
            errors.append(str(exc))
        latencies.append(time.perf_counter() - start)
    out[seed] = (latencies, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the clients send requests")
    parser.add_argument("--size", type=int, default=512, help="side of each client's (synthetic) image in pixels")
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--propagate", type=int, default=0, metavar="N",
                        help="also propagate through an N-slice volume while the clients run (0: no)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    proc, base, token = start_server(args.model, args.clients + (1 if args.propagate else 0))
    try:
        client = Client(base, token)
        start = time.perf_counter()
        sessions = [client.upload(f"client{i}.png", image_png(args.size, i)) for i in range(args.clients)]
        open_seconds = time.perf_counter() - start
        for s in sessions:  # one warm-up decode per session
            client.request("POST", f"api/images/{s}/segment", json.dumps({"boxes": [[10, 10, 100, 100]]}).encode(),
                           "application/json")
        volume = open_volume(client, args.propagate, args.size) if args.propagate else None
        memory_open = memory_kb(proc.pid)
        results: dict = {}
        deadline = time.perf_counter() + args.seconds
        if volume is not None:
            _, data = client.request("POST", f"api/images/{volume}/propagate", b"{}", "application/json")
            job = json.loads(data)["id"]
        threads = [threading.Thread(target=run_client, args=(Client(base, token), s, args.size, deadline, i, results))
                   for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        job_status = None
        if volume is not None:
            _, data = client.request("GET", f"api/images/{volume}/jobs/{job}")
            job_status = json.loads(data)
        memory_end = memory_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    load_after = os.getloadavg()
    latencies = sorted(v for lat, _ in results.values() for v in lat)
    errors = [e for _, errs in results.values() for e in errs]
    q = statistics.quantiles(latencies, n=100)
    print(f"load average before: {load_before}; after: {load_after}; {os.cpu_count()} CPUs")
    print(f"{args.clients} sessions opened (upload + one encoder pass each) in {open_seconds:.1f} s")
    print()
    print("| clients | image | seconds | requests | errors | p50 ms | p95 ms | max ms | requests/s | "
          "server RSS after open MB | server peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {args.size}x{args.size} | {args.seconds:g} | {len(latencies)} | {len(errors)} | "
          f"{1000 * q[49]:.0f} | {1000 * q[94]:.0f} | {1000 * latencies[-1]:.0f} | {len(latencies) / args.seconds:.1f} | "
          f"{memory_open['VmRSS'] / 1024:.0f} | {memory_end['VmHWM'] / 1024:.0f} |")
    if job_status is not None:
        print()
        print(f"meanwhile, a propagation through a {args.propagate}-slice {args.size}x{args.size} volume: "
              f"{job_status['state']}, {job_status['done']}/{job_status['total']} slices in {job_status['seconds']:.1f} s")
    if errors:
        print("errors:", sorted(set(errors))[:5])
        sys.exit(1)


if __name__ == "__main__":
    main()
