// Package deploy holds what runs rideshare outside `rideshare up`: the
// container image (Dockerfile), the Kubernetes manifests (k8s/: a base,
// a PostgreSQL component and the dev, staging and prod overlays), the NATS
// chart's values and a Compose file. It has no Go code of its own: its tests
// render every overlay offline, exactly as `kubectl apply -k` would, decode
// each object strictly against the Kubernetes API types, and check the
// rules a deployment of this platform must keep, many of them derived from
// the services' own declarations (platform.Service: Name, Calls, Database).
package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/catalog"
	"github.com/rideshare-platform/rideshare/internal/platform"
)

// table is the platform's services by name: what the binary runs is what
// the manifests must deploy.
var table = func() map[string]platform.Service {
	m := map[string]platform.Service{}
	for _, s := range catalog.Services {
		m[s.Name] = s
	}
	return m
}()

// Facts the manifests and the code share.
const (
	// port is what every service listens on in a container.
	port = 8080
	// connsPerReplica is the most PostgreSQL connections one service
	// replica opens (internal/sqldb sets its pool's SetMaxOpenConns(16)).
	connsPerReplica = 16
	// reservedConns are PostgreSQL's superuser_reserved_connections
	// (default 3) plus CloudNativePG's own instance manager and replication.
	reservedConns = 10
	// dbCluster is the CloudNativePG cluster components/postgres defines.
	dbCluster = "rideshare-db"
	// The base's shared configuration and its generated name's prefix.
	configName = "rideshare-config"
)

// overlays are the environments, and what each must be.
var overlays = []struct {
	name, namespace string
	// dev allows developer mode and placeholder secrets in the repository.
	dev bool
	// minReplicas is the least replicas of every service.
	minReplicas int32
}{
	{name: "dev", namespace: "rideshare-dev", dev: true, minReplicas: 1},
	{name: "staging", namespace: "rideshare-staging", minReplicas: 2},
	{name: "prod", namespace: "rideshare-prod", minReplicas: 3},
}

// crds are the custom resources an overlay may hold besides the built-in
// kinds, which the client-go scheme does not know: CloudNativePG's.
var crds = map[string]bool{
	"postgresql.cnpg.io/v1/Cluster":  true,
	"postgresql.cnpg.io/v1/Database": true,
}

// operatorSecrets are Secrets that operators create in the namespace, so
// no overlay renders them: CloudNativePG's certificate authority.
var operatorSecrets = map[string]bool{dbCluster + "-ca": true}

// cnpgCluster is the part of a postgresql.cnpg.io/v1 Cluster the rules read.
type cnpgCluster struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Instances  int    `json:"instances"`
		ImageName  string `json:"imageName"`
		PostgreSQL struct {
			Parameters map[string]string `json:"parameters"`
		} `json:"postgresql"`
		Managed struct {
			Roles []struct {
				Name           string `json:"name"`
				Ensure         string `json:"ensure"`
				Login          bool   `json:"login"`
				PasswordSecret struct {
					Name string `json:"name"`
				} `json:"passwordSecret"`
			} `json:"roles"`
		} `json:"managed"`
	} `json:"spec"`
}

// cnpgDatabase is the part of a postgresql.cnpg.io/v1 Database the rules read.
type cnpgDatabase struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Name    string `json:"name"`
		Owner   string `json:"owner"`
		Cluster struct {
			Name string `json:"name"`
		} `json:"cluster"`
	} `json:"spec"`
}

// rendered is one overlay's objects, by kind.
type rendered struct {
	namespace   string
	dev         bool
	minReplicas int32

	namespaces  []*corev1.Namespace
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	policies    []*networkingv1.NetworkPolicy
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	clusters    map[string]*cnpgCluster
	databases   []*cnpgDatabase
	// namespaced are every namespaced object's "Kind/name" and namespace.
	namespaced map[string]string
}

// strict decodes YAML into the client-go scheme's types, refusing unknown
// and duplicated fields, as a server-side strict apply would.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// render builds the kustomization in dir as `kubectl apply -k` does, with
// nothing but the files on disk, and decodes every object strictly.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		configMaps:  map[string]*corev1.ConfigMap{},
		secrets:     map[string]*corev1.Secret{},
		clusters:    map[string]*cnpgCluster{},
		namespaced:  map[string]string{},
	}
	for _, res := range m.Resources() {
		id := res.GetApiVersion() + "/" + res.GetKind() + " " + res.GetName()
		b, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if crds[res.GetApiVersion()+"/"+res.GetKind()] {
			r.namespaced[res.GetKind()+"/"+res.GetName()] = res.GetNamespace()
			switch res.GetKind() {
			case "Cluster":
				var c cnpgCluster
				if err := yaml.Unmarshal(b, &c); err != nil {
					t.Errorf("%s: %v", id, err)
				}
				r.clusters[c.Metadata.Name] = &c
			case "Database":
				var d cnpgDatabase
				if err := yaml.Unmarshal(b, &d); err != nil {
					t.Errorf("%s: %v", id, err)
				}
				r.databases = append(r.databases, &d)
			}
			continue
		}
		obj, _, err := strict.Decode(b, nil, nil)
		if err != nil {
			if runtime.IsNotRegisteredError(err) {
				t.Errorf("%s: neither a Kubernetes kind nor an allowed custom resource", id)
			} else {
				t.Errorf("%s: strict decoding: %v", id, err)
			}
			continue
		}
		if _, ok := obj.(*corev1.Namespace); !ok {
			r.namespaced[res.GetKind()+"/"+res.GetName()] = res.GetNamespace()
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			r.namespaces = append(r.namespaces, o)
		case *appsv1.Deployment:
			r.deployments[o.Name] = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *networkingv1.NetworkPolicy:
			r.policies = append(r.policies, o)
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		default:
			t.Errorf("%s: a kind no rule here checks; add the rules it needs", id)
		}
	}
	return r
}

// rules are what every overlay must keep.
var rules = []struct {
	name  string
	check func(t *testing.T, r *rendered)
}{
	{"the namespace is the overlay's, under the restricted pod security standard", checkNamespace},
	{"every service of the table runs as a Deployment of `serve NAME`", checkServiceTable},
	{"readiness on /readyz and liveness on /healthz", checkProbes},
	{"resource requests and limits", checkResources},
	{"non-root, no privilege escalation, read-only root, no capabilities", checkSecurity},
	{"images pinned to a tag or digest", checkImages},
	{"a disruption budget selects each Deployment's pods", checkDisruptionBudgets},
	{"a CPU autoscaler owns each Deployment's replicas", checkAutoscalers},
	{"every Service's pods have their own NetworkPolicy", checkServicePolicies},
	{"ingress is exactly the call graph", checkIngress},
	{"egress is exactly the call graph, DNS, NATS and the database", checkEgress},
	{"peers are the Kubernetes Services", checkPeers},
	{"each service's database on the CloudNativePG cluster", checkDatabases},
	{"referenced configuration and secrets exist", checkReferences},
	{"developer mode in dev only", checkDevMode},
}

func TestOverlays(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.name, func(t *testing.T) {
			r := render(t, filepath.Join("k8s", "overlays", o.name))
			r.namespace, r.dev, r.minReplicas = o.namespace, o.dev, o.minReplicas
			for _, rule := range rules {
				t.Run(rule.name, func(t *testing.T) { rule.check(t, r) })
			}
		})
	}
}

func checkNamespace(t *testing.T, r *rendered) {
	if len(r.namespaces) != 1 || r.namespaces[0].Name != r.namespace {
		t.Fatalf("want the one Namespace %s, got %d", r.namespace, len(r.namespaces))
	}
	if got := r.namespaces[0].Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace %s enforces pod security %q, want restricted", r.namespace, got)
	}
	for id, ns := range r.namespaced {
		if ns != r.namespace {
			t.Errorf("%s is in namespace %q, want %s", id, ns, r.namespace)
		}
	}
}

func checkServiceTable(t *testing.T, r *rendered) {
	for name := range table {
		d, ok := r.deployments[name]
		if !ok {
			t.Errorf("service %s has no Deployment", name)
			continue
		}
		c := container(t, d)
		if args := append(slices.Clone(c.Command), c.Args...); !slices.Equal(args, []string{"serve", name}) {
			t.Errorf("Deployment %s runs %q, want [serve %s]", name, args, name)
		}
	}
	for name := range r.deployments {
		if _, ok := table[name]; !ok {
			t.Errorf("Deployment %s is no service of the table", name)
		}
	}
}

func checkProbes(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		c := container(t, d)
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{
			{"readiness", c.ReadinessProbe, "/readyz"},
			{"liveness", c.LivenessProbe, "/healthz"},
		} {
			switch {
			case p.probe == nil || p.probe.HTTPGet == nil:
				t.Errorf("Deployment %s has no HTTP %s probe", name, p.kind)
			case p.probe.HTTPGet.Path != p.path:
				t.Errorf("Deployment %s's %s probe is on %s, want %s", name, p.kind, p.probe.HTTPGet.Path, p.path)
			case containerPort(c, p.probe.HTTPGet.Port.String()) != port:
				t.Errorf("Deployment %s's %s probe is on port %s, not the service's %d", name, p.kind, p.probe.HTTPGet.Port.String(), port)
			}
		}
	}
}

func checkResources(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		res := container(t, d).Resources
		for _, kind := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := res.Requests[kind]
			lim, okLim := res.Limits[kind]
			if !okReq || !okLim || req.IsZero() || lim.IsZero() {
				t.Errorf("Deployment %s: %s wants both a request and a limit, has %v and %v", name, kind, res.Requests, res.Limits)
				continue
			}
			if req.Cmp(lim) > 0 {
				t.Errorf("Deployment %s: %s request %s above its limit %s", name, kind, req.String(), lim.String())
			}
		}
	}
}

func checkSecurity(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		pod := d.Spec.Template.Spec.SecurityContext
		if pod == nil {
			pod = &corev1.PodSecurityContext{}
		}
		for _, c := range append(slices.Clone(d.Spec.Template.Spec.InitContainers), d.Spec.Template.Spec.Containers...) {
			sc := c.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			nonRoot := first(sc.RunAsNonRoot, pod.RunAsNonRoot)
			user := first(sc.RunAsUser, pod.RunAsUser)
			if nonRoot == nil || !*nonRoot {
				t.Errorf("Deployment %s container %s: runAsNonRoot is not set", name, c.Name)
			}
			if user == nil || *user == 0 {
				t.Errorf("Deployment %s container %s: no non-zero runAsUser", name, c.Name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("Deployment %s container %s: allowPrivilegeEscalation must be false", name, c.Name)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("Deployment %s container %s is privileged", name, c.Name)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("Deployment %s container %s: the root filesystem must be read-only", name, c.Name)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("Deployment %s container %s: capabilities must drop ALL and add none", name, c.Name)
			}
			seccomp := first(sc.SeccompProfile, pod.SeccompProfile)
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("Deployment %s container %s: seccomp profile must be RuntimeDefault", name, c.Name)
			}
		}
		if d.Spec.Template.Spec.HostNetwork || d.Spec.Template.Spec.HostPID || d.Spec.Template.Spec.HostIPC {
			t.Errorf("Deployment %s shares a host namespace", name)
		}
	}
}

func checkImages(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		for _, c := range append(slices.Clone(d.Spec.Template.Spec.InitContainers), d.Spec.Template.Spec.Containers...) {
			if err := pinned(c.Image); err != nil {
				t.Errorf("Deployment %s container %s: %v", name, c.Name, err)
			}
		}
	}
	for name, c := range r.clusters {
		if err := pinned(c.Spec.ImageName); err != nil {
			t.Errorf("Cluster %s: %v", name, err)
		}
	}
}

// pinned says why image does not name one image for good: it must carry
// a digest, or a tag other than latest.
func pinned(image string) error {
	if image == "" {
		return fmt.Errorf("no image (the operator's default moves)")
	}
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return fmt.Errorf("image %s has no tag", image)
	}
	if tag := image[colon+1:]; tag == "latest" {
		return fmt.Errorf("image %s is not pinned", image)
	}
	return nil
}

func checkDisruptionBudgets(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		var budgets []string
		for _, p := range r.pdbs {
			if selects(t, p.Spec.Selector, d.Spec.Template.Labels) {
				budgets = append(budgets, p.Name)
				if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
					t.Errorf("PodDisruptionBudget %s sets no budget", p.Name)
				}
				if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() >= int(r.minReplicas) {
					t.Errorf("PodDisruptionBudget %s: minAvailable %s blocks every drain at %d replicas", p.Name, p.Spec.MinAvailable, r.minReplicas)
				}
			}
		}
		if len(budgets) != 1 {
			t.Errorf("Deployment %s is selected by %d PodDisruptionBudgets %v, want 1", name, len(budgets), budgets)
		}
	}
}

func checkAutoscalers(t *testing.T, r *rendered) {
	for name, d := range r.deployments {
		var owners []*autoscalingv2.HorizontalPodAutoscaler
		for _, h := range r.hpas {
			if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == name {
				owners = append(owners, h)
			}
		}
		if len(owners) != 1 {
			t.Errorf("Deployment %s has %d HorizontalPodAutoscalers, want 1", name, len(owners))
			continue
		}
		h := owners[0]
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != r.minReplicas {
			t.Errorf("HorizontalPodAutoscaler %s: minReplicas %v, want %d", h.Name, h.Spec.MinReplicas, r.minReplicas)
		}
		if h.Spec.MaxReplicas < r.minReplicas {
			t.Errorf("HorizontalPodAutoscaler %s: maxReplicas %d below minReplicas %d", h.Name, h.Spec.MaxReplicas, r.minReplicas)
		}
		onCPU := false
		for _, m := range h.Spec.Metrics {
			onCPU = onCPU || m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU
		}
		if !onCPU {
			t.Errorf("HorizontalPodAutoscaler %s does not scale on CPU", h.Name)
		}
		// `kubectl apply` of a replica count would undo the autoscaler's.
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas, which its autoscaler owns", name)
		}
	}
}

func checkServicePolicies(t *testing.T, r *rendered) {
	for name, s := range r.services {
		found := false
		for _, p := range r.policies {
			// A policy for all pods (the default deny) is not the Service's own.
			if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) == 0 {
				continue
			}
			if selects(t, &p.Spec.PodSelector, s.Spec.Selector) && slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				found = true
			}
		}
		if !found {
			t.Errorf("Service %s: no NetworkPolicy selects its pods for ingress", name)
		}
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects no pods", name)
		}
	}
	for _, p := range r.policies {
		if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(p.Spec.Ingress) == 0 {
			return
		}
	}
	t.Errorf("no default-deny ingress policy for every pod of the namespace")
}

// Names of the places traffic comes from or goes to, as the network rules
// below compare them.
const (
	anywhere   = "anywhere"
	prometheus = "namespace monitoring"
	dns        = "namespace kube-system pods k8s-app=kube-dns"
	nats       = "namespace nats pods app.kubernetes.io/name=nats"
	database   = "pods cnpg.io/cluster=" + dbCluster
	operator   = "namespace cnpg-system pods app.kubernetes.io/name=cloudnative-pg"
)

func svc(name string) string { return "service " + name }

func checkIngress(t *testing.T, r *rendered) {
	for name := range table {
		want := map[string]bool{prometheus + " 8080/TCP": true}
		switch name {
		case "gateway":
			want[anywhere+" 8080/TCP"] = true
		case "identity":
			// Every service fetches its own token and checks callers'
			// tokens against identity's keys.
			for other := range table {
				if other != name {
					want[svc(other)+" 8080/TCP"] = true
				}
			}
		default:
			for caller, c := range table {
				if slices.Contains(c.Calls, name) {
					want[svc(caller)+" 8080/TCP"] = true
				}
			}
		}
		d, ok := r.deployments[name]
		if !ok {
			continue // checkServiceTable says so
		}
		if got := r.allowed(t, d.Spec.Template.Labels, networkingv1.PolicyTypeIngress); !maps.Equal(got, want) {
			t.Errorf("%s takes connections from %v,\nwant exactly %v", name, keys(got), keys(want))
		}
	}
	// The database: its services, the operator, its own instances, Prometheus.
	if _, ok := r.clusters[dbCluster]; ok {
		want := map[string]bool{
			operator + " 8000/TCP": true, operator + " 5432/TCP": true,
			database + " any": true, prometheus + " 9187/TCP": true,
		}
		for name, s := range table {
			if s.Database {
				want[svc(name)+" 5432/TCP"] = true
			}
		}
		if got := r.allowed(t, map[string]string{"cnpg.io/cluster": dbCluster}, networkingv1.PolicyTypeIngress); !maps.Equal(got, want) {
			t.Errorf("the database takes connections from %v,\nwant exactly %v", keys(got), keys(want))
		}
	}
}

func checkEgress(t *testing.T, r *rendered) {
	for name, s := range table {
		want := map[string]bool{dns + " 53/UDP": true, dns + " 53/TCP": true, nats + " 4222/TCP": true}
		for _, callee := range append(slices.Clone(s.Calls), "identity") {
			if callee != name {
				want[svc(callee)+" 8080/TCP"] = true
			}
		}
		if s.Database {
			want[database+" 5432/TCP"] = true
		}
		d, ok := r.deployments[name]
		if !ok {
			continue
		}
		if got := r.allowed(t, d.Spec.Template.Labels, networkingv1.PolicyTypeEgress); !maps.Equal(got, want) {
			t.Errorf("%s may connect to %v,\nwant exactly %v", name, keys(got), keys(want))
		}
	}
}

// allowed is every "PLACE PORT/PROTOCOL" the policies let pods with
// podLabels take connections from (ingress) or open connections to
// (egress). A pod no policy of that direction selects is not isolated:
// everything is allowed, which no expectation matches.
func (r *rendered) allowed(t *testing.T, podLabels map[string]string, dir networkingv1.PolicyType) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	isolated := false
	for _, p := range r.policies {
		if !slices.Contains(p.Spec.PolicyTypes, dir) || !selects(t, &p.Spec.PodSelector, podLabels) {
			continue
		}
		isolated = true
		type rule struct {
			peers []networkingv1.NetworkPolicyPeer
			ports []networkingv1.NetworkPolicyPort
		}
		var rs []rule
		if dir == networkingv1.PolicyTypeIngress {
			for _, in := range p.Spec.Ingress {
				rs = append(rs, rule{in.From, in.Ports})
			}
		} else {
			for _, eg := range p.Spec.Egress {
				rs = append(rs, rule{eg.To, eg.Ports})
			}
		}
		for _, ru := range rs {
			places := []string{anywhere}
			if len(ru.peers) > 0 {
				places = nil
				for _, peer := range ru.peers {
					places = append(places, r.place(t, peer)...)
				}
			}
			ports := []string{"any"}
			if len(ru.ports) > 0 {
				ports = nil
				for _, pp := range ru.ports {
					ports = append(ports, portName(pp))
				}
			}
			for _, pl := range places {
				for _, po := range ports {
					out[pl+" "+po] = true
				}
			}
		}
	}
	if !isolated {
		out["not isolated: "+anywhere+" any"] = true
	}
	return out
}

// place names the pods a policy peer selects: each rideshare service whose
// pods it selects in the namespace, or else the selector itself.
func (r *rendered) place(t *testing.T, peer networkingv1.NetworkPolicyPeer) []string {
	t.Helper()
	if peer.IPBlock != nil {
		return []string{"ipBlock " + peer.IPBlock.CIDR}
	}
	if peer.NamespaceSelector != nil {
		ns := "namespace " + selectorString(t, peer.NamespaceSelector)
		if n, ok := peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]; ok && len(peer.NamespaceSelector.MatchLabels) == 1 {
			ns = "namespace " + n
		}
		if peer.PodSelector != nil {
			return []string{ns + " pods " + selectorString(t, peer.PodSelector)}
		}
		return []string{ns}
	}
	var out []string
	for name, d := range r.deployments {
		if selects(t, peer.PodSelector, d.Spec.Template.Labels) {
			out = append(out, svc(name))
		}
	}
	if len(out) == 0 {
		out = []string{"pods " + selectorString(t, peer.PodSelector)}
	}
	slices.Sort(out)
	return out
}

func portName(p networkingv1.NetworkPolicyPort) string {
	proto := "TCP"
	if p.Protocol != nil {
		proto = string(*p.Protocol)
	}
	if p.Port == nil {
		return "any/" + proto
	}
	s := p.Port.String()
	if p.EndPort != nil {
		s += "-" + strconv.Itoa(int(*p.EndPort))
	}
	return s + "/" + proto
}

func checkPeers(t *testing.T, r *rendered) {
	cfg := r.config(t)
	peers := map[string]string{}
	for _, kv := range strings.Split(cfg.Data["RIDESHARE_PEERS"], ",") {
		name, u, _ := strings.Cut(kv, "=")
		peers[name] = u
	}
	for name, s := range table {
		for _, callee := range append(slices.Clone(s.Calls), "identity") {
			if callee == name {
				continue
			}
			u, err := url.Parse(peers[callee])
			if err != nil || u.Scheme != "http" {
				t.Errorf("%s calls %s, whose peer address %q is no http URL", name, callee, peers[callee])
				continue
			}
			k, ok := r.services[u.Hostname()]
			switch {
			case !ok:
				t.Errorf("peer %s: %s is no Service", callee, u)
			case !selects(t, &metav1.LabelSelector{MatchLabels: k.Spec.Selector}, r.deployments[callee].Spec.Template.Labels):
				t.Errorf("peer %s: Service %s does not select %s's pods", callee, u.Hostname(), callee)
			case len(k.Spec.Ports) != 1 || strconv.Itoa(int(k.Spec.Ports[0].Port)) != u.Port() || k.Spec.Ports[0].TargetPort.String() != "http":
				t.Errorf("peer %s: Service %s does not serve %s on port %s to the pods' http port", callee, u.Hostname(), u, u.Port())
			}
		}
	}
	if cfg.Data["RIDESHARE_NATS"] == "" || !strings.HasPrefix(cfg.Data["RIDESHARE_NATS"], "nats://nats.nats.svc:") {
		t.Errorf("RIDESHARE_NATS is %q, want the chart's Service nats://nats.nats.svc:4222", cfg.Data["RIDESHARE_NATS"])
	}
	if cfg.Data["RIDESHARE_PUBLIC_URL"] == "" {
		t.Errorf("RIDESHARE_PUBLIC_URL, the token issuer, is not set")
	}
}

func checkDatabases(t *testing.T, r *rendered) {
	c, ok := r.clusters[dbCluster]
	if !ok {
		t.Fatalf("no CloudNativePG Cluster %s", dbCluster)
	}
	if want := min(int(r.minReplicas), 3); c.Spec.Instances < want {
		t.Errorf("Cluster %s has %d instances, want at least %d", dbCluster, c.Spec.Instances, want)
	}
	maxConns, err := strconv.Atoi(c.Spec.PostgreSQL.Parameters["max_connections"])
	if err != nil {
		t.Errorf("Cluster %s: max_connections %q", dbCluster, c.Spec.PostgreSQL.Parameters["max_connections"])
	}
	budget := reservedConns
	for name, s := range table {
		d, ok := r.deployments[name]
		if !ok {
			continue
		}
		env := envOf(container(t, d))
		dsn, hasDB := env["RIDESHARE_DB"]
		if !s.Database {
			if hasDB {
				t.Errorf("%s owns no database but is given one", name)
			}
			continue
		}
		for _, h := range r.hpas {
			if h.Spec.ScaleTargetRef.Name == name {
				budget += connsPerReplica * int(h.Spec.MaxReplicas)
			}
		}
		u, err := url.Parse(dsn.Value)
		if err != nil || u.Scheme != "postgres" {
			t.Errorf("%s: RIDESHARE_DB %q is no postgres:// DSN", name, dsn.Value)
			continue
		}
		if u.Hostname() != dbCluster+"-rw" || u.User.Username() != name || u.Path != "/"+name {
			t.Errorf("%s: RIDESHARE_DB %s, want role %s and database %s on the primary, %s-rw", name, u.Redacted(), name, name, dbCluster)
		}
		if _, set := u.User.Password(); set {
			t.Errorf("%s: the DSN holds a password; it belongs in PGPASSWORD, from a Secret", name)
		}
		if m := u.Query().Get("sslmode"); m != "verify-full" {
			t.Errorf("%s: sslmode %q, want verify-full against the cluster's CA", name, m)
		}
		var secret string
		if pw := env["PGPASSWORD"]; pw.ValueFrom != nil && pw.ValueFrom.SecretKeyRef != nil && pw.ValueFrom.SecretKeyRef.Key == "password" {
			secret = pw.ValueFrom.SecretKeyRef.Name
		} else {
			t.Errorf("%s: PGPASSWORD is not the password key of a Secret", name)
		}
		role := false
		for _, ro := range c.Spec.Managed.Roles {
			if ro.Name == name {
				role = true
				if !ro.Login || ro.Ensure == "absent" || ro.PasswordSecret.Name != secret {
					t.Errorf("Cluster role %s: login %v, ensure %q, password from %q; want a login role whose password is the Secret %q the service reads", name, ro.Login, ro.Ensure, ro.PasswordSecret.Name, secret)
				}
			}
		}
		if !role {
			t.Errorf("Cluster %s manages no role %s", dbCluster, name)
		}
		dbs := 0
		for _, db := range r.databases {
			if db.Spec.Name == name {
				dbs++
				if db.Spec.Owner != name || db.Spec.Cluster.Name != dbCluster {
					t.Errorf("Database %s: owner %s in cluster %s, want owner %s in %s", db.Metadata.Name, db.Spec.Owner, db.Spec.Cluster.Name, name, dbCluster)
				}
			}
		}
		if dbs != 1 {
			t.Errorf("%d Database resources for %s, want 1", dbs, name)
		}
	}
	if budget > maxConns {
		t.Errorf("at their autoscalers' maximum the services open up to %d connections (with %d reserved), above max_connections %d", budget, reservedConns, maxConns)
	}
}

func checkReferences(t *testing.T, r *rendered) {
	needs := r.secretKeys(t)
	if !r.dev && len(r.secrets) > 0 {
		t.Errorf("Secrets %v are in the repository; outside dev they are created out of band", slices.Sorted(maps.Keys(r.secrets)))
	}
	// Outside dev, TestSecretsScript checks that secrets.sh makes them.
	for _, ref := range needs {
		if operatorSecrets[ref.name] || !r.dev {
			continue
		}
		s, ok := r.secrets[ref.name]
		switch {
		case !ok:
			t.Errorf("%s: no Secret %s", ref.by, ref.name)
		case ref.key != "" && len(s.Data[ref.key]) == 0 && s.StringData[ref.key] == "":
			t.Errorf("%s: Secret %s has no key %s", ref.by, ref.name, ref.key)
		}
	}
	for name, d := range r.deployments {
		c := container(t, d)
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil && r.configMaps[ef.ConfigMapRef.Name] == nil {
				t.Errorf("Deployment %s: no ConfigMap %s", name, ef.ConfigMapRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				cm := r.configMaps[e.ValueFrom.ConfigMapKeyRef.Name]
				if cm == nil || cm.Data[e.ValueFrom.ConfigMapKeyRef.Key] == "" {
					t.Errorf("Deployment %s: no ConfigMap key %s/%s", name, e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Key)
				}
			}
		}
	}
	if r.dev {
		checkDerivedSecrets(t, func(name, key string) string {
			s := r.secrets[name]
			if s == nil {
				return ""
			}
			return string(s.Data[key])
		})
	}
}

// secretRef is a key of a Secret something reads ("" for all of it).
type secretRef struct{ by, name, key string }

// secretKeys are every Secret key the overlay's Deployments and
// CloudNativePG roles read.
func (r *rendered) secretKeys(t *testing.T) []secretRef {
	var out []secretRef
	for name, d := range r.deployments {
		by := "Deployment " + name
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					out = append(out, secretRef{by, ef.SecretRef.Name, ""})
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					out = append(out, secretRef{by, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key})
				}
			}
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				out = append(out, secretRef{by, v.Secret.SecretName, ""})
			}
		}
	}
	for _, c := range r.clusters {
		for _, ro := range c.Spec.Managed.Roles {
			if ro.PasswordSecret.Name != "" {
				out = append(out, secretRef{"Cluster role " + ro.Name, ro.PasswordSecret.Name, "password"})
			}
		}
	}
	return out
}

// checkDerivedSecrets checks that each service's secret is the one
// identity derives from the master secret (auth.ServiceSecret): a service
// given any other is refused its token.
func checkDerivedSecrets(t *testing.T, get func(name, key string) string) {
	t.Helper()
	master := get("rideshare-identity", "RIDESHARE_SERVICE_MASTER_SECRET")
	if master == "" {
		t.Fatal("identity has no RIDESHARE_SERVICE_MASTER_SECRET")
	}
	for name := range table {
		if name == "identity" {
			continue
		}
		if got, want := get("rideshare-"+name, "RIDESHARE_SERVICE_SECRET"), auth.ServiceSecret(master, name); got != want {
			t.Errorf("%s's RIDESHARE_SERVICE_SECRET is %q; identity expects %q", name, got, want)
		}
	}
	for name, s := range table {
		if s.Database && get("rideshare-db-"+name, "username") != name {
			t.Errorf("Secret rideshare-db-%s: username %q, want %s", name, get("rideshare-db-"+name, "username"), name)
		}
	}
}

func checkDevMode(t *testing.T, r *rendered) {
	if got := r.config(t).Data["RIDESHARE_DEV"] == "true"; got != r.dev {
		t.Errorf("RIDESHARE_DEV=true is %v, want %v", got, r.dev)
	}
	for name, d := range r.deployments {
		c := container(t, d)
		for _, a := range append(slices.Clone(c.Command), c.Args...) {
			if strings.HasPrefix(a, "--dev") || strings.HasPrefix(a, "-dev") {
				t.Errorf("Deployment %s runs %s", name, a)
			}
		}
		if e, ok := envOf(c)["RIDESHARE_DEV"]; ok && !r.dev && e.Value == "true" {
			t.Errorf("Deployment %s sets RIDESHARE_DEV=true", name)
		}
	}
}

// config is the overlay's shared configuration (its name carries a hash).
func (r *rendered) config(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	var found []*corev1.ConfigMap
	for name, cm := range r.configMaps {
		if strings.HasPrefix(name, configName) {
			found = append(found, cm)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one ConfigMap %s, have %d", configName, len(found))
	}
	return found[0]
}

// TestServicesNamedForPackages: the manifests name each service as its Go
// package is named, so a reader finds one from the other.
func TestServicesNamedForPackages(t *testing.T) {
	for _, s := range catalog.Services {
		// The package's path ends the name of the function that builds it:
		// ".../internal/users.newService".
		fn := goruntime.FuncForPC(reflect.ValueOf(s.New).Pointer()).Name()
		pkg, _, _ := strings.Cut(fn[strings.LastIndex(fn, "/")+1:], ".")
		if s.Name != pkg {
			t.Errorf("package %s declares service %q; the manifests name each after its package", pkg, s.Name)
		}
	}
}

// TestSecretsScript runs the script that makes staging's and production's
// Secrets and checks that it makes every Secret those overlays read, each
// service's secret derived as identity expects.
func TestSecretsScript(t *testing.T) {
	for _, tool := range []string{"bash", "openssl", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("secrets.sh needs %s: %v", tool, err)
		}
	}
	for _, o := range overlays {
		if o.dev {
			continue
		}
		t.Run(o.name, func(t *testing.T) {
			cmd := exec.Command("bash", filepath.Join("k8s", "secrets.sh"), o.namespace)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("secrets.sh: %v: %s", err, stderr.String())
			}
			made := map[string]*corev1.Secret{}
			for _, doc := range strings.Split(string(out), "\n---\n") {
				doc = strings.TrimPrefix(doc, "---\n")
				obj, _, err := strict.Decode([]byte(doc), nil, nil)
				if err != nil {
					t.Fatalf("secrets.sh printed %q: %v", doc, err)
				}
				s, ok := obj.(*corev1.Secret)
				if !ok {
					t.Fatalf("secrets.sh printed a %T", obj)
				}
				want := o.namespace
				if s.Name == "nats-auth" {
					want = "nats"
				}
				if s.Namespace != want {
					t.Errorf("Secret %s in namespace %q, want %s", s.Name, s.Namespace, want)
				}
				made[s.Name] = s
			}
			r := render(t, filepath.Join("k8s", "overlays", o.name))
			for _, ref := range r.secretKeys(t) {
				s, ok := made[ref.name]
				switch {
				case operatorSecrets[ref.name]:
				case !ok:
					t.Errorf("%s reads Secret %s, which secrets.sh does not make", ref.by, ref.name)
				case ref.key != "" && len(s.Data[ref.key]) == 0:
					t.Errorf("%s reads key %s of Secret %s, which secrets.sh leaves out", ref.by, ref.key, ref.name)
				}
			}
			for name, s := range made {
				if strings.HasPrefix(name, "rideshare-db-") && (s.Type != corev1.SecretTypeBasicAuth || s.Labels["cnpg.io/reload"] != "true") {
					t.Errorf("Secret %s: type %s, labels %v; CloudNativePG wants basic-auth, reloaded", name, s.Type, s.Labels)
				}
			}
			checkDerivedSecrets(t, func(name, key string) string {
				if s := made[name]; s != nil {
					return string(s.Data[key])
				}
				return ""
			})
			if got, want := made["nats-auth"].Data["rideshare-password"], made["rideshare-nats"].Data["RIDESHARE_NATS_PASSWORD"]; len(got) == 0 || !bytes.Equal(got, want) {
				t.Errorf("the broker's password for rideshare differs from the one the services use")
			}
		})
	}
}

// TestNATSValues checks the NATS chart's values against what the services
// expect of the broker: JetStream on disk, and a cluster as large as the
// streams' replication.
func TestNATSValues(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool `json:"enabled"`
					PVC     struct {
						Enabled bool   `json:"enabled"`
						Size    string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
			} `json:"jetstream"`
		} `json:"config"`
	}
	b, err := os.ReadFile(filepath.Join("k8s", "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	js := v.Config.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" {
		t.Errorf("JetStream must be on, with file storage on a volume: %+v", js)
	}
	r := render(t, filepath.Join("k8s", "overlays", "prod"))
	streams, err := strconv.Atoi(r.config(t).Data["RIDESHARE_STREAM_REPLICAS"])
	if err != nil {
		t.Fatal(err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 || streams > v.Config.Cluster.Replicas {
		t.Errorf("NATS cluster %+v for streams of %d replicas; want 3 servers, at least as many as stream replicas", v.Config.Cluster, streams)
	}
}

// compose is the part of a Compose file the rules read.
type compose struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Command     []string          `json:"command"`
		User        string            `json:"user"`
		ReadOnly    bool              `json:"read_only"`
		CapDrop     []string          `json:"cap_drop"`
		Environment map[string]string `json:"environment"`
		Healthcheck *struct {
			Test []string `json:"test"`
		} `json:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `json:"condition"`
		} `json:"depends_on"`
	} `json:"services"`
}

// defaulted reads Compose's ${VAR:-default} as its default.
var defaulted = regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)

// TestCompose checks the Compose file's structure (no Docker runs here):
// every service of the table from one pinned image with its health check,
// NATS with JetStream and PostgreSQL pinned and checked, and each service's
// secret, database and peers as the platform expects them.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	initSQL, err := os.ReadFile("postgres-init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, infra := range []string{"nats", "postgres"} {
		s, ok := c.Services[infra]
		if !ok {
			t.Errorf("no %s service", infra)
			continue
		}
		if err := pinned(s.Image); err != nil {
			t.Errorf("%s: %v", infra, err)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s has no health check", infra)
		}
	}
	if !slices.Contains(c.Services["nats"].Command, "--jetstream") {
		t.Errorf("nats runs %q, without --jetstream", c.Services["nats"].Command)
	}
	image := ""
	for name, svcDecl := range table {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("service %s is not in compose.yaml", name)
			continue
		}
		img := defaulted.ReplaceAllString(s.Image, "$1")
		if err := pinned(img); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if image == "" {
			image = img
		} else if img != image {
			t.Errorf("%s runs image %s, the others %s", name, img, image)
		}
		if !slices.Equal(s.Command, []string{"serve", name}) {
			t.Errorf("%s runs %q, want [serve %s]", name, s.Command, name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || !strings.HasSuffix(s.Healthcheck.Test[len(s.Healthcheck.Test)-1], "/readyz") {
			t.Errorf("%s: health check %+v, want one on /readyz", name, s.Healthcheck)
		}
		if s.User != "65532:65532" || !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: user %q, read_only %v, cap_drop %v; want the Kubernetes security context", name, s.User, s.ReadOnly, s.CapDrop)
		}
		for _, dep := range []string{"nats", "postgres"} {
			if s.DependsOn[dep].Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", name, dep)
			}
		}
		e := s.Environment
		if name != "identity" {
			master := c.Services["identity"].Environment["RIDESHARE_SERVICE_MASTER_SECRET"]
			if e["RIDESHARE_SERVICE_SECRET"] != auth.ServiceSecret(master, name) {
				t.Errorf("%s: RIDESHARE_SERVICE_SECRET is not derived from identity's master secret", name)
			}
		}
		peers := map[string]string{}
		for _, kv := range strings.Split(e["RIDESHARE_PEERS"], ",") {
			k, v, _ := strings.Cut(kv, "=")
			peers[k] = v
		}
		for _, callee := range append(slices.Clone(svcDecl.Calls), "identity") {
			if callee != name && peers[callee] != fmt.Sprintf("http://%s:%d", callee, port) {
				t.Errorf("%s: peer %s is %q, want its container http://%s:%d", name, callee, peers[callee], callee, port)
			}
		}
		if svcDecl.Database {
			want := fmt.Sprintf("postgres://%s@postgres:5432/%s?sslmode=disable", name, name)
			if e["RIDESHARE_DB"] != want {
				t.Errorf("%s: RIDESHARE_DB %q, want %q", name, e["RIDESHARE_DB"], want)
			}
			role := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s';", name, e["PGPASSWORD"])
			if e["PGPASSWORD"] == "" || !bytes.Contains(initSQL, []byte(role)) || !bytes.Contains(initSQL, []byte(fmt.Sprintf("CREATE DATABASE %s OWNER %s;", name, name))) {
				t.Errorf("%s: postgres-init.sql makes no role %s with its PGPASSWORD and no database it owns", name, name)
			}
		} else if _, ok := e["RIDESHARE_DB"]; ok {
			t.Errorf("%s owns no database but is given one", name)
		}
		if e["RIDESHARE_NATS_PASSWORD"] == "" || !slices.Contains(c.Services["nats"].Command, e["RIDESHARE_NATS_PASSWORD"]) {
			t.Errorf("%s: RIDESHARE_NATS_PASSWORD is not the broker's", name)
		}
	}
	gw := c.Services["gateway"]
	for name := range table {
		if name != "gateway" && gw.DependsOn[name].Condition != "service_healthy" {
			t.Errorf("the gateway, ready only when every service is, does not wait for %s", name)
		}
	}
}

func container(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", d.Name, len(cs))
	}
	return &cs[0]
}

func envOf(c *corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

// containerPort resolves a probe's port, a number or a port name.
func containerPort(c *corev1.Container, p string) int32 {
	if n, err := strconv.Atoi(p); err == nil {
		return int32(n)
	}
	for _, cp := range c.Ports {
		if cp.Name == p {
			return cp.ContainerPort
		}
	}
	return 0
}

func selects(t *testing.T, s *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	if s == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("selector %v: %v", s, err)
		return false
	}
	return sel.Matches(labels.Set(podLabels))
}

func selectorString(t *testing.T, s *metav1.LabelSelector) string {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("selector %v: %v", s, err)
		return "invalid"
	}
	if sel.Empty() {
		return "all"
	}
	return sel.String()
}

// first is the container's setting, or else the pod's.
func first[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
