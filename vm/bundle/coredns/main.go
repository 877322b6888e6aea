// Command coredns runs CoreDNS with its default plugin set, as upstream's main
// does; the wrapper module only pins the version.
package main

import (
	_ "github.com/coredns/coredns/core/plugin" // the default plugin set (zplugin.go upstream)
	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
