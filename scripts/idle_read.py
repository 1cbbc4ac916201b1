#!/usr/bin/env python3
"""Reading the newest 64 posts of an idle node whose current minute bucket
holds many posts. Starts one release node on loopback (port 18200), writes
POSTS posts (default 7,000) with 32 writer threads as fast as it takes them,
waits a second, then times READS (default 300) sequential reads of GET /api/v0/p?limit=64.
Prints one JSON line: posts written, seconds they took, read p50/p90/p99/max
in ms. HEARSAY names the binary (default target/release/hearsay), so two
builds can be compared on one machine in one sitting.

    cargo build --release -p hearsay-cli && python3 scripts/idle_read.py
"""
import json, os, subprocess, tempfile, threading, time, urllib.request

B = os.environ.get("HEARSAY", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "hearsay"))
POSTS = int(os.environ.get("POSTS", "7000"))
root = tempfile.mkdtemp(prefix="hearsay-idle-read-")
subprocess.run([B, "init", "--data-dir", root], capture_output=True, check=True)
url = "http://127.0.0.1:18200"
node = subprocess.Popen([B, "node", "--data-dir", root, "--http", "127.0.0.1:18200", "--listen", "/ip4/127.0.0.1/tcp/0"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/api/v0/health", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    def post(body):
        req = urllib.request.Request(url + "/api/v0/p", data=json.dumps({"author": "reader", "body": body}).encode(),
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
    def writer(w):
        for k in range(w, POSTS, 32):
            post(f"post {k}: a post of about a hundred bytes, as people write them, no more and no less.")
    start = time.time()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(32)]
    for t in threads: t.start()
    for t in threads: t.join()
    wrote_s = time.time() - start
    time.sleep(1)
    lat = []
    for _ in range(int(os.environ.get("READS", "300"))):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + "/api/v0/p?limit=64", timeout=30) as r:
            r.read()
        lat.append((time.perf_counter() - t0) * 1e3)
    lat.sort()
    pick = lambda p: round(lat[round((len(lat) - 1) * p)], 3)
    print(json.dumps({"posts": POSTS, "write_s": round(wrote_s, 1),
                      "read_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(lat[-1], 3)}}))
finally:
    node.kill()
    node.wait()
