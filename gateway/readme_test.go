package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gen/registry"
)

// The configuration reference in docs/configuration.md is a working config:
// every key in it exists, and the gateway accepts it.
func TestConfigurationReference(t *testing.T) {
	raw, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i := strings.Index(doc, "\n## Configuration\n")
	if i < 0 {
		t.Fatal("docs/configuration.md has no Configuration section")
	}
	start := strings.Index(doc[i:], "```yaml\n")
	if start < 0 {
		t.Fatal("no yaml block in the Configuration section")
	}
	block := doc[i+start+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	p := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(p, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatalf("the reference config does not parse: %v", err)
	}
	if _, err := gateway.New(cfg, registry.Services()); err != nil {
		t.Fatalf("the reference config is refused: %v", err)
	}
	for _, key := range []string{"auth:", "rate_limit:", "register:", "stats:", "validation:", "trusted_proxies:", "default_access:"} {
		if !strings.Contains(block, key) {
			t.Errorf("the reference lacks %s", key)
		}
	}
}
