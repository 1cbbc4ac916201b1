#!/usr/bin/env python3
"""Does every post reach a node's newest-64 list? Starts 3 release nodes in a
chain on loopback (ports 18100-18102, 19100-19102), writes 2,000 posts at
200/s to the first, polls the third's newest 64 posts from another thread
(SLEEP seconds between polls, default 0), then pages through the third's
whole list. Prints one JSON line: posts written, posts in the full listing,
posts never seen by the poller, and the gaps between polls.

    cargo build --release -p hearsay-cli && python3 scripts/newest64_check.py
    SLEEP=0.45 python3 scripts/newest64_check.py   # a poller slower than 64 posts
"""
import json, subprocess, sys, time, threading, urllib.request, os, shutil, re
B=os.environ.get("HEARSAY", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "hearsay"))
import tempfile
root=tempfile.mkdtemp(prefix="hearsay-newest64-")
procs=[]; urls=[]; addrs=[]
def get(u):
    with urllib.request.urlopen(u, timeout=10) as r: return json.load(r)
for i in range(3):
    d=f"{root}/n{i}"
    pid=subprocess.run([B,"init","--data-dir",d],capture_output=True,text=True).stdout
    port=18100+i; http=f"127.0.0.1:{port}"; listen=f"/ip4/127.0.0.1/tcp/{19100+i}"
    args=[B,"node","--data-dir",d,"--http",http,"--listen",listen,"--region",f"r{i}"]
    if i>0: args+=["--join",addrs[i-1]]
    procs.append(subprocess.Popen(args,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,env={**os.environ,"RUST_LOG":"warn"}))
    peer=re.findall(r"12D3\w+",pid)[0]
    addrs.append(f"{listen}/p2p/{peer}"); urls.append("http://"+http)
    time.sleep(1.5)
time.sleep(3)
def post(body):
    req=urllib.request.Request(urls[0]+"/api/v0/p",data=json.dumps({"author":"x","body":body}).encode(),headers={"content-type":"application/json"})
    with urllib.request.urlopen(req,timeout=10) as r: return json.load(r)
def items(b):
    b=b["body"]
    return b if isinstance(b,list) else b.get("posts",[])
seen=set(); gaps=[]; stop=False
def poll():
    last=time.time()
    while not stop:
        time.sleep(float(os.environ.get("SLEEP","0")))
        try:
            b=get(urls[2]+"/api/v0/p?limit=64")
            now=time.time(); gaps.append(now-last); last=now
            for p in items(b):
                seen.add(p["id"])
        except Exception as e: pass
t=threading.Thread(target=poll); t.start()
ids=[]; lock=threading.Lock()
def w(k):
    r=post(f"w{k}"); 
    d=r["body"]; d=d.get("post",d)
    with lock: ids.append(d["id"])
start=time.time(); ths=[]
for k in range(2000):
    s=start+k/200
    while time.time()<s: time.sleep(0.0005)
    th=threading.Thread(target=w,args=(k,)); th.start(); ths.append(th)
for th in ths: th.join()
time.sleep(2); stop=True; t.join()
# full listing at C
allc=set(); before=None
while True:
    u=urls[2]+"/api/v0/p?limit=500"+(f"&before={before}" if before else "")
    b=get(u); page=items(b)
    if not page: break
    allc.update(p["id"] for p in page); before=page[-1]["id"]
never=[i for i in ids if i not in seen]
gaps.sort()
print(json.dumps({"written":len(ids),"in_full_listing_at_C":len([i for i in ids if i in allc]),"never_in_newest64":len(never),"polls":len(gaps),"poll_gap_p50_ms":round(gaps[len(gaps)//2]*1e3,1),"poll_gap_max_ms":round(gaps[-1]*1e3,1),"polls_over_320ms":sum(g>0.32 for g in gaps)}))
for p in procs: p.kill()
for p in procs: p.wait()
shutil.rmtree(root, ignore_errors=True)
