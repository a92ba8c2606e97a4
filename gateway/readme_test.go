package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gen/registry"
)

// The README's configuration reference is a working config: every key in
// it exists, and the gateway accepts it.
func TestREADMEConfigReference(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i := strings.Index(doc, "\n## Configuration\n")
	if i < 0 {
		t.Fatal("README has no Configuration section")
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
		t.Fatalf("README config does not parse: %v", err)
	}
	if _, err := gateway.New(cfg, registry.Services()); err != nil {
		t.Fatalf("README config is refused: %v", err)
	}
	for _, key := range []string{"auth:", "rate_limit:", "register:", "stats:", "validation:", "trusted_proxies:", "default_access:"} {
		if !strings.Contains(block, key) {
			t.Errorf("the reference lacks %s", key)
		}
	}
}
