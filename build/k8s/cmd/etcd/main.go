// Command etcd is etcd's server, built from the go.etcd.io/etcd/server/v3 module
// that Kubernetes itself pins, so the control plane never needs a downloaded binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
