package version

import (
	"runtime/debug"
	"testing"
)

func withBuildInfo(t *testing.T, bi *debug.BuildInfo) {
	t.Helper()
	old := readBuildInfo
	readBuildInfo = func() (*debug.BuildInfo, bool) { return bi, bi != nil }
	t.Cleanup(func() { readBuildInfo = old })
}

func withVars(t *testing.T, version, revision string) {
	t.Helper()
	oldV, oldR := Version, Revision
	Version, Revision = version, revision
	t.Cleanup(func() { Version, Revision = oldV, oldR })
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name              string
		version, revision string
		settings          []debug.BuildSetting
		noBuildInfo       bool
		want              string
	}{
		{name: "linker flags win", version: "0.1.0", revision: "abc123",
			settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "fromvcs"}},
			want:     "queuejob-operator 0.1.0 (revision abc123)"},
		{name: "vcs stamp", version: "dev",
			settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "fromvcs"}, {Key: "vcs.modified", Value: "false"}},
			want:     "queuejob-operator dev (revision fromvcs)"},
		{name: "dirty vcs stamp", version: "dev",
			settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "fromvcs"}, {Key: "vcs.modified", Value: "true"}},
			want:     "queuejob-operator dev (revision fromvcs-dirty)"},
		{name: "no vcs stamp", version: "dev", want: "queuejob-operator dev (revision unknown)"},
		{name: "no build info", version: "dev", noBuildInfo: true, want: "queuejob-operator dev (revision unknown)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withVars(t, tc.version, tc.revision)
			if tc.noBuildInfo {
				withBuildInfo(t, nil)
			} else {
				withBuildInfo(t, &debug.BuildInfo{Settings: tc.settings})
			}
			if got := String("queuejob-operator"); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	// The defaults a plain go build (and go test) gets.
	if Version != "dev" || Revision != "" {
		t.Errorf("Version, Revision = %q, %q; want dev and empty unless set with -ldflags", Version, Revision)
	}
}
