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
