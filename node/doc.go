// Package node is an orchestrator node: a small supervisor process that owns
// the node's control endpoints, heartbeats and restarts, and a worker process
// (the same binary, re-executed) that holds tasks and client sessions and
// keeps every acknowledged change in the JetStream journal before answering.
//
// The supervisor answers at every moment of a restart, because the worker is
// a separate OS process it replaces; they talk over a Unix socket pair, not
// over NATS, so a NATS outage never makes a supervisor kill a healthy worker.
// Node holds no NATS code of its own: it reaches NATS through package bus.
package node
