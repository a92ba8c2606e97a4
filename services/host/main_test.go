package host

import (
	"os"
	"testing"

	"github.com/portico-gw/portico/internal/testconsul"
)

// TestMain stops the Consul agent the tests share (testconsul.Shared), which
// would otherwise outlive the test binary.
func TestMain(m *testing.M) { os.Exit(testconsul.Main(m)) }
