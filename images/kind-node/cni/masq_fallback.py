"""TEMPORARY stand-in for images/workloads/masq_agent.py (written on another
branch): the node image ships this file as masq_agent.py only while that one is
missing from the checkout. The lead deletes this file once masq_agent.py is
merged. Same command line; it ignores --configmap: the chain RETURNs for each
--cluster-cidr and MASQUERADEs everything else leaving the node."""

from __future__ import annotations

import argparse
import subprocess
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", required=True)
    parser.add_argument("--configmap", default="")
    parser.add_argument("--cluster-cidr", action="append", default=[])
    parser.add_argument("--api-server", default="")
    args = parser.parse_args()
    rules = [f":{args.chain} - [0:0]"]
    rules += [f"-A {args.chain} -d {cidr} -j RETURN" for cidr in args.cluster_cidr]
    rules.append(f"-A {args.chain} -j MASQUERADE")
    jump = ["POSTROUTING", "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", args.chain]
    while True:
        text = "*nat\n" + "\n".join(rules) + "\nCOMMIT\n"
        subprocess.run(["iptables-restore", "--noflush"], input=text, text=True, check=True)
        check = ["iptables", "-t", "nat", "-C", *jump]
        if subprocess.run(check, check=False, stderr=subprocess.DEVNULL).returncode:
            subprocess.run(["iptables", "-t", "nat", "-A", *jump], check=True)
        time.sleep(5)


if __name__ == "__main__":
    main()
