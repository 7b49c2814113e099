// Command image builds the project's OCI image tarballs without Docker (make image):
//
//	go run ./hack/image [--version 0.1.0] [--repo ghcr.io/queuejob] \
//	  [--platforms linux/amd64,linux/arm64] [--out dist/images] [NAME...]
//
// NAME is one of the images of internal/image (default: all). Each is written to
// OUT/NAME.tar, an OCI image layout whose index.json names the image REPO/NAME:VERSION;
// load it with `ctr -n k8s.io images import OUT/NAME.tar`.
//
// The revision is `git rev-parse HEAD`, with "-dirty" when `git status --porcelain` is not
// empty (or "unknown" outside git); the creation time,
// and the time of every file in the images, is $SOURCE_DATE_EPOCH, else the commit's
// time, else 1970: the same sources give the same digests.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/queuejob/queuejob-operator/internal/image"
)

func main() {
	version := flag.String("version", "", "version of the binaries, labels and tags (required; the Makefile's VERSION)")
	revision := flag.String("revision", "", "git revision for the binaries and labels (default: git rev-parse HEAD, -dirty when git status --porcelain is not empty; unknown outside git)")
	repo := flag.String("repo", image.DefaultRepo, "image repository: the images are REPO/NAME:VERSION")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms of each image index")
	out := flag.String("out", "dist/images", "directory of the tarballs NAME.tar")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/image [flags] [NAME...]\nNAME: %s (default: all)\nFlags:\n", strings.Join(image.Names(), ", "))
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*version, *revision, *repo, *platforms, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(version, revision, repo, platforms, out string, names []string) error {
	if version == "" {
		return fmt.Errorf("--version is required")
	}
	ps, err := image.ParsePlatforms(platforms)
	if err != nil {
		return err
	}
	specs := image.Specs()
	if len(names) > 0 {
		specs = nil
		for _, n := range names {
			s, ok := image.Lookup(n)
			if !ok {
				return fmt.Errorf("no image %q; the images are %s", n, strings.Join(image.Names(), ", "))
			}
			specs = append(specs, s)
		}
	}
	if revision == "" {
		revision = gitRevision("")
	}
	created, err := createdTime()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	rs, err := image.Build(ctx, specs, image.Options{
		Version: version, Revision: revision, Repo: repo, Platforms: ps,
		Created: created, OutDir: out, Log: os.Stderr,
	})
	if err != nil {
		return err
	}
	fmt.Printf("%d images (%s), revision %s, created %s, in %s:\n", len(rs), platforms, revision, created.UTC().Format(time.RFC3339), time.Since(start).Round(time.Second))
	for _, r := range rs {
		fmt.Printf("  %-28s %7.1f MiB  %s  %s\n", r.Tarball, float64(r.Size)/(1<<20), r.Ref, r.Digest)
	}
	return nil
}

// createdTime is $SOURCE_DATE_EPOCH, else HEAD's commit time, else the Unix epoch.
func createdTime() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		s = gitOr("0", "log", "-1", "--format=%ct")
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// gitRevision is `git rev-parse HEAD` of the checkout at dir ("" for the current
// directory), with "-dirty" when `git status --porcelain` lists a change or an untracked
// file (as pkg/version marks a binary built from a modified tree), or "unknown" outside git.
// A clean tree's revision is its commit alone, so its images stay reproducible.
func gitRevision(dir string) string {
	rev := gitOr("unknown", append(gitDir(dir), "rev-parse", "HEAD")...)
	if rev == "unknown" {
		return rev
	}
	status, err := exec.Command("git", append(gitDir(dir), "status", "--porcelain")...).Output()
	if err != nil || len(strings.TrimSpace(string(status))) > 0 {
		return rev + "-dirty"
	}
	return rev
}

// gitDir are git's arguments to work in dir, none for "".
func gitDir(dir string) []string {
	if dir == "" {
		return nil
	}
	return []string{"-C", dir}
}

// gitOr is the output of git args, or def when git fails (no git, not a checkout).
func gitOr(def string, args ...string) string {
	b, err := exec.Command("git", args...).Output()
	if v := strings.TrimSpace(string(b)); err == nil && v != "" {
		return v
	}
	return def
}
