// Command etcd runs the etcd server from its Go module, exactly as upstream's
// main does; the wrapper module only pins the version.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
