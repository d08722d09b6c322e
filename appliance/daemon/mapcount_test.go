package daemon

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestMappingCountsRequests: the daemon checks a mapping_counts request
// itself (a client need not be the CLI), and says when the counters are
// off rather than listing zeros.
func TestMappingCountsRequests(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	for _, tc := range []struct {
		req  request
		want string
	}{
		{request{Command: "mapping_counts", Format: "xml"}, `unknown format "xml"`},
		{request{Command: "mapping_counts", Format: "csv", By: "flows"}, `unknown order "flows"`},
		{request{Command: "mapping_counts", Format: "csv", Top: -1}, "top -1: want 1 to 100000"},
		{request{Command: "mapping_counts", Format: "csv", Top: MaxTop + 1}, "top 100001: want 1 to 100000"},
		{request{Command: "mapping_counts", Format: "json", Top: 3}, "per-mapping counters are off"},
	} {
		var b bytes.Buffer
		err := streamListing(h.sock, tc.req, &b)
		if err == nil || !strings.Contains(err.Error(), tc.want) || b.Len() != 0 {
			t.Errorf("%+v: %v (listing %q), want %q", tc.req, err, b.String(), tc.want)
		}
	}
	// The connection stays usable after a refused listing request.
	if _, err := QueryStats(h.sock); err != nil {
		t.Errorf("stats after refused requests: %v", err)
	}
}
