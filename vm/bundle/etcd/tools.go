//go:build tools

// etcdctl and etcdutl are built from their upstream main packages; these
// imports keep their modules in the wrapper module's go.mod and go.sum.
package main

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
