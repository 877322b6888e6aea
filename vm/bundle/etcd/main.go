// Command etcd runs the etcd server from its Go module, exactly as upstream's
// main does; the wrapper module only pins the version.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

// Named etcd where ps and pgrep look (see procname.go), not after the
// descriptor it was started through.
func init() {
	setProcessName("etcd")
}

func main() {
	etcdmain.Main(os.Args)
}
