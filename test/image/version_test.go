package image

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestVersionsAgree: the Makefile's VERSION (the images' tag), the Dockerfile's
// default VERSION and the chart's appVersion (the chart's default image tag) are one.
func TestVersionsAgree(t *testing.T) {
	dir := moduleDir(t)
	find := func(file, re string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(re).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no line matching %s", file, re)
		}
		return string(m[1])
	}
	makefile := find("Makefile", `(?m)^VERSION \?= (\S+)$`)
	chart := find("charts/queuejob-operator/Chart.yaml", `(?m)^appVersion: "?([^"\s]+)"?$`)
	docker := find("Dockerfile", `(?m)^ARG VERSION=(\S+)$`)
	if makefile != chart || docker != chart {
		t.Errorf("Makefile VERSION %s, Dockerfile VERSION %s, chart appVersion %s: want one version", makefile, docker, chart)
	}
}
