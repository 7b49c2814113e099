package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestGitRevision: the revision of a clean checkout is its commit, reproducibly; with a
// changed or untracked file, as pkg/version's, it ends in -dirty; outside git it is unknown.
func TestGitRevision(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := gitRevision(dir); got != "unknown" {
		t.Errorf("outside a checkout: %q, want unknown", got)
	}
	git("init", "-q")
	write("a", "1")
	git("add", "a")
	git("commit", "-q", "-m", "a")
	clean := gitRevision(dir)
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(clean) {
		t.Fatalf("clean checkout: %q, want the commit", clean)
	}
	if again := gitRevision(dir); again != clean {
		t.Errorf("clean checkout, twice: %q then %q", clean, again)
	}
	write("a", "2")
	if got := gitRevision(dir); got != clean+"-dirty" {
		t.Errorf("a changed file: %q, want %s-dirty", got, clean)
	}
	git("checkout", "-q", "a")
	write("b", "new")
	if got := gitRevision(dir); got != clean+"-dirty" {
		t.Errorf("an untracked file: %q, want %s-dirty", got, clean)
	}
}
