//go:build !race

package chart

// raceEnabled: this test binary was built without -race.
const raceEnabled = false
