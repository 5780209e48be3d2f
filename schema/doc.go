// Package schema is the wire contract of restartcoord: subjects, message
// types, enums (phases, reasons, error codes), strict decoding and validation
// of every request, the snapshot format with its checksum, and the registry of
// state migrations.
//
// It imports only the standard library, so every other package (and any
// third-party tool) can depend on it. It does no I/O: it does not know NATS.
// CONTRACT.md is the human-readable form of what lives here.
package schema
