// Package version says which build of queuejob-operator a binary is. make image (and
// the Dockerfile) set Version and Revision with the linker:
//
//	go build -ldflags "-X github.com/queuejob/queuejob-operator/pkg/version.Version=0.1.0 \
//	  -X github.com/queuejob/queuejob-operator/pkg/version.Revision=$(git rev-parse HEAD)"
//
// A plain go build leaves Version "dev" and takes the revision from the VCS stamp Go
// embeds (vcs.revision), if any.
package version

import (
	"fmt"
	"runtime/debug"
)

// Set with -ldflags -X; see the package doc.
var (
	// Version is the release, e.g. "0.1.0"; "dev" when not set.
	Version = "dev"
	// Revision is the git commit the binary was built from; empty when not set.
	Revision = ""
)

// readBuildInfo is debug.ReadBuildInfo; a variable for the tests.
var readBuildInfo = debug.ReadBuildInfo

// GetRevision returns Revision, or else the vcs.revision Go stamped into the binary
// (with "-dirty" when vcs.modified), or else "unknown".
func GetRevision() string {
	if Revision != "" {
		return Revision
	}
	if bi, ok := readBuildInfo(); ok {
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// String is what --version prints: "NAME VERSION (revision REVISION)".
func String(name string) string {
	return fmt.Sprintf("%s %s (revision %s)", name, Version, GetRevision())
}
