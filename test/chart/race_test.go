//go:build race

package chart

// raceEnabled: this test binary was built with -race, so the manager is too, which reuses
// the packages `go test -race` already compiled.
const raceEnabled = true
