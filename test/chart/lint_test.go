package chart

import (
	"os/exec"
	"strings"
	"testing"
)

// helmLint runs `helm lint --strict` on the chart with args; it fails the test when the lint
// fails, and returns its output.
func helmLint(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"lint", "--strict", chartDir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("helm lint --strict %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestHelmLintStrict: `helm lint --strict` (make helm-lint) passes at the default values and
// with each of TestValuesMatrix's cases' values, in the case's namespace.
func TestHelmLintStrict(t *testing.T) {
	helmLint(t)
	for _, tc := range matrixCases() {
		t.Run(tc.name, func(t *testing.T) {
			helmLint(t, append([]string{"--namespace", tc.name + "-system"}, tc.args()...)...)
		})
	}
}

// TestLongNames: with the longest release name Helm allows (53 characters), every object's
// name fits in 63 characters (the Service's must: a DNS label), the render applies to the
// API server, and helm lint --strict passes with a 63-character fullnameOverride.
func TestLongNames(t *testing.T) {
	c := needCluster(t)
	ctx := testCtx(t)
	rel := strings.Repeat("long-release-", 4) + "x" // 53 characters
	if len(rel) != 53 {
		t.Fatalf("the release name has %d characters", len(rel))
	}
	ns := "long-names"
	objs := renderAs(t, rel, ns, "--set", "podDisruptionBudget.enabled=true", "--set", "replicas=2")
	createNamespace(t, ctx, c, ns, nil)
	for _, o := range objs {
		if len(o.name) > 63 {
			t.Errorf("%s: the name has %d characters, over 63", o, len(o.name))
		}
		applyObject(t, ctx, c, o)
	}
	helmLint(t, "--set", "fullnameOverride="+strings.Repeat("f", 63))
}
