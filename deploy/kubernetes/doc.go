// Package kubernetes holds no code: it exists only for manifests_test.go,
// which decodes the Kubernetes manifests of this directory strictly into the
// Kubernetes API types and cross-checks them against each other and against
// the restartcoord binary's verbs and flags.
package kubernetes
