package main

// The container image is FROM scratch, with no CA bundle on disk: the
// fallback roots are used when the system has none (TLS to NATS).
import _ "golang.org/x/crypto/x509roots/fallback"
