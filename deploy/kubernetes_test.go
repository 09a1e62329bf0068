package deploy

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// drainMargin is the slack required on top of preStop + -grace before the
// kubelet's SIGKILL, for the supervisor's own SIGKILL round and exit.
const drainMargin = 5 * time.Second

// decodeStrict decodes one manifest into a typed Kubernetes object. Unknown
// or duplicated fields are errors (sigs.k8s.io/yaml converts to JSON and
// decodes with DisallowUnknownFields), so a typo such as "readinesProbe"
// fails here instead of being silently dropped by the API server.
func decodeStrict(t *testing.T, rel string, obj runtime.Object, want schema.GroupVersionKind) {
	t.Helper()
	b := readFile(t, rel)
	if n := yamlDocuments(b); n != 1 {
		t.Fatalf("%s: want exactly one YAML document, have %d", rel, n)
	}
	if err := yaml.UnmarshalStrict(b, obj); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	if have := obj.GetObjectKind().GroupVersionKind(); have != want {
		t.Fatalf("%s: want %v, have %v", rel, want, have)
	}
}

// yamlDocuments counts the non-empty documents of a YAML stream.
func yamlDocuments(b []byte) int {
	n, content := 0, false
	for _, line := range bytes.Split(b, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		switch {
		case s == "---":
			if content {
				n++
			}
			content = false
		case s != "" && !strings.HasPrefix(s, "#"):
			content = true
		}
	}
	if content {
		n++
	}
	return n
}

// pod is the Deployment with the facts the other manifests depend on.
type pod struct {
	deployment appsv1.Deployment
	container  corev1.Container // the supervisor
	args       []string
	port       int32 // containerPort that -listen binds
	grace      time.Duration
}

func loadDeployment(t *testing.T) *pod {
	t.Helper()
	p := &pod{}
	decodeStrict(t, "kubernetes/deployment.yaml", &p.deployment, appsv1.SchemeGroupVersion.WithKind("Deployment"))
	cs := p.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want one container (the supervisor) per pod, have %d", len(cs))
	}
	p.container = cs[0]
	p.args = append(slices.Clone(p.container.Command), p.container.Args...)
	if len(p.container.Command) > 0 {
		// A command replaces the image's ENTRYPOINT: it must still be the
		// supervisor, as PID 1.
		if p.container.Command[0] != supervisorPath {
			t.Fatalf("command %v does not run %s", p.container.Command, supervisorPath)
		}
		p.args = p.args[1:]
	}

	listen, ok := flagValue(p.args, "listen")
	if !ok {
		t.Fatalf("args %v: no -listen (args replace the image's CMD, so its default is gone)", p.args)
	}
	port, err := listenPort(listen)
	if err != nil {
		t.Fatalf("-listen %q: %v", listen, err)
	}
	if _, ok := containerPort(p.container, intstr.FromInt32(int32(port))); !ok {
		t.Fatalf("-listen %s: port %d is not a declared containerPort", listen, port)
	}
	p.port = int32(port)

	g, ok := flagValue(p.args, "grace")
	if !ok {
		t.Fatalf("args %v: no -grace; the drain time must be explicit to size terminationGracePeriodSeconds", p.args)
	}
	if p.grace, err = time.ParseDuration(g); err != nil {
		t.Fatalf("-grace %q: %v", g, err)
	}
	return p
}

// containerPort resolves a probe or Service port (name or number) to one of
// the container's declared ports.
func containerPort(c corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, p := range c.Ports {
		if port.Type == intstr.String && p.Name == port.StrVal ||
			port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// selects reports whether sel selects the pods of the Deployment template.
func (p *pod) selects(t *testing.T, sel *metav1.LabelSelector) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(p.deployment.Spec.Template.Labels))
}

func TestDeployment(t *testing.T) {
	p := loadDeployment(t)
	d, c := p.deployment, p.container
	spec := d.Spec.Template.Spec

	if !p.selects(t, d.Spec.Selector) {
		t.Errorf("selector %v does not match template labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	if mode, ok := flagValue(p.args, "mode"); ok && !slices.Contains([]string{"rr", "shared", "reuseport"}, mode) {
		t.Errorf("-mode %q: want rr, shared or reuseport", mode)
	}
	if s := d.Spec.Strategy; s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil ||
		s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update must keep every pod serving until its replacement is ready (maxUnavailable: 0)")
	}

	t.Run("workers equal the CPU limit", func(t *testing.T) {
		cpu, ok := c.Resources.Limits[corev1.ResourceCPU]
		if !ok {
			t.Fatal("no CPU limit; -workers has nothing to match (runtime.NumCPU sees the node's CPUs, not the quota)")
		}
		if cpu.MilliValue()%1000 != 0 {
			t.Fatalf("CPU limit %s is not a whole number of cores", cpu.String())
		}
		w, ok := flagValue(p.args, "workers")
		if !ok {
			t.Fatal("no -workers arg")
		}
		n, err := strconv.Atoi(w)
		if err != nil {
			t.Fatalf("-workers %q: %v", w, err)
		}
		if want := cpu.MilliValue() / 1000; int64(n) != want {
			t.Errorf("-workers %d, want %d (the CPU limit %s)", n, want, cpu.String())
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("no %s request", r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("no %s limit", r)
			}
		}
	})

	t.Run("probes", func(t *testing.T) {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Fatal("want both a readiness and a liveness probe")
		}
		for name, pr := range map[string]*corev1.Probe{
			"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe,
		} {
			if pr == nil {
				continue
			}
			if pr.HTTPGet == nil {
				t.Errorf("%s: want httpGet", name)
				continue
			}
			if pr.HTTPGet.Path != "/health" {
				t.Errorf("%s: path %q, want /health", name, pr.HTTPGet.Path)
			}
			if port, ok := containerPort(c, pr.HTTPGet.Port); !ok {
				t.Errorf("%s: port %s is not a declared containerPort", name, pr.HTTPGet.Port.String())
			} else if port != p.port {
				t.Errorf("%s: port %d, but the supervisor serves on %d", name, port, p.port)
			}
		}
		// Workers have -ready-timeout to come up; the kubelet must not
		// restart the container before the supervisor itself gives up.
		if rt, ok := flagValue(p.args, "ready-timeout"); ok && c.StartupProbe != nil {
			d, err := time.ParseDuration(rt)
			if err != nil {
				t.Fatalf("-ready-timeout %q: %v", rt, err)
			}
			sp := c.StartupProbe
			budget := time.Duration(sp.InitialDelaySeconds+sp.PeriodSeconds*sp.FailureThreshold) * time.Second
			if budget < d {
				t.Errorf("startupProbe allows %v, less than -ready-timeout %v", budget, d)
			}
		}
	})

	t.Run("termination grace covers preStop and drain", func(t *testing.T) {
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			t.Fatal("no preStop hook: endpoints may still route to a pod that stopped accepting")
		}
		preStop := preStopSleep(t, c.Lifecycle.PreStop)
		if spec.TerminationGracePeriodSeconds == nil {
			t.Fatal("terminationGracePeriodSeconds unset (default 30s)")
		}
		have := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		if want := preStop + p.grace + drainMargin; have < want {
			t.Errorf("terminationGracePeriodSeconds %v < preStop %v + -grace %v + %v", have, preStop, p.grace, drainMargin)
		}
	})

	t.Run("security context", func(t *testing.T) {
		psc, csc := spec.SecurityContext, c.SecurityContext
		if csc == nil {
			t.Fatal("no container securityContext")
		}
		nonRoot := csc.RunAsNonRoot
		if nonRoot == nil && psc != nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Error("runAsNonRoot is not true")
		}
		if uid := runAsUser(psc, csc); uid == nil || *uid == 0 {
			t.Error("runAsUser must be a numeric non-root uid")
		}
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation is not false")
		}
		if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
			t.Error("readOnlyRootFilesystem is not true")
		}
		if csc.Privileged != nil && *csc.Privileged {
			t.Error("privileged container")
		}
		if caps := csc.Capabilities; caps == nil || !slices.Contains(caps.Drop, "ALL") || len(caps.Add) > 0 {
			t.Errorf("capabilities %+v: want drop [ALL] and no add", caps)
		}
	})

	t.Run("control socket is writable", func(t *testing.T) {
		ctl, ok := flagValue(p.args, "control")
		if !ok {
			t.Skip("no -control socket")
		}
		dir := ctl[:strings.LastIndexByte(ctl, '/')]
		for _, m := range c.VolumeMounts {
			if m.MountPath == dir && !m.ReadOnly {
				return
			}
		}
		t.Errorf("-control %s: %s is not a writable volume mount, and the root filesystem is read-only", ctl, dir)
	})
}

// preStopSleep is how long the preStop hook delays SIGTERM.
func preStopSleep(t *testing.T, h *corev1.LifecycleHandler) time.Duration {
	t.Helper()
	switch {
	case h.Sleep != nil:
		return time.Duration(h.Sleep.Seconds) * time.Second
	case h.Exec != nil && len(h.Exec.Command) == 2 && strings.HasSuffix(h.Exec.Command[0], "/sleep"):
		d, err := time.ParseDuration(h.Exec.Command[1] + "s")
		if err != nil {
			t.Fatalf("preStop %v: %v", h.Exec.Command, err)
		}
		return d
	}
	t.Fatalf("preStop %+v: want a sleep", h)
	return 0
}

func runAsUser(psc *corev1.PodSecurityContext, csc *corev1.SecurityContext) *int64 {
	if csc != nil && csc.RunAsUser != nil {
		return csc.RunAsUser
	}
	if psc != nil {
		return psc.RunAsUser
	}
	return nil
}

func TestService(t *testing.T) {
	p := loadDeployment(t)
	var svc corev1.Service
	decodeStrict(t, "kubernetes/service.yaml", &svc, corev1.SchemeGroupVersion.WithKind("Service"))

	if !p.selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}) {
		t.Errorf("selector %v does not match the Deployment's pods %v", svc.Spec.Selector, p.deployment.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) == 0 {
		t.Fatal("no ports")
	}
	serves := false
	for _, sp := range svc.Spec.Ports {
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port) // targetPort defaults to port
		}
		port, ok := containerPort(p.container, target)
		if !ok {
			t.Errorf("port %q: targetPort %s is not a declared containerPort", sp.Name, target.String())
		}
		serves = serves || port == p.port
	}
	if !serves {
		t.Errorf("no Service port targets the supervisor's port %d", p.port)
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	p := loadDeployment(t)
	var pdb policyv1.PodDisruptionBudget
	decodeStrict(t, "kubernetes/pdb.yaml", &pdb, policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"))
	hpa := loadHPA(t)

	if !p.selects(t, pdb.Spec.Selector) {
		t.Errorf("selector %v does not match the Deployment's pods %v", pdb.Spec.Selector, p.deployment.Spec.Template.Labels)
	}
	// At the HPA's floor, a drain must still be able to evict one pod and
	// must leave at least one serving.
	replicas := int(*hpa.Spec.MinReplicas)
	var allowed int
	switch s := pdb.Spec; {
	case s.MaxUnavailable != nil && s.MinAvailable == nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(s.MaxUnavailable, replicas, true)
		if err != nil {
			t.Fatal(err)
		}
		allowed = n
	case s.MinAvailable != nil && s.MaxUnavailable == nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(s.MinAvailable, replicas, true)
		if err != nil {
			t.Fatal(err)
		}
		allowed = replicas - n
	default:
		t.Fatal("want exactly one of minAvailable and maxUnavailable")
	}
	if allowed < 1 || allowed >= replicas {
		t.Errorf("with %d replicas the budget allows %d disruptions; want at least 1 and fewer than %d", replicas, allowed, replicas)
	}
}

func loadHPA(t *testing.T) *autoscalingv2.HorizontalPodAutoscaler {
	t.Helper()
	var hpa autoscalingv2.HorizontalPodAutoscaler
	decodeStrict(t, "kubernetes/hpa.yaml", &hpa, autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"))
	if hpa.Spec.MinReplicas == nil {
		t.Fatal("minReplicas unset (defaults to 1: a single pod cannot drain without downtime)")
	}
	return &hpa
}

func TestHorizontalPodAutoscaler(t *testing.T) {
	p := loadDeployment(t)
	hpa := loadHPA(t)
	d := p.deployment

	ref := hpa.Spec.ScaleTargetRef
	if want := (autoscalingv2.CrossVersionObjectReference{
		APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "Deployment", Name: d.Name,
	}); ref != want {
		t.Errorf("scaleTargetRef %+v, want %+v", ref, want)
	}
	if min := *hpa.Spec.MinReplicas; min < 2 || hpa.Spec.MaxReplicas < min {
		t.Errorf("replicas %d..%d: want min >= 2 and max >= min", min, hpa.Spec.MaxReplicas)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas %d, which every apply would force onto the HPA", *d.Spec.Replicas)
	}
	cpu := false
	for _, m := range hpa.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
			cpu = true
			if m.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
				if _, ok := p.container.Resources.Requests[corev1.ResourceCPU]; !ok {
					t.Error("CPU utilization target without a CPU request to measure it against")
				}
			}
		}
	}
	if !cpu {
		t.Error("no CPU resource metric")
	}
}

func TestStrictDecodingRejectsTypos(t *testing.T) {
	b := readFile(t, "kubernetes/deployment.yaml")
	for name, edit := range map[string]func([]byte) []byte{
		"unknown field": func(b []byte) []byte {
			return bytes.Replace(b, []byte("readinessProbe:"), []byte("readinesProbe:"), 1)
		},
		"duplicate field": func(b []byte) []byte {
			return bytes.Replace(b, []byte("  revisionHistoryLimit: 5\n"), []byte("  revisionHistoryLimit: 5\n  revisionHistoryLimit: 6\n"), 1)
		},
	} {
		mutated := edit(b)
		if bytes.Equal(mutated, b) {
			t.Fatalf("%s: edit did not apply", name)
		}
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict(mutated, &d); err == nil {
			t.Errorf("%s: strict decoding accepted it", name)
		}
	}
}
