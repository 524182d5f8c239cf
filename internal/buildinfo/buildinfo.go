// Package buildinfo reports what a Tollgate binary was built from: the
// release version (set by the linker), the commit and its date and the Go
// version (from the module's build information).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, Commit and Date the commit and build time, set with
// -ldflags "-X github.com/tollgate-db/tollgate/internal/buildinfo.Version=v1.2.3"
// (see the Makefile); a plain `go build` leaves "dev" and whatever VCS stamp
// the toolchain recorded, which -buildvcs=false omits.
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// Info is one binary's build description.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	GoVersion string `json:"go_version"`
	Modified  bool   `json:"modified,omitempty"`
}

// readBuildInfo is replaced in tests.
var readBuildInfo = debug.ReadBuildInfo

// Get returns the build description; fields the build did not record are
// "unknown".
func Get() (in Info) {
	in = Info{Version: Version, Commit: "unknown", BuildDate: "unknown", GoVersion: runtime.Version()}
	defer func() {
		if Commit != "" {
			in.Commit = Commit
		}
		if Date != "" {
			in.BuildDate = Date
		}
	}()
	bi, ok := readBuildInfo()
	if !ok {
		return in
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.BuildDate = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form `NAME version` prints.
func (i Info) String() string {
	commit := i.Commit
	if i.Modified {
		commit += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, commit, i.BuildDate, i.GoVersion)
}
