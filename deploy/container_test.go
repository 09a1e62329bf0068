package deploy

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	dockerfileFile   = "container/Dockerfile"
	dockerignoreFile = "container/Dockerfile.dockerignore"
	// repoRoot is the Docker build context, seen from deploy/.
	repoRoot = ".."
)

func loadDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	df, err := parseDockerfile(string(readFile(t, dockerfileFile)))
	if err != nil {
		t.Fatalf("%s: %v", dockerfileFile, err)
	}
	if len(df.stages) < 2 {
		t.Fatalf("want a multi-stage build (builder + runtime), have %d FROM", len(df.stages))
	}
	return df
}

func TestDockerfileBuildStage(t *testing.T) {
	df := loadDockerfile(t)
	build := df.stages[0]
	if !strings.HasPrefix(build.image, "golang:") {
		t.Errorf("first stage FROM %s: want a golang builder", build.image)
	}

	for _, in := range build.all("ENV") {
		if envAssignments(in.args)["CGO_ENABLED"] == "0" {
			t.Error("ENV CGO_ENABLED=0: the supervisor would be built as a Go executable, which can lose a signal during an upgrade")
		}
	}
	var runs strings.Builder
	for _, in := range build.all("RUN") {
		runs.WriteString(in.args + "\n")
	}
	// The worker without cgo: the runtime image has no libc for a dynamic
	// binary. The supervisor as make build builds it, linked statically.
	if !regexp.MustCompile(`CGO_ENABLED=0 go build [^\n&;]*\./cmd/worker\b`).MatchString(runs.String()) {
		t.Error("no `CGO_ENABLED=0 go build ... ./cmd/worker`")
	}
	if !regexp.MustCompile(`scripts/build-supervisor -static /out/supervisor\b`).MatchString(runs.String()) {
		t.Error("no `scripts/build-supervisor -static /out/supervisor`: the supervisor is not built as it ships, or not static")
	}
	if fi, err := os.Stat(filepath.Join(repoRoot, "scripts", "build-supervisor")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("scripts/build-supervisor is not an executable of the repository: %v", err)
	}
	for _, pkg := range []string{"./cmd/supervisor", "./cmd/worker"} {
		// The build context is the repository root.
		if fi, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(pkg))); err != nil || !fi.IsDir() {
			t.Errorf("%s is not a directory of the repository: %v", pkg, err)
		}
	}
	for _, in := range build.all("COPY") {
		for _, src := range strings.Fields(in.args) {
			if src == "go.mod" || src == "go.sum" {
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
					t.Errorf("COPY %s: not in the build context: %v", src, err)
				}
			}
		}
	}

	t.Run("Go version", func(t *testing.T) {
		m := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(build.image)
		if m == nil {
			t.Skipf("builder image %s has no version tag to compare", build.image)
		}
		gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		want := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(gomod)
		if want == nil {
			t.Fatal("no go directive in the repository's go.mod")
		}
		have := [2]int{atoi(m[1]), atoi(m[2])}
		need := [2]int{atoi(string(want[1])), atoi(string(want[2]))}
		if have[0] < need[0] || have[0] == need[0] && have[1] < need[1] {
			t.Errorf("builder Go %d.%d is older than go.mod's go %d.%d", have[0], have[1], need[0], need[1])
		}
	})
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestDockerfileRuntimeStage(t *testing.T) {
	df := loadDockerfile(t)
	final := df.stages[len(df.stages)-1]
	p := loadDeployment(t)
	svc := loadService(t)

	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") && final.image != "scratch" {
		t.Errorf("runtime FROM %s: want distroless/static or scratch", final.image)
	}

	t.Run("non-root user", func(t *testing.T) {
		users := final.all("USER")
		if len(users) == 0 {
			t.Fatal("no USER: the container would run as root")
		}
		user, _, _ := strings.Cut(users[len(users)-1].args, ":")
		uid, err := strconv.ParseInt(user, 10, 64)
		if err != nil {
			t.Fatalf("USER %s: want a numeric uid so that Kubernetes' runAsNonRoot can verify it", user)
		}
		if uid == 0 {
			t.Fatal("USER 0 is root")
		}
		if k8s := runAsUser(p.deployment.Spec.Template.Spec.SecurityContext, p.container.SecurityContext); k8s != nil && *k8s != uid {
			t.Errorf("USER %d, but the Deployment runs as %d", uid, *k8s)
		}
	})

	entry := lastExecForm(t, final, "ENTRYPOINT")
	t.Run("supervisor is PID 1", func(t *testing.T) {
		if len(entry) == 0 || entry[0] != supervisorPath {
			t.Fatalf("ENTRYPOINT %v: want [%q] in exec form, so the supervisor itself is PID 1 and gets SIGTERM", entry, supervisorPath)
		}
		if entry[0] != svc.argv[0] {
			t.Errorf("ENTRYPOINT %s, but the systemd unit runs %s", entry[0], svc.argv[0])
		}
		// The default COMMAND is the worker binary beside the supervisor.
		dir := path.Dir(entry[0])
		for _, bin := range []string{"supervisor", "worker"} {
			if !copiesInto(df, final, bin, dir) {
				t.Errorf("final stage does not COPY --from a build stage %s into %s/", bin, dir)
			}
		}
	})

	t.Run("ports agree", func(t *testing.T) {
		var exposed []int
		for _, in := range final.all("EXPOSE") {
			for _, f := range strings.Fields(in.args) {
				n, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
				if err != nil {
					t.Fatalf("EXPOSE %s: %v", f, err)
				}
				exposed = append(exposed, n)
			}
		}
		if !slices.Contains(exposed, int(p.port)) {
			t.Errorf("EXPOSE %v lacks the Deployment's containerPort %d", exposed, p.port)
		}
		if !slices.Contains(exposed, svc.listen) {
			t.Errorf("EXPOSE %v lacks the systemd unit's port %d", exposed, svc.listen)
		}
		cmd := lastExecForm(t, final, "CMD")
		listen, ok := flagValue(cmd, "listen")
		if !ok {
			t.Fatalf("CMD %v: no -listen; the supervisor's default :3000 is not exposed", cmd)
		}
		port, err := listenPort(listen)
		if err != nil || !slices.Contains(exposed, port) {
			t.Errorf("CMD -listen %s is not an EXPOSEd port %v (%v)", listen, exposed, err)
		}
	})
}

func lastExecForm(t *testing.T, st stage, cmd string) []string {
	t.Helper()
	ins := st.all(cmd)
	if len(ins) == 0 {
		t.Fatalf("final stage has no %s", cmd)
	}
	argv, err := execForm(ins[len(ins)-1].args)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return argv
}

// copiesInto reports whether st has a COPY --from=<earlier stage> whose
// sources include a file named bin and whose destination is dir.
func copiesInto(df *dockerfile, st stage, bin, dir string) bool {
	for _, in := range st.all("COPY") {
		f := strings.Fields(in.args)
		var from string
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			if v, ok := strings.CutPrefix(f[0], "--from="); ok {
				from = v
			}
			f = f[1:]
		}
		known := slices.ContainsFunc(df.stages, func(s stage) bool { return s.name == from && s.name != st.name })
		if !known || len(f) < 2 {
			continue
		}
		srcs, dst := f[:len(f)-1], f[len(f)-1]
		for _, src := range srcs {
			if path.Base(src) != bin {
				continue
			}
			if strings.HasSuffix(dst, "/") && path.Clean(dst) == dir || dst == path.Join(dir, bin) {
				return true
			}
		}
	}
	return false
}

func TestDockerignore(t *testing.T) {
	rules := parseDockerignore(string(readFile(t, dockerignoreFile)))
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
	// What the build stage needs must reach it.
	for _, p := range []string{
		"go.mod", "go.sum", "scripts/build-supervisor",
		"cmd/supervisor/main.go", "cmd/supervisor/archive_main.go", "cmd/worker/main.go",
		"cluster/cluster.go", "internal/ipc/ipc.go", "internal/listener/listener_linux.go",
	} {
		if ignored(rules, p) {
			t.Errorf("%s is excluded from the build context", p)
		}
	}
	// And what only bloats the context or leaks history must not.
	for _, p := range []string{".git/HEAD", "deploy/go.mod", "internal/ipc/ipc_test.go", "internal/ipc/testdata/fuzz/x"} {
		if !ignored(rules, p) {
			t.Errorf("%s is sent to the builder", p)
		}
	}
}
