// Package integration runs restartcoord's deploy/compose.yaml topology (3
// NATS servers, init, 2 coordinators, 5 nodes, all from the FROM-scratch
// image restartcoord:dev) in Docker with testcontainers-go and drives it
// from the host with the restartcoord binary and the stock nats CLI.
//
// The tests are behind the build tag "integration":
//
//	make integration
//	TESTCONTAINERS_RYUK_DISABLED=true go test -tags integration -count=1 -v -timeout 20m ./integration/
//
// Without a Docker engine they skip. Without the tag the package is empty.
package integration
