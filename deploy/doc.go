// Package deploy holds the files that run prefork outside a developer's
// shell, and the tests that keep them consistent with each other and with
// the supervisor's flags:
//
//	systemd/prefork.service             Type=notify unit: drain on stop, HUP reload, hardening
//	systemd/prefork.toml                its settings, /etc/prefork/prefork.toml (-config)
//	systemd/prefork.socket              socket activation of :8080
//	kubernetes/deployment.yaml          one supervisor per pod, -workers = CPU limit
//	kubernetes/service.yaml             ClusterIP service on the http port
//	kubernetes/pdb.yaml                 PodDisruptionBudget
//	kubernetes/hpa.yaml                 autoscaling/v2 on CPU
//	container/Dockerfile                static build, distroless non-root runtime
//	container/Dockerfile.dockerignore   build-context filter for that Dockerfile
//
// It is a module of its own so that the supervisor's module never depends on
// k8s.io/api. Run its tests from this directory:
//
//	cd deploy && go test ./...
//
// The tests decode every manifest strictly into the real Kubernetes types,
// parse the units, their -config file and the Dockerfile, cross-check
// ports, grace periods and worker counts, run `systemd-analyze verify` when it is installed, and fail
// if a file in this directory is read by no test.
package deploy
