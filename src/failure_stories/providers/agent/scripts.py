"""The two small programs the agent runs on a node, in the toolbox's python3
(no kfs code is installed there).

THAWER is the agent container's main process. A frozen kubelet cannot serve
`exec`, so a thaw request cannot reach the node that way: it is an annotation
on the agent's own pod, which THAWER polls through the API server (the
container keeps running while its kubelet is stopped).

WATCHDOG freezes the kubelet itself, a moment after the exec that started it
has answered (that answer travels through the kubelet), and holds the deadline
set at freeze time. It moves itself into the
node's root cgroups (as the kubelet sees them), out of the agent container's,
so deleting the agent (or the run dying) does not take it along: the kubelet
is thawed at the deadline whatever happens to kfs."""

THAW_ANNOTATION = "kfs.dev/thaw"

# Polling is the agent's job here: it has no other channel while the kubelet sleeps.
THAWER = r"""
import json, os, signal, ssl, time, urllib.request
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
# The API server as kfs reaches it first (a host-network pod may have no route
# to the Service address), then as the cluster advertises it.
env = os.environ
servers = env.get("KFS_API_SERVERS", "").split() + [
    "https://%s:%s" % (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])]
path = "/api/v1/namespaces/%s/pods/%s" % (os.environ["POD_NAMESPACE"], os.environ["POD_NAME"])
tls = ssl.create_default_context(cafile=SA + "/ca.crt")
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

def started(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[19]

while True:
    try:
        auth = {"Authorization": "Bearer " + open(SA + "/token").read()}
        pod = None
        for server in servers:
            req = urllib.request.Request(server + path, headers=auth)
            try:
                pod = json.load(urllib.request.urlopen(req, context=tls, timeout=2))
                break
            except Exception:
                continue
        if pod is None:
            raise OSError("no API server answered")
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
pid, start, delay, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
root = "/proc/%d/root/sys/fs/cgroup" % pid  # the kubelet's: the node's root
for procs in glob.glob(root + "/cgroup.procs") + glob.glob(root + "/*/cgroup.procs"):
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    except OSError:
        pass

def signal_kubelet(sig):
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[19] == start:
                os.kill(pid, sig)
    except OSError:
        pass

# The exec that started this answers through the kubelet: let it finish first.
time.sleep(delay)
signal_kubelet(signal.SIGSTOP)
time.sleep(seconds)
signal_kubelet(signal.SIGCONT)
"""
