package main

import (
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/daemon"
)

// TestJSONLogDurations: durations in the JSON log carry their unit.
func TestJSONLogDurations(t *testing.T) {
	var b strings.Builder
	log, err := daemon.NewLogger(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "wait", 1500*time.Millisecond)
	if !strings.Contains(b.String(), `"wait":"1.5s"`) {
		t.Errorf("log line %s", b.String())
	}
}
