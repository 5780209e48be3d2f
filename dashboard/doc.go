// Package dashboard is the fleet's live web page: a read-only NATS client
// that reads what an operator reads (orch.v1.cluster.nodes, .health,
// .history, .report, .roll.status, the ORCH_ALERTS and ORCH_EVENTS streams),
// follows heartbeats, restart and roll events and alerts as they happen, and
// serves an HTML page rendered on the server plus a stream of server-sent
// events that update it without a reload. Every asset is embedded, so it
// works offline. It is not a control panel (it sends no action) and it does
// not import the coordinator: it sees the fleet only through the wire
// contract, as any other client would.
package dashboard
