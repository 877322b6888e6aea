//go:build tools

// kubeadm is built from its upstream main package next to the multi-call
// binary (it is only used to compare with `kubeadm init`); this import keeps
// its dependencies in the wrapper module's go.mod and go.sum.
package main

import _ "k8s.io/kubernetes/cmd/kubeadm"
