package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGetReadsVCSAndLinkerValues(t *testing.T) {
	defer func(f func() (*debug.BuildInfo, bool), v, c, d string) {
		readBuildInfo, Version, Commit, Date = f, v, c, d
	}(readBuildInfo, Version, Commit, Date)
	readBuildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.99", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		}}, true
	}
	in := Get()
	if in.Version != "dev" || in.Commit != "abc123" || in.BuildDate != "2026-01-02T03:04:05Z" || in.GoVersion != "go1.99" || !in.Modified {
		t.Fatalf("from build info: %+v", in)
	}
	if s := in.String(); !strings.Contains(s, "abc123-dirty") || !strings.HasPrefix(s, "dev ") {
		t.Fatalf("String: %q", s)
	}

	Version, Commit, Date = "v1.2.3", "def456", "2026-05-06T07:08:09Z"
	in = Get()
	if in.Version != "v1.2.3" || in.Commit != "def456" || in.BuildDate != "2026-05-06T07:08:09Z" {
		t.Fatalf("linker values should win: %+v", in)
	}

	readBuildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	Version, Commit, Date = "dev", "", ""
	if in = Get(); in.Commit != "unknown" || in.BuildDate != "unknown" || in.GoVersion == "" {
		t.Fatalf("without build info: %+v", in)
	}
}
