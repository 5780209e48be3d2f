// Package client is the Go client of a node's task API. Requests go through
// the node's JetStream request buffer (stream ORCH_REQUESTS), so a call made
// while the node restarts waits durably and is answered once the node is
// back, and a call made while a NATS server restarts is published again under
// the same request id until it gets in (the stream's duplicate window and the
// node's journal make every retry safe: nothing is applied twice). Replies
// come to one inbox subscription per Client; a reply lost in a reconnect is
// fetched from the copy the node keeps with the effect. A full buffer is an
// error at the moment of the call (ErrBufferFull), a request older than the
// buffer's expiration is answered ErrExpired, and a client of a node that
// never joined gets ErrNodeUnknown from New; restart notices reach the caller
// through WithNotices, and pings on orch.v1.client.<client_id>.ping are
// answered for as long as the Client is open.
package client
