// Package deploy holds no code: its tests check the files that run
// twtrace's agent on a fleet against what they are read by. The
// Kubernetes manifests decode strictly into the Kubernetes API types and
// prometheus-operator's, the alerts run under promtool's unit tests, and
// every PromQL expression in the alerts and the Grafana dashboard names
// only metrics the agent exports (docs/deploy.md).
package deploy
