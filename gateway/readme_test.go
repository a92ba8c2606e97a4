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
	doc := readDoc(t, "configuration.md")
	i := strings.Index(doc, "\n## Configuration\n")
	if i < 0 {
		t.Fatal("docs/configuration.md has no Configuration section")
	}
	blocks := yamlBlocks(doc[i:])
	if len(blocks) == 0 {
		t.Fatal("no yaml block in the Configuration section")
	}
	block := blocks[0]
	cfg, err := loadConfigText(t, block)
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

// Every YAML block of docs/rate-limiting.md is a gateway config (or a part
// of one) that the gateway parses, unknown keys refused.
func TestRateLimitingDocConfigs(t *testing.T) {
	blocks := yamlBlocks(readDoc(t, "rate-limiting.md"))
	if len(blocks) < 3 {
		t.Fatalf("%d yaml blocks in docs/rate-limiting.md, want the limits, the redis block and the three replicas", len(blocks))
	}
	for i, block := range blocks {
		if _, err := loadConfigText(t, block); err != nil {
			t.Errorf("yaml block %d of docs/rate-limiting.md does not parse: %v\n%s", i+1, err, block)
		}
	}
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// yamlBlocks returns the bodies of doc's ```yaml blocks, in order.
func yamlBlocks(doc string) []string {
	var out []string
	for {
		start := strings.Index(doc, "```yaml\n")
		if start < 0 {
			return out
		}
		doc = doc[start+len("```yaml\n"):]
		end := strings.Index(doc, "```")
		if end < 0 {
			return out
		}
		out = append(out, doc[:end])
		doc = doc[end+len("```"):]
	}
}

// loadConfigText loads text as a config file, as the gateway's -config does.
func loadConfigText(t *testing.T, text string) (gateway.Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return gateway.LoadConfig(p)
}
