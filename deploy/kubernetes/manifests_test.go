package kubernetes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	wantImage     = "restartcoord:dev"
	wantNamespace = "restartcoord"
	wantUID       = 65532
)

// verbs are the restartcoord verbs a container may run.
var verbs = []string{"nats", "init", "coordinator", "node"}

// kinds maps "apiVersion/kind" to a new object of that kind. A kind missing
// here fails the test: add it (and its checks) when a manifest needs it.
var kinds = map[string]func() metav1.Object{
	"v1/Namespace":                  func() metav1.Object { return &corev1.Namespace{} },
	"v1/ConfigMap":                  func() metav1.Object { return &corev1.ConfigMap{} },
	"v1/Service":                    func() metav1.Object { return &corev1.Service{} },
	"v1/PersistentVolumeClaim":      func() metav1.Object { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/StatefulSet":           func() metav1.Object { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":            func() metav1.Object { return &appsv1.Deployment{} },
	"batch/v1/Job":                  func() metav1.Object { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget": func() metav1.Object { return &policyv1.PodDisruptionBudget{} },
}

// object is one decoded document of a manifest file.
type object struct {
	source string // "file.yaml#2", for messages
	obj    metav1.Object
}

// workload is a pod template and what it belongs to.
type workload struct {
	name     string // "StatefulSet/nats"
	selector *metav1.LabelSelector
	labels   map[string]string
	spec     *corev1.PodSpec
	claims   []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeFile decodes every document of a multi-document YAML file.
func decodeFile(name string, data []byte) ([]object, error) {
	var objs []object
	var errs []error
	for i, doc := range docSeparator.Split(string(data), -1) {
		source := fmt.Sprintf("%s#%d", name, i+1)
		obj, err := decode([]byte(doc))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		case obj != nil:
			objs = append(objs, object{source, obj})
		}
	}
	return objs, errors.Join(errs...)
}

// decode decodes one document into its typed object, strictly: an unknown,
// misspelled, duplicated or wrongly capitalized field is an error. An empty
// document (comments only) gives nil.
func decode(doc []byte) (metav1.Object, error) {
	var generic map[string]any
	if err := yaml.Unmarshal(doc, &generic); err != nil {
		return nil, err
	}
	if len(generic) == 0 {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q of apiVersion %q", tm.Kind, tm.APIVersion)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if err := exactKeys(generic, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.Kind, obj.GetName(), err)
	}
	return obj, nil
}

// exactKeys reports the document's keys that the typed object does not give
// back: encoding/json matches field names case-insensitively, so
// UnmarshalStrict alone accepts "Replicas" for "replicas".
func exactKeys(doc map[string]any, obj metav1.Object) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var typed any
	if err := json.Unmarshal(data, &typed); err != nil {
		return err
	}
	if missing := missingKeys("", doc, typed); len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("fields not in the API type (check their spelling and case): %s", strings.Join(missing, ", "))
	}
	return nil
}

func missingKeys(path string, doc, typed any) []string {
	var missing []string
	switch d := doc.(type) {
	case map[string]any:
		t, _ := typed.(map[string]any)
		for k, v := range d {
			tv, ok := t[k]
			if !ok {
				missing = append(missing, path+"."+k)
				continue
			}
			missing = append(missing, missingKeys(path+"."+k, v, tv)...)
		}
	case []any:
		t, _ := typed.([]any)
		for i, v := range d {
			if i < len(t) {
				missing = append(missing, missingKeys(fmt.Sprintf("%s[%d]", path, i), v, t[i])...)
			}
		}
	}
	return missing
}

// loadObjects decodes every document of every .yaml file of this directory.
func loadObjects(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []object
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := decodeFile(file, data)
		if err != nil {
			t.Error(err)
		}
		objs = append(objs, decoded...)
	}
	if t.Failed() {
		t.FailNow()
	}
	return objs
}

// lookup returns the object of type T named name.
func lookup[T any](t *testing.T, objs []object, name string) *T {
	t.Helper()
	for _, o := range objs {
		if typed, ok := any(o.obj).(*T); ok && o.obj.GetName() == name {
			return typed
		}
	}
	t.Fatalf("no %T named %q", *new(T), name)
	return nil
}

// all returns the objects of type T.
func all[T any](objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if typed, ok := any(o.obj).(*T); ok {
			out = append(out, typed)
		}
	}
	return out
}

// workloads returns the pod templates of the StatefulSets, Deployments and Jobs.
func workloads(objs []object) []workload {
	var out []workload
	for _, s := range all[appsv1.StatefulSet](objs) {
		out = append(out, workload{"StatefulSet/" + s.Name, s.Spec.Selector, s.Spec.Template.Labels, &s.Spec.Template.Spec, s.Spec.VolumeClaimTemplates})
	}
	for _, d := range all[appsv1.Deployment](objs) {
		out = append(out, workload{"Deployment/" + d.Name, d.Spec.Selector, d.Spec.Template.Labels, &d.Spec.Template.Spec, nil})
	}
	for _, j := range all[batchv1.Job](objs) {
		out = append(out, workload{"Job/" + j.Name, j.Spec.Selector, j.Spec.Template.Labels, &j.Spec.Template.Spec, nil})
	}
	return out
}

// matches tells whether the selector (matchLabels only) selects labels.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// selected returns the workloads whose pods the selector selects.
func selected(ws []workload, selector map[string]string) []workload {
	var out []workload
	for _, w := range ws {
		if matches(selector, w.labels) {
			out = append(out, w)
		}
	}
	return out
}

func TestStrictDecodeCatchesMistakes(t *testing.T) {
	tests := []struct {
		name, file, old, new string
	}{
		{"misspelled replicas", "nats.yaml", "  replicas: 3", "  replica: 3"},
		{"misspelled containers", "nodes.yaml", "      containers:", "      container:"},
		{"wrongly capitalized field", "coordinator.yaml", "  replicas: 2", "  Replicas: 2"},
		{"duplicated field", "nats.yaml", "  serviceName: nats", "  serviceName: nats\n  serviceName: nats"},
		{"field at the wrong level", "init-job.yaml", "  backoffLimit: 10", "  backoffLimit: 10\n  restartPolicy: Never"},
		{"unknown kind", "00-namespace.yaml", "kind: Namespace", "kind: Namespaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("%s no longer contains %q: update this test", tt.file, tt.old)
			}
			if _, err := decodeFile(tt.file, data); err != nil {
				t.Fatalf("the unchanged %s does not decode: %v", tt.file, err)
			}
			broken := strings.Replace(string(data), tt.old, tt.new, 1)
			_, err = decodeFile(tt.file, []byte(broken))
			if err == nil {
				t.Fatalf("%s with %q for %q decoded without error", tt.file, tt.new, tt.old)
			}
			t.Logf("rejected as expected: %v", err)
		})
	}
}

func TestNamespace(t *testing.T) {
	objs := loadObjects(t)
	lookup[corev1.Namespace](t, objs, wantNamespace)
	for _, o := range objs {
		if _, ok := o.obj.(*corev1.Namespace); ok {
			continue
		}
		if ns := o.obj.GetNamespace(); ns != wantNamespace {
			t.Errorf("%s: %s is in namespace %q, want %q", o.source, o.obj.GetName(), ns, wantNamespace)
		}
	}
}

func TestWorkloadShapes(t *testing.T) {
	objs := loadObjects(t)
	nats := lookup[appsv1.StatefulSet](t, objs, "nats")
	nodes := lookup[appsv1.StatefulSet](t, objs, "node")
	coordinator := lookup[appsv1.Deployment](t, objs, "coordinator")
	pdb := lookup[policyv1.PodDisruptionBudget](t, objs, "nats")
	tests := []struct {
		what      string
		got, want any
	}{
		{"NATS replicas", deref(nats.Spec.Replicas), int32(3)},
		{"NATS podManagementPolicy", nats.Spec.PodManagementPolicy, appsv1.ParallelPodManagement},
		{"NATS PodDisruptionBudget maxUnavailable", intOrString(pdb.Spec.MaxUnavailable), "1"},
		{"coordinator replicas", deref(coordinator.Spec.Replicas), int32(2)},
		{"node replicas", deref(nodes.Spec.Replicas), int32(5)},
		// SIGTERM drains the node within the restart timeout (30 s).
		{"node terminationGracePeriodSeconds >= 40", deref(nodes.Spec.Template.Spec.TerminationGracePeriodSeconds) >= 40, true},
	}
	for _, tt := range tests {
		if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.what, tt.got, tt.want)
		}
	}
	if got := selected(workloads(objs), pdb.Spec.Selector.MatchLabels); len(got) != 1 || got[0].name != "StatefulSet/nats" {
		t.Errorf("PodDisruptionBudget nats selects %v, want the NATS StatefulSet only", names(got))
	}
}

func TestWorkloadSelectors(t *testing.T) {
	for _, w := range workloads(loadObjects(t)) {
		if w.selector == nil { // a Job's selector is generated
			continue
		}
		if len(w.selector.MatchExpressions) > 0 {
			t.Errorf("%s: matchExpressions are not checked by this test", w.name)
		}
		if !matches(w.selector.MatchLabels, w.labels) {
			t.Errorf("%s: selector %v does not match its pod labels %v", w.name, w.selector.MatchLabels, w.labels)
		}
	}
}

func TestServices(t *testing.T) {
	objs := loadObjects(t)
	ws := workloads(objs)
	for _, svc := range all[corev1.Service](objs) {
		backends := selected(ws, svc.Spec.Selector)
		if len(backends) == 0 {
			t.Errorf("Service %s: selector %v matches no workload's pods", svc.Name, svc.Spec.Selector)
		}
		for _, port := range svc.Spec.Ports {
			for _, w := range backends {
				if !hasPort(w.spec, port.TargetPort) {
					t.Errorf("Service %s: port %s: %s has no container port %s", svc.Name, port.Name, w.name, port.TargetPort.String())
				}
			}
		}
	}
	for _, sts := range all[appsv1.StatefulSet](objs) {
		svc := lookup[corev1.Service](t, objs, sts.Spec.ServiceName)
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s: its Service %s is not headless (clusterIP: None)", sts.Name, svc.Name)
		}
		if !matches(svc.Spec.Selector, sts.Spec.Template.Labels) {
			t.Errorf("StatefulSet %s: its Service %s does not select its pods", sts.Name, svc.Name)
		}
	}
}

func TestContainers(t *testing.T) {
	objs := loadObjects(t)
	flags := verbFlags(t)
	for _, w := range workloads(objs) {
		for _, c := range containers(w.spec) {
			where := fmt.Sprintf("%s container %s", w.name, c.Name)
			for _, err := range checkContainer(w.spec, c, flags) {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
}

func containers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}

// checkContainer checks the image, verb, flags, variable references,
// security context and writable /tmp of one container.
func checkContainer(spec *corev1.PodSpec, c *corev1.Container, flags map[string]map[string]bool) []error {
	var errs []error
	if c.Image != wantImage {
		errs = append(errs, fmt.Errorf("image %q, want %q", c.Image, wantImage))
	}
	if len(c.Command) > 0 {
		errs = append(errs, fmt.Errorf("command %v replaces the image's entrypoint /restartcoord: use args", c.Command))
	}
	if len(c.Args) == 0 || flags[c.Args[0]] == nil {
		return append(errs, fmt.Errorf("args %q do not start with a verb of %v", c.Args, verbs))
	}
	for _, name := range argFlags(c.Args[1:]) {
		if !flags[c.Args[0]][name] {
			errs = append(errs, fmt.Errorf("restartcoord %s has no flag --%s", c.Args[0], name))
		}
	}
	errs = append(errs, checkVarRefs(c)...)
	errs = append(errs, checkSecurity(spec, c)...)
	if !writable(spec, c, "/tmp") {
		errs = append(errs, errors.New("no writable volume at /tmp (the root filesystem is read-only)"))
	}
	if dir, ok := flagValue(c.Args, "log-dir"); ok && !writable(spec, c, dir) {
		errs = append(errs, fmt.Errorf("--log-dir %s is not on a writable volume", dir))
	}
	return errs
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkVarRefs checks that every $(VAR) of the args is an env var of the
// container: Kubernetes leaves an undefined reference as it is.
func checkVarRefs(c *corev1.Container) []error {
	var errs []error
	for _, arg := range c.Args {
		for _, m := range varRef.FindAllStringSubmatch(arg, -1) {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == m[1] }) {
				errs = append(errs, fmt.Errorf("args reference $(%s), which is not in env", m[1]))
			}
		}
	}
	return errs
}

func checkSecurity(spec *corev1.PodSpec, c *corev1.Container) []error {
	pod := spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		return []error{errors.New("no securityContext")}
	}
	var errs []error
	if !deref(first(sc.RunAsNonRoot, pod.RunAsNonRoot)) {
		errs = append(errs, errors.New("runAsNonRoot is not true"))
	}
	if uid := deref(first(sc.RunAsUser, pod.RunAsUser)); uid != wantUID {
		errs = append(errs, fmt.Errorf("runAsUser %d, want %d", uid, wantUID))
	}
	if !deref(sc.ReadOnlyRootFilesystem) {
		errs = append(errs, errors.New("readOnlyRootFilesystem is not true"))
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, errors.New("allowPrivilegeEscalation is not false"))
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		errs = append(errs, errors.New("capabilities do not drop ALL"))
	}
	return errs
}

// writable tells whether path lies on a volume mounted read-write.
func writable(spec *corev1.PodSpec, c *corev1.Container, path string) bool {
	m := mountOf(c, path)
	if m == nil || m.ReadOnly {
		return false
	}
	v := volume(spec, m.Name)
	return v == nil || v.ConfigMap == nil && v.Secret == nil // nil: a volumeClaimTemplate
}

// mountOf returns the container's mount holding path.
func mountOf(c *corev1.Container, path string) *corev1.VolumeMount {
	for i, m := range c.VolumeMounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func hasPort(spec *corev1.PodSpec, target intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if target.Type == intstr.String && p.Name == target.StrVal ||
				target.Type == intstr.Int && p.ContainerPort == target.IntVal {
				return true
			}
		}
	}
	return false
}

func containerPort(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func TestVolumes(t *testing.T) {
	objs := loadObjects(t)
	for _, w := range workloads(objs) {
		for _, err := range checkVolumes(objs, w) {
			t.Errorf("%s: %v", w.name, err)
		}
	}
}

// checkVolumes checks that every mount names a volume or volumeClaimTemplate
// and that every ConfigMap and PersistentVolumeClaim a volume names exists.
func checkVolumes(objs []object, w workload) []error {
	var errs []error
	for _, c := range containers(w.spec) {
		for _, m := range c.VolumeMounts {
			isClaim := slices.ContainsFunc(w.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name })
			if volume(w.spec, m.Name) == nil && !isClaim {
				errs = append(errs, fmt.Errorf("container %s mounts %q: no such volume or volumeClaimTemplate", c.Name, m.Name))
			}
		}
	}
	for _, v := range w.spec.Volumes {
		if v.ConfigMap != nil && find[corev1.ConfigMap](objs, v.ConfigMap.Name) == nil {
			errs = append(errs, fmt.Errorf("volume %s: no ConfigMap %q", v.Name, v.ConfigMap.Name))
		}
		if v.PersistentVolumeClaim != nil && find[corev1.PersistentVolumeClaim](objs, v.PersistentVolumeClaim.ClaimName) == nil {
			errs = append(errs, fmt.Errorf("volume %s: no PersistentVolumeClaim %q", v.Name, v.PersistentVolumeClaim.ClaimName))
		}
	}
	return errs
}

// find returns the object of type T named name, or nil.
func find[T any](objs []object, name string) *T {
	for _, o := range all[T](objs) {
		if any(o).(metav1.Object).GetName() == name {
			return o
		}
	}
	return nil
}

// TestNATSURLs checks that every client of NATS is given its URL (the
// image's default names the compose services) and that the URL names a
// Service of the manifests with that port.
func TestNATSURLs(t *testing.T) {
	objs := loadObjects(t)
	for _, w := range workloads(objs) {
		for _, c := range containers(w.spec) {
			if len(c.Args) == 0 || c.Args[0] == "nats" {
				continue
			}
			urls, ok := flagValue(c.Args, "server", "s")
			if !ok {
				urls = envValue(c, "NATS_URL")
			}
			if urls == "" {
				t.Errorf("%s container %s: neither --server nor NATS_URL", w.name, c.Name)
			}
			for _, u := range strings.Split(urls, ",") {
				if err := checkNATSURL(objs, u); err != nil {
					t.Errorf("%s container %s: NATS URL %q: %v", w.name, c.Name, u, err)
				}
			}
		}
	}
}

func checkNATSURL(objs []object, raw string) error {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return err
	}
	if u.Scheme != "nats" {
		return fmt.Errorf("scheme %q, want nats", u.Scheme)
	}
	host := shortName(u.Hostname())
	svcName := host[strings.LastIndex(host, ".")+1:] // "nats-client" or "nats-0.nats"
	svc := find[corev1.Service](objs, svcName)
	if svc == nil {
		return fmt.Errorf("no Service %q", svcName)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return fmt.Errorf("port %q: %v", u.Port(), err)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port }) {
		return fmt.Errorf("Service %s has no port %d", svcName, port)
	}
	return nil
}

// shortName strips the cluster domain and namespace from a service host name.
func shortName(host string) string {
	host = strings.TrimSuffix(host, ".svc.cluster.local")
	host = strings.TrimSuffix(host, ".svc")
	return strings.TrimSuffix(host, "."+wantNamespace)
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestNATSConfig parses the NATS StatefulSet's configuration, found through
// its --config flag, mount and ConfigMap, with nats-server's own parser.
func TestNATSConfig(t *testing.T) {
	objs := loadObjects(t)
	sts := lookup[appsv1.StatefulSet](t, objs, "nats")
	spec := &sts.Spec.Template.Spec
	c := spec.Containers[0]
	path, ok := flagValue(c.Args, "config", "c")
	if !ok {
		t.Fatalf("StatefulSet nats: no --config in args %q", c.Args)
	}
	conf, err := mountedConfigMapFile(objs, spec, &c, path)
	if err != nil {
		t.Fatalf("StatefulSet nats: --config %s: %v", path, err)
	}
	if !regexp.MustCompile(`(?m)^\s*sync_interval:\s*always\s*$`).MatchString(conf) {
		t.Error("the NATS config does not set jetstream sync_interval: always")
	}
	if envField(&c, "NATS_NAME") != "metadata.name" {
		t.Error("container nats: NATS_NAME is not the pod name (fieldRef metadata.name)")
	}

	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	podName := sts.Name + "-0"
	t.Setenv("NATS_NAME", podName)
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server rejects the config: %v", err)
	}
	for _, err := range checkNATSOptions(opts, sts, &c, podName) {
		t.Error(err)
	}
}

// checkNATSOptions checks the parsed NATS config against the StatefulSet.
func checkNATSOptions(opts *server.Options, sts *appsv1.StatefulSet, c *corev1.Container, podName string) []error {
	tests := []struct {
		what      string
		got, want any
	}{
		{"server_name", opts.ServerName, podName},
		{"jetstream enabled", opts.JetStream, true},
		{"jetstream sync_interval always", opts.SyncAlways, true},
		{"client port", int32(opts.Port), containerPort(c, "client")},
		{"cluster port", int32(opts.Cluster.Port), containerPort(c, "cluster")},
		{"monitoring port", int32(opts.HTTPPort), containerPort(c, "monitor")},
		{"routes", len(opts.Routes), int(deref(sts.Spec.Replicas))},
		{"store_dir on a volumeClaimTemplate", claimMount(sts, c, opts.StoreDir), true},
	}
	var errs []error
	for _, tt := range tests {
		if tt.got != tt.want {
			errs = append(errs, fmt.Errorf("NATS config: %s: got %v, want %v", tt.what, tt.got, tt.want))
		}
	}
	want := map[string]bool{}
	for i := range int(deref(sts.Spec.Replicas)) {
		want[fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, sts.Spec.ServiceName, containerPort(c, "cluster"))] = true
	}
	for _, r := range opts.Routes {
		route := shortName(r.Hostname()) + ":" + r.Port()
		if !want[route] {
			errs = append(errs, fmt.Errorf("NATS config: route %s is none of the StatefulSet's pods %v", r, keys(want)))
		}
		delete(want, route)
	}
	return errs
}

// claimMount tells whether path lies on a mount of a volumeClaimTemplate.
func claimMount(sts *appsv1.StatefulSet, c *corev1.Container, path string) bool {
	m := mountOf(c, path)
	return m != nil && slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name })
}

func envField(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

// mountedConfigMapFile returns the content of the file at path in the
// container, which must come from a ConfigMap volume.
func mountedConfigMapFile(objs []object, spec *corev1.PodSpec, c *corev1.Container, path string) (string, error) {
	m := mountOf(c, path)
	if m == nil {
		return "", errors.New("not on a mounted volume")
	}
	key := strings.TrimPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
	if m.SubPath != "" {
		key = m.SubPath
	}
	v := volume(spec, m.Name)
	if v == nil || v.ConfigMap == nil {
		return "", fmt.Errorf("volume %s is not a ConfigMap volume", m.Name)
	}
	for _, item := range v.ConfigMap.Items {
		if item.Path == key {
			key = item.Key
		}
	}
	cm := find[corev1.ConfigMap](objs, v.ConfigMap.Name)
	if cm == nil {
		return "", fmt.Errorf("no ConfigMap %q", v.ConfigMap.Name)
	}
	data, ok := cm.Data[key]
	if !ok {
		return "", fmt.Errorf("ConfigMap %s has no key %q", cm.Name, key)
	}
	return data, nil
}

// verbFlags builds restartcoord and reads each verb's flags from its --help.
func verbFlags(t *testing.T) map[string]map[string]bool {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build restartcoord: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "restartcoord")
	build := exec.Command(goTool, "build", "-o", bin, "github.com/restartcoord/restartcoord/cmd/restartcoord")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build restartcoord: %v\n%s", err, out)
	}
	flags := map[string]map[string]bool{}
	for _, verb := range verbs {
		out, err := exec.Command(bin, verb, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("restartcoord %s --help: %v\n%s", verb, err, out)
		}
		flags[verb] = map[string]bool{}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			flags[verb][m[1]] = true
		}
		if len(flags[verb]) == 0 {
			t.Fatalf("restartcoord %s --help lists no flags:\n%s", verb, out)
		}
	}
	return flags
}

// helpFlag matches a flag line of Go's flag.PrintDefaults: "  -name type".
var helpFlag = regexp.MustCompile(`(?m)^  -([A-Za-z][\w-]*)(?: |$)`)

// argFlags returns the names of the flags among args ("--id", "-s=URL").
func argFlags(args []string) []string {
	var names []string
	for _, a := range args {
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			names = append(names, name)
		}
	}
	return names
}

// flagValue returns the value of the first of names given in args.
func flagValue(args []string, names ...string) (string, bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !slices.Contains(names, name) {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func names(ws []workload) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.name)
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func first[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func deref[T any](p *T) T {
	if p == nil {
		return *new(T)
	}
	return *p
}

func intOrString(v *intstr.IntOrString) string {
	if v == nil {
		return "<unset>"
	}
	return v.String()
}
