"""The real node: containerd + runc, the CNI bridge, kubelet and kube-proxy on
this host. Everything lives under the state directory or /run/kfs, so `down`
can find and undo all of it: pods (through CRI, so CNI DEL runs), processes,
mounts, cgroups, iptables chains, the bridge and the sysctls."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import psutil
import yaml

from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import commands, netns_dir
from failure_stories.host.processes import Supervisor
from failure_stories.providers.base import REAL_NODE_LABEL
from failure_stories.providers.local import binaries, hostnet
from failure_stories.providers.local import layout as L

RUN_DIR = Path("/run/kfs")
# How this cluster is named among those relying on /run/netns (host.netns_dir).
NETNS_HOLDER = "local-cluster"
CONTAINERD_SOCK = RUN_DIR / "containerd" / "containerd.sock"
CGROUP_ROOT = "kfs"  # kubelet's pods go under /sys/fs/cgroup/<controller>/kfs
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CONTAINERD_NS = "k8s.io"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")
CONFLIST = "05-kfs.conflist"
OLD_CONFLIST = "10-kfs.conflist"  # the bridge masqueraded pod egress then


def _cni_bin_dir() -> str:
    for d in CNI_BIN_DIRS:
        if Path(d, "bridge").exists():
            return d
    raise MissingToolError("CNI plugins", "apt-get install containernetworking-plugins")


def host_tools() -> None:
    for tool, pkg in (
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("conntrack", "conntrack"),
        ("ip", "iproute2"),
    ):
        if shutil.which(tool) is None:
            raise MissingToolError(tool, f"apt-get install {pkg} (or run `make setup`)")
    _cni_bin_dir()


def _write_if_changed(path: Path, text: str) -> Path:
    """Rewrite a config only when it changed: kube-proxy exits when its file is touched."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


class RealNode:
    COMPONENTS = ("containerd", "kubelet", "kube-proxy")

    def __init__(self, paths: L.Paths, sup: Supervisor) -> None:
        self.paths = paths
        self.sup = sup
        self.dir = paths.root / "node"

    # -- configuration ------------------------------------------------------------
    def _containerd_config(self) -> Path:
        from failure_stories.images import PAUSE_IMAGE

        root, cni = self.dir / "containerd", self.dir / "cni"
        conf = f"""version = 2
root = "{root}"
state = "{RUN_DIR / "containerd"}"
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_unprivileged_ports = true
  # This host does not let even root lower oom_score_adj below its own value;
  # clamp instead of failing every sandbox (runc: oom_score_adj Permission denied).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{_cni_bin_dir()}"
    conf_dir = "{cni / "net.d"}"
"""
        return _write_if_changed(self.dir / "containerd.toml", conf)

    def _cni_config(self) -> None:
        net = self.dir / "cni" / "net.d"
        net.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "kfs",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": L.BRIDGE,
                    "isGateway": True,
                    # Pod egress SNAT is the masq agent's (masq_addon), a component
                    # whose setting stories change, as on a cloud node.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": L.POD_CIDR, "gateway": L.BRIDGE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                # Explicit FORWARD accepts, so a host whose FORWARD policy is DROP
                # (Docker sets that) still forwards pod traffic.
                {"type": "firewall", "backend": "iptables"},
            ],
        }
        _write_if_changed(net / CONFLIST, json.dumps(conflist, indent=2))
        # containerd uses the first file by name: an older kfs on this host that
        # rewrites the old name (bridge masquerading) must not take over new pods.
        (net / OLD_CONFLIST).unlink(missing_ok=True)

    def _kubelet_config(self) -> Path:
        pki = self.paths.pki
        conf = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "x509": {"clientCAFile": str(pki / "ca.crt")},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
            "clusterDomain": "cluster.local",
            "readOnlyPort": 0,
            "address": L.BRIDGE_IP,
            "healthzBindAddress": "127.0.0.1",
            "nodeLeaseDurationSeconds": L.NODE_LEASE_SECONDS,
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "serializeImagePulls": False,
            # Images are imported, never pulled: garbage collection must not take them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "resolvConf": "/etc/resolv.conf",
            "shutdownGracePeriod": "0s",
            "containerLogMaxSize": "10Mi",
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "localStorageCapacityIsolation": True,
        }
        return _write_if_changed(self.dir / "kubelet.yaml", yaml.safe_dump(conf))

    def _kube_proxy_config(self) -> Path:
        conf = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {
                "kubeconfig": str(self.paths.kubeconfigs / "kube-proxy.kubeconfig")
            },
            "hostnameOverride": L.REAL_NODE,
            "clusterCIDR": L.CLUSTER_CIDR,
            "bindAddress": L.BRIDGE_IP,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # Leave the host's conntrack sysctls alone (0 = do not set).
            "conntrack": {"maxPerCore": 0, "min": 0},
            # localhost NodePorts would flip route_localnet on the host; not needed.
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s", "localhostNodePorts": False},
        }
        return _write_if_changed(self.dir / "kube-proxy.yaml", yaml.safe_dump(conf))

    # -- lifecycle ------------------------------------------------------------------
    def prepare_host(self) -> None:
        """Sysctls and the pod bridge: needed before the API server starts."""
        host_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        hostnet.apply_sysctls(self.dir / "sysctls.json")
        hostnet.ensure_bridge()
        hostnet.fence_routes()
        # Before containerd pins the first pod's namespace (see netns_dir).
        netns_dir.ensure_mount_point(NETNS_HOLDER)

    def _ensure_cgroup_root(self) -> None:
        """The kubelet wants its cgroup root to exist in every v1 hierarchy."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if not (hierarchy / "cgroup.procs").exists():
                continue
            target = hierarchy / CGROUP_ROOT
            target.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                # A new cpuset starts empty and would admit no task; inherit the parent's.
                if (hierarchy / name).exists() and not (target / name).read_text().strip():
                    (target / name).write_text((hierarchy / name).read_text())

    def start(self) -> None:
        self._ensure_cgroup_root()
        self._cni_config()
        self.sup.start("containerd", ["containerd", "--config", str(self._containerd_config())])
        wait_for(
            lambda: self._crictl("info", check=False) is not None,
            what="containerd's CRI socket",
            timeout=30,
        )
        self.import_images()
        self.sup.start(
            "kubelet",
            [
                str(binaries.path("kubelet")),
                f"--config={self._kubelet_config()}",
                f"--kubeconfig={self.paths.kubeconfigs / 'kubelet.kubeconfig'}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={L.REAL_NODE}",
                f"--node-ip={L.BRIDGE_IP}",
                f"--node-labels={REAL_NODE_LABEL}=true",
                "--v=1",
            ],
        )
        self.sup.start(
            "kube-proxy",
            [
                str(binaries.path("kube-proxy")),
                f"--config={self._kube_proxy_config()}",
                "--v=1",
            ],
        )

    def import_images(self, archives: dict[str, Path] | None = None) -> None:
        """The toolbox and pause images, or the given ones, into the node's containerd."""
        from failure_stories import images

        if archives is None:
            archives = images.build_images()
        images.import_images(archives, str(CONTAINERD_SOCK), CONTAINERD_NS)

    def _crictl(self, *args: str, check: bool = True) -> str | None:
        argv = [
            str(binaries.path("crictl")),
            "--runtime-endpoint",
            f"unix://{CONTAINERD_SOCK}",
            "--timeout",
            "20s",
            *args,
        ]
        try:
            return commands.run(argv, what=f"crictl {' '.join(args)}")
        except ProviderError:
            if check:
                raise
            return None

    def stop(self) -> None:
        """Undo everything start() and the pods did, even after a crash."""
        if self.sup.alive("kubelet"):
            self.sup.stop("kubelet")
        if self.sup.alive("containerd"):
            # Through CRI, so the CNI plugins get their DEL and free IPs and chains.
            self._crictl("stopp", *self._sandboxes(), check=False)
            self._crictl("rmp", "--force", "--all", check=False)
        self.sup.stop("kube-proxy")
        if binaries.path("kube-proxy").exists():
            commands.run([str(binaries.path("kube-proxy")), "--cleanup"], check=False, timeout=60)
        self.sup.stop("containerd")
        self._kill_shims()
        self._unmount_all()
        for problem in netns_dir.sweep(NETNS_HOLDER):
            print(f"kfs: warning: {problem}")
        hostnet.sweep_iptables()
        hostnet.delete_bridge()
        hostnet.unfence_routes()
        self._remove_cgroups()
        hostnet.restore_sysctls(self.dir / "sysctls.json")
        shutil.rmtree(RUN_DIR, ignore_errors=True)

    def _sandboxes(self) -> list[str]:
        out = self._crictl("pods", "-q", check=False) or ""
        return out.split()

    def _kill_shims(self) -> None:
        """containerd-shim processes outlive containerd; end the ones it started."""
        marker = str(RUN_DIR)
        victims = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or ())
            if "containerd-shim" in cmd and marker in cmd:
                victims.append(proc)
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

        def gone() -> bool:
            # is_running() compares start times: a reused pid does not count.
            return not any(p.is_running() for p in victims)

        wait_for(gone, what="containerd shims to exit", timeout=20, interval=0.2)

    def mounts(self, netns: bool = True) -> list[str]:
        """Mount points under our directories, deepest first; pinned pod
        namespaces too (also ones a later mount covers) unless ``netns`` is off."""
        roots: tuple[str, ...] = (str(self.paths.root), str(RUN_DIR))
        if netns:
            roots += (f"{netns_dir.NETNS_DIR}/cni-",)
        points = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(roots):
                points.append(point)
        return sorted(points, key=len, reverse=True)

    def _unmount_all(self) -> None:
        for point in self.mounts(netns=False):
            if not commands.succeeds(["umount", point]):
                commands.run(["umount", "-l", point], check=False)

    def cgroup_dirs(self) -> list[Path]:
        return [p for p in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_ROOT}") if p.is_dir()]

    def _remove_cgroups(self) -> None:
        for top in self.cgroup_dirs():
            # rmdir works bottom-up on cgroupfs; files inside are virtual.
            for d in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def leftovers(self) -> dict[str, list[str]]:
        """What a clean `down` must leave empty; the e2e test checks each."""
        return {
            "processes": [n for n in NODE_COMPONENTS if self.sup.alive(n)],
            "mounts": self.mounts(),
            "veths": hostnet.host_veths(),
            "bridge": [L.BRIDGE] if hostnet.link_exists(L.BRIDGE) else [],
            "routes": hostnet.fenced_routes(),
            "iptables_chains": [f"{t}/{c}" for t, cs in hostnet.our_chains().items() for c in cs],
            "cgroups": [str(p) for p in self.cgroup_dirs()],
            "netns": netns_dir.leftovers(),
        }
