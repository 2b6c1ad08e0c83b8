package process_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestNodeExampleRuns: the Node.js example of docs/processes.md
// (examples/node-api), as its config is written, runs under edge: both
// instances start, pass their health check and answer through the route.
func TestNodeExampleRuns(t *testing.T) {
	t.Parallel()
	testpeer.Binary(t, "node")
	dir := filepath.Join(testpeer.RepoRoot(t), "examples", "node-api")
	raw, err := os.ReadFile(filepath.Join(dir, "edge.toml"))
	if err != nil {
		t.Fatal(err)
	}
	// The test's own listeners replace the example's [server]; the app's
	// directory, relative to the example's config file, is given whole.
	_, body, found := strings.Cut(string(raw), "[tls]")
	if !found {
		t.Fatal("the example has no [tls] table")
	}
	body = strings.Replace("[tls]"+body, "[upstreams.run]\n", fmt.Sprintf("[upstreams.run]\ndir = %q\n", dir), 1)
	e := testpeer.StartEdge(t, "", body)
	c := e.Client(t, false)
	seen := map[string]bool{}
	eventually(t, 30*time.Second, "both instances answer", func() bool {
		resp, err := c.Get(e.URL("127.0.0.1", "/api/hello"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var got struct {
			Code int
			Data struct {
				Path, Instance string
			}
		}
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&got) != nil || got.Data.Path != "/api/hello" {
			return false
		}
		seen[got.Data.Instance] = true
		return seen["0"] && seen["1"]
	})
}
