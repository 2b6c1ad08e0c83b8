// Package e2e proves automatic HTTPS (issue 3) through the real edge binary
// and its TOML config: ACME issuance from Pebble over TLS-ALPN-01 and
// HTTP-01, start-up with the CA down, restarts that reuse the stored
// certificate, two replicas sharing one Redis behind a TCP load balancer,
// refusal of unconfigured names, and the port-80 redirect. It holds tests
// only; the library's own tests are in internal/tls.
package e2e
