// Package coordinator decides restarts across a fleet: which nodes a
// rolling restart takes next under a disruption budget, and what to do
// about a node whose worker will not become healthy (the escalation ladder,
// up to a cluster-wide circuit breaker).
//
// Its policies are pure values: facts and a clock in, a decision, a delay
// and a reason out, no I/O, so they are tested exhaustively without NATS.
// The executors that act on the decisions (and the leader lease, membership
// and endpoints) sit around them and reach NATS only through package bus.
package coordinator
