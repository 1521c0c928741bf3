// Package validate checks deploy/k8s against the Kubernetes API types, with
// no cluster: every manifest must decode strictly (an unknown or misspelled
// field is an error) into the type its kind names, and the StatefulSet must
// keep the properties docs/operations rely on. It is a module of its own so
// the Kubernetes libraries stay out of segd's go.mod; `make lint` and
// `make test` run it.
package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("../k8s/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var obj any
		switch meta.Kind {
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "Service":
			obj = &corev1.Service{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "Secret":
			obj = &corev1.Secret{}
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "Kustomization":
			continue
		default:
			t.Errorf("%s: unexpected kind %q", f, meta.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		kinds[meta.Kind]++
	}
	for _, k := range []string{"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "Secret", "NetworkPolicy"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s manifests, want 1", kinds[k], k)
		}
	}
}

func TestStatefulSetShape(t *testing.T) {
	b, err := os.ReadFile("../k8s/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ss appsv1.StatefulSet
	if err := yaml.UnmarshalStrict(b, &ss); err != nil {
		t.Fatal(err)
	}
	pod := ss.Spec.Template
	if pod.Labels["app.kubernetes.io/name"] != ss.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
		t.Error("selector does not match the pod labels")
	}
	if pod.Annotations["prometheus.io/scrape"] != "true" || pod.Annotations["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations: %v", pod.Annotations)
	}
	if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod must run as non-root")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("readiness probe must be GET /readyz")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("liveness probe must be GET /healthz")
	}
	var stateMount string
	for _, m := range c.VolumeMounts {
		if m.Name == "state" {
			stateMount = m.MountPath
		}
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Name != "state" || stateMount == "" {
		t.Error("the state dir must be on a persistent volume claim template")
	}
	cm, err := os.ReadFile("../k8s/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cm), "dir: "+stateMount) {
		t.Errorf("state.dir in the config is not the volume mount %s", stateMount)
	}
	svc, _ := os.ReadFile("../k8s/service.yaml")
	var s corev1.Service
	if err := yaml.UnmarshalStrict(svc, &s); err != nil || s.Spec.ClusterIP != "None" || ss.Spec.ServiceName != s.Name {
		t.Errorf("the StatefulSet needs its headless Service: %v", err)
	}
}
