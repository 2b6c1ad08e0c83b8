// Package conformance runs the outside tools that judge edge's HTTPS
// listener as a scanner or an HTTP/2 peer would: testssl.sh for the TLS
// policy (protocols, suites, known vulnerabilities) and h2spec for HTTP/2.
// It holds tests only, against the real edge binary, plus a deliberately
// weak TLS server that shows the testssl judgement can fail at all.
package conformance
