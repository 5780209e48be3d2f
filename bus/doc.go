// Package bus is everything that touches nats.go and nats-server for the
// core: connecting with reconnect settings that ride a server restart, the
// embedded server (single and a loopback cluster for tests), init of the
// streams, buckets and object store and the start-up check of them, typed
// request-reply with the contract's error envelope, micro service helpers and
// TTL leases with fencing tokens.
//
// It holds no policy: node and coordinator decide, bus carries.
package bus
