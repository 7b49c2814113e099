package chart

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository, from this package's directory.
const repoRoot = "../.."

// markdownFiles returns the repository's markdown files (README.md, docs/*.md, the chart's
// and the examples' READMEs, the bench results), relative to repoRoot; not those under
// hidden directories, bin/ or dist/.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() && rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "bin" || rel == "dist") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"README.md", "docs/README.md"} {
		if !slices.Contains(files, want) {
			t.Fatalf("no %s among the markdown files %v", want, files)
		}
	}
	return files
}

// markdown is a markdown file split into the text outside fenced code blocks (with the
// fenced lines blanked, so that offsets keep their line numbers) and the fenced lines.
type markdown struct {
	prose string
	code  []string
}

func readMarkdown(t *testing.T, rel string) markdown {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	var md markdown
	lines := strings.Split(string(b), "\n")
	fenced := false
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			lines[i] = ""
			continue
		}
		if fenced {
			md.code = append(md.code, line)
			lines[i] = ""
		}
	}
	md.prose = strings.Join(lines, "\n")
	return md
}

var (
	codeSpan   = regexp.MustCompile("`[^`]+`")
	inlineLink = regexp.MustCompile(`\[[^\]]*\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]]+\]:\s*(\S+)`)
	atxHeading = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$`)
	mdLinkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	scheme     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// withoutCodeSpans blanks the inline code spans of prose (keeping its length and newlines),
// so that a [x](y) inside one is not taken for a link.
func withoutCodeSpans(prose string) string {
	return codeSpan.ReplaceAllStringFunc(prose, func(span string) string {
		return strings.Map(func(r rune) rune {
			if r == '\n' {
				return r
			}
			return ' '
		}, span)
	})
}

// githubSlug is the anchor GitHub gives a heading: its text (without inline markup)
// lowercased, every character but letters, digits, marks, '_', '-' and spaces dropped,
// spaces turned into '-'.
func githubSlug(heading string) string {
	text := mdLinkText.ReplaceAllString(heading, "$1")
	text = strings.NewReplacer("`", "", "*", "").Replace(text)
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the anchors of a markdown file's headings, with GitHub's -1, -2, ...
// for repeated ones.
func anchors(md markdown) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range atxHeading.FindAllStringSubmatch(md.prose, -1) {
		slug := githubSlug(m[1])
		if n := seen[slug]; n > 0 {
			out[slug+"-"+strconv.Itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// TestMarkdownLinksResolve: every relative link of the repository's markdown (README.md,
// docs/*.md, ...) names a file or directory that exists in the repository, and every
// #anchor, of the same file or of another markdown file, is the GitHub anchor of one of
// that file's headings.
func TestMarkdownLinksResolve(t *testing.T) {
	files := markdownFiles(t)
	docs := map[string]markdown{}
	for _, f := range files {
		docs[f] = readMarkdown(t, f)
	}
	checked := 0
	for _, f := range files {
		prose := withoutCodeSpans(docs[f].prose)
		var targets [][2]int // offsets of each link target in prose
		for _, re := range []*regexp.Regexp{inlineLink, refLink} {
			for _, m := range re.FindAllStringSubmatchIndex(prose, -1) {
				targets = append(targets, [2]int{m[2], m[3]})
			}
		}
		for _, at := range targets {
			target := prose[at[0]:at[1]]
			where := f + ":" + strconv.Itoa(1+strings.Count(prose[:at[0]], "\n"))
			if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
				continue // a URL: not checked here
			}
			checked++
			if err := checkLink(f, target, docs); err != "" {
				t.Errorf("%s: link %q: %s", where, target, err)
			}
		}
	}
	if checked == 0 {
		t.Error("no relative links found: the link scanner is broken")
	}
}

// checkLink says what is wrong with the relative link target of the markdown file from,
// or "" if it resolves.
func checkLink(from, target string, docs map[string]markdown) string {
	path, anchor, _ := strings.Cut(target, "#")
	dest := from
	if path != "" {
		dest = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(from), path)))
		if dest == ".." || strings.HasPrefix(dest, "../") || filepath.IsAbs(path) {
			return "points outside the repository"
		}
		if _, err := os.Stat(filepath.Join(repoRoot, dest)); err != nil {
			return "no such file or directory: " + dest
		}
	}
	if anchor == "" {
		return ""
	}
	md, ok := docs[dest]
	if !ok {
		return "an anchor into " + dest + ", which is not a markdown file of the repository"
	}
	if !anchors(md)[anchor] {
		var have []string
		for a := range anchors(md) {
			have = append(have, a)
		}
		slices.Sort(have)
		return "no heading of " + dest + " has the anchor #" + anchor + "; its anchors: " + strings.Join(have, " ")
	}
	return ""
}

var (
	makeCall   = regexp.MustCompile(`\bmake((?:[ \t]+[a-z][a-z0-9-]*)+)`)
	makeTarget = regexp.MustCompile(`(?m)^([a-zA-Z0-9][a-zA-Z0-9_.-]*(?:[ \t]+[a-zA-Z0-9][a-zA-Z0-9_.-]*)*)[ \t]*:(?:[^=]|$)`)
)

// TestMarkdownMakeTargetsExist: every `make TARGET ...` in the markdown's code (inline spans
// and fenced blocks, without shell comments) names targets of the Makefile.
func TestMarkdownMakeTargetsExist(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range makeTarget.FindAllStringSubmatch(string(b), -1) {
		for _, name := range strings.Fields(m[1]) {
			targets[name] = true
		}
	}
	if !targets["help"] || !targets["test"] {
		t.Fatalf("read no help or test target from the Makefile: %v", targets)
	}
	calls := 0
	for _, f := range markdownFiles(t) {
		md := readMarkdown(t, f)
		var code []string
		for _, span := range codeSpan.FindAllString(md.prose, -1) {
			code = append(code, strings.ReplaceAll(strings.Trim(span, "`"), "\n", " "))
		}
		for _, line := range md.code {
			line, _, _ = strings.Cut(line, "#")
			code = append(code, line)
		}
		for _, c := range code {
			for _, m := range makeCall.FindAllStringSubmatch(c, -1) {
				calls++
				for _, name := range strings.Fields(m[1]) {
					if !targets[name] {
						t.Errorf("%s: %q names %q, which is no target of the Makefile", f, strings.TrimSpace(m[0]), name)
					}
				}
			}
		}
	}
	if calls == 0 {
		t.Error("no make calls found in the markdown: the scanner is broken")
	}
}
