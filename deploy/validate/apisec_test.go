package validate

import (
	"os"
	"path"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

func decodeStrict(t *testing.T, file string, obj any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// segdAPIConfig is the api section of segd's config in the ConfigMap.
type segdAPIConfig struct {
	Addr                         string   `json:"addr"`
	Token                        string   `json:"token"`
	InsecureAllowUnauthenticated bool     `json:"insecure_allow_unauthenticated"`
	AllowedHosts                 []string `json:"allowed_hosts"`
	Auth                         struct {
		ReadTokens      []string `json:"read_tokens"`
		PIITokens       []string `json:"pii_tokens"`
		AdminTokens     []string `json:"admin_tokens"`
		ReadTokensFile  string   `json:"read_tokens_file"`
		PIITokensFile   string   `json:"pii_tokens_file"`
		AdminTokensFile string   `json:"admin_tokens_file"`
		Metrics         string   `json:"metrics"`
	} `json:"auth"`
	TLS struct {
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
	} `json:"tls"`
}

// TestK8sAPISecurity: the Kubernetes deployment gives the API credentials
// from a Secret (mounted files, no token inline in the ConfigMap), serves
// it over TLS from a Secret with probes and scrapes on HTTPS, and a
// NetworkPolicy admits only the namespace's pods and Prometheus.
func TestK8sAPISecurity(t *testing.T) {
	var cm corev1.ConfigMap
	decodeStrict(t, "../k8s/configmap.yaml", &cm)
	var cfg struct {
		API segdAPIConfig `json:"api"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["segd.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	api := cfg.API
	if api.Token != "" || len(api.Auth.ReadTokens)+len(api.Auth.PIITokens)+len(api.Auth.AdminTokens) > 0 {
		t.Error("the ConfigMap inlines API tokens: they belong in the Secret")
	}
	if api.InsecureAllowUnauthenticated {
		t.Error("the ConfigMap turns API authentication off")
	}
	if api.Auth.Metrics != "" && api.Auth.Metrics != "open" {
		t.Errorf("api.auth.metrics %q: Prometheus (annotations) scrapes without a token", api.Auth.Metrics)
	}
	var ss appsv1.StatefulSet
	decodeStrict(t, "../k8s/statefulset.yaml", &ss)
	pod := ss.Spec.Template.Spec
	c := pod.Containers[0]
	// mountedSecret is the Secret whose volume holds file, or "".
	mountedSecret := func(file string) string {
		for _, m := range c.VolumeMounts {
			if path.Dir(file) != path.Clean(m.MountPath) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					for _, it := range v.Secret.Items {
						if it.Path == path.Base(file) {
							return v.Secret.SecretName
						}
					}
					if len(v.Secret.Items) == 0 {
						return v.Secret.SecretName
					}
				}
			}
		}
		return ""
	}
	var secret corev1.Secret
	decodeStrict(t, "../k8s/secret-api-tokens.yaml", &secret)
	for _, f := range []struct{ key, file string }{{"read", api.Auth.ReadTokensFile}, {"pii", api.Auth.PIITokensFile}, {"admin", api.Auth.AdminTokensFile}} {
		if f.file == "" {
			t.Errorf("api.auth.%s_tokens_file is not set", f.key)
			continue
		}
		if got := mountedSecret(f.file); got != secret.Name {
			t.Errorf("api.auth.%s_tokens_file %s is not a file of the Secret %s (mounted from %q)", f.key, f.file, secret.Name, got)
		}
		v, ok := secret.StringData[f.key]
		if !ok {
			_, ok = secret.Data[f.key]
		}
		if !ok || path.Base(f.file) != f.key {
			t.Errorf("the Secret %s has no key %s for %s", secret.Name, f.key, f.file)
		}
		if strings.TrimSpace(v) != "" {
			t.Errorf("the shipped Secret holds a %s token: ship it empty", f.key)
		}
	}
	if api.TLS.CertFile == "" || api.TLS.KeyFile == "" {
		t.Fatal("api.tls.cert_file/key_file are not set")
	}
	for _, f := range []string{api.TLS.CertFile, api.TLS.KeyFile} {
		if s := mountedSecret(f); s == "" || s == secret.Name {
			t.Errorf("%s is not a file of a TLS Secret (got %q)", f, s)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("the %s probe must use HTTPS", name)
		}
	}
	if ss.Spec.Template.Annotations["prometheus.io/scheme"] != "https" {
		t.Error("prometheus.io/scheme must be https")
	}

	var np networkingv1.NetworkPolicy
	decodeStrict(t, "../k8s/networkpolicy.yaml", &np)
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != ss.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
		t.Error("the NetworkPolicy does not select segd's pods")
	}
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("policy types %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("%d ingress rules, want 1", len(np.Spec.Ingress))
	}
	in := np.Spec.Ingress[0]
	var sameNamespace, prometheus bool
	for _, p := range in.From {
		switch {
		case p.IPBlock != nil:
			t.Errorf("ingress from an IP block %v: only the namespace's pods and Prometheus", p.IPBlock)
		case p.NamespaceSelector == nil && p.PodSelector != nil && len(p.PodSelector.MatchLabels) == 0 && len(p.PodSelector.MatchExpressions) == 0:
			sameNamespace = true
		case p.NamespaceSelector != nil && p.PodSelector != nil && strings.Contains(p.PodSelector.MatchLabels["app.kubernetes.io/name"], "prometheus"):
			prometheus = true
		default:
			t.Errorf("unexpected ingress peer %+v", p)
		}
	}
	if !sameNamespace || !prometheus {
		t.Errorf("ingress from the namespace's pods %v, from Prometheus %v: want both", sameNamespace, prometheus)
	}
	if len(in.Ports) != 1 || in.Ports[0].Port == nil || in.Ports[0].Port.String() != "http" {
		t.Errorf("ingress ports %v, want the http port only", in.Ports)
	}
	kust, err := os.ReadFile("../k8s/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(kust, &k); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"secret-api-tokens.yaml", "networkpolicy.yaml"} {
		if !strings.Contains(strings.Join(k.Resources, " "), want) {
			t.Errorf("kustomization.yaml does not apply %s", want)
		}
	}
}

// TestComposeAPIOnLoopback: docker compose publishes segd's API on the
// host's loopback only, or the config sets credentials; without
// credentials the API answers only loopback Host names.
func TestComposeAPIOnLoopback(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Ports []string `json:"ports"`
		} `json:"services"`
	}
	b, err := os.ReadFile("../compose/docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		API segdAPIConfig `json:"api"`
	}
	b, err = os.ReadFile("../compose/segd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	api := cfg.API
	credentials := api.Token != "" || len(api.Auth.ReadTokens)+len(api.Auth.PIITokens)+len(api.Auth.AdminTokens) > 0 ||
		api.Auth.ReadTokensFile != "" || api.Auth.PIITokensFile != "" || api.Auth.AdminTokensFile != ""
	ports := compose.Services["segd"].Ports
	if len(ports) == 0 {
		t.Fatal("the segd service publishes no port")
	}
	for _, p := range ports {
		if !credentials && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("port %q is published beyond the host's loopback with no API credentials", p)
		}
	}
	if !credentials {
		if len(api.AllowedHosts) == 0 {
			t.Error("no credentials and no api.allowed_hosts: a web page could read the API through DNS rebinding")
		}
		for _, h := range api.AllowedHosts {
			if h != "localhost" && h != "127.0.0.1" && h != "::1" {
				t.Errorf("api.allowed_hosts has %q: only loopback names", h)
			}
		}
	}
}
