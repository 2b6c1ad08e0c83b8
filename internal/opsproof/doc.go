// Package opsproof holds no code: its tests prove the operator-facing files
// (deploy/: the Grafana dashboard, the Prometheus alert rules, the systemd
// unit, the compose example, the Dockerfile, the Helm chart and the plain
// Kubernetes manifests rendered from it; docs/: the operations guide
// and the nginx migration guide with its examples) against real tools and a
// real running edge scraped by a real Prometheus.
package opsproof
