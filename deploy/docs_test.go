package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
)

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// webConfig is the part of exporter-toolkit's web configuration
// docs/deploy.md's example uses.
type webConfig struct {
	TLSServerConfig struct {
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
	} `json:"tls_server_config"`
	BasicAuthUsers map[string]string `json:"basic_auth_users"`
}

// The YAML examples of docs/deploy.md decode strictly too: a reader who
// copies one gets what the API server accepts.
func TestDeployDocExamples(t *testing.T) {
	data, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlock.FindAllStringSubmatch(string(data), -1)
	var secret, endpoint, fallback bool
	for _, b := range blocks {
		block := b[1]
		switch {
		case strings.Contains(block, "kind: Secret"):
			var s corev1.Secret
			if err := decodeStrict([]byte(block), &s); err != nil {
				t.Errorf("the Secret example: %v", err)
				continue
			}
			var wc webConfig
			if err := decodeStrict([]byte(s.StringData["web-config.yml"]), &wc); err != nil {
				t.Errorf("the web configuration example: %v", err)
			}
			if wc.TLSServerConfig.CertFile == "" || wc.TLSServerConfig.KeyFile == "" || len(wc.BasicAuthUsers) != 1 {
				t.Errorf("the web configuration example: %+v", wc)
			}
			secret = true
		case strings.HasPrefix(block, "scheme: HTTPS"):
			var ep monitoringv1.PodMetricsEndpoint
			if err := decodeStrict([]byte(block), &ep); err != nil {
				t.Errorf("the PodMonitor endpoint example: %v", err)
			}
			endpoint = true
		case strings.HasPrefix(block, "securityContext:"):
			var c corev1.Container
			if err := decodeStrict([]byte(block), &c); err != nil {
				t.Errorf("the privileged fallback: %v", err)
			}
			if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
				t.Error("the privileged fallback is not privileged")
			}
			fallback = true
		}
	}
	if !secret || !endpoint || !fallback {
		t.Errorf("examples found: Secret %v, endpoint %v, fallback %v; want all", secret, endpoint, fallback)
	}
}
