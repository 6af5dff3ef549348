"""The two small programs the agent runs on a node, in the toolbox's python3
(no kfs code is installed there).

THAWER is the agent container's main process. A frozen kubelet cannot serve
`exec`, so a thaw request cannot reach the node that way: it is an annotation
on the agent's own pod, which THAWER polls through the API server (the
container keeps running while its kubelet is stopped).

WATCHDOG holds the deadline set at freeze time. It moves itself into the
node's root cgroups (as the kubelet sees them), out of the agent container's,
so deleting the agent (or the run dying) does not take it along: the kubelet
is thawed at the deadline whatever happens to kfs."""

THAW_ANNOTATION = "kfs.dev/thaw"

# Polling is the agent's job here: it has no other channel while the kubelet sleeps.
THAWER = r"""
import json, os, signal, ssl, time, urllib.request
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
url = "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"],
    os.environ["POD_NAMESPACE"], os.environ["POD_NAME"])
tls = ssl.create_default_context(cafile=SA + "/ca.crt")
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

def started(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[19]

while True:
    try:
        token = open(SA + "/token").read()
        req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
        pod = json.load(urllib.request.urlopen(req, context=tls, timeout=2))
        wanted = (pod["metadata"].get("annotations") or {}).get("%(annotation)s", "")
        for item in wanted.split():
            pid, start = item.split(":")
            if started(int(pid)) == start:
                os.kill(int(pid), signal.SIGCONT)
    except Exception:
        pass
    time.sleep(0.5)
""".replace("%(annotation)s", THAW_ANNOTATION)

WATCHDOG = r"""
import glob, os, signal, sys, time
pid, start, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
root = "/proc/%d/root/sys/fs/cgroup" % pid  # the kubelet's: the node's root
for procs in glob.glob(root + "/cgroup.procs") + glob.glob(root + "/*/cgroup.procs"):
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    except OSError:
        pass
time.sleep(seconds)
try:
    with open("/proc/%d/stat" % pid) as f:
        if f.read().rsplit(")", 1)[1].split()[19] == start:
            os.kill(pid, signal.SIGCONT)
except OSError:
    pass
"""
