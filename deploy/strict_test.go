package deploy

import (
	"errors"
	"fmt"
	"os"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// decodeStrict decodes one YAML document into v as the API server would
// refuse it: a duplicated key, or a field v's type does not have (a
// misspelling, a field of another API version), is an error, not silently
// dropped. Field names match case-sensitively, as the API server's do:
// encoding/json's Decoder with DisallowUnknownFields would take "hostPid"
// for hostPID, which the API server drops.
func decodeStrict(data []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("converting YAML: %w", err)
	}
	strict, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("decoding strictly: %w", errors.Join(strict...))
	}
	return nil
}

// mustDecode is decodeStrict of a file, failing the test on error.
func mustDecode(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// yamlTypeMeta reads only the apiVersion and kind of a document.
func yamlTypeMeta(data []byte, meta *metav1.TypeMeta) error {
	return yaml.Unmarshal(data, meta)
}
