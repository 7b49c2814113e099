package image

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/queuejob/queuejob-operator/internal/image"
)

// There is no Docker here: the test reads the Dockerfile and compares each final stage
// with its image's spec, which make image builds.

// stage is one FROM of a Dockerfile.
type stage struct {
	name, base string
	entrypoint []string // nil: none
	user       string
	workdir    string
	env        map[string]string
	labels     map[string]string
	expose     []string
	copies     []copyInstr
	runs       []string
	args       []string
}

type copyInstr struct {
	from string
	srcs []string
	dest string
}

type dockerfile struct {
	globalArgs map[string]string // ARG NAME=DEFAULT before the first FROM
	stages     []*stage
}

func (d *dockerfile) stage(name string) *stage {
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

// parseDockerfile reads the instructions this project's Dockerfile uses: it joins
// continuation lines, skips comments and the parser directive, and fails on anything
// it does not know.
func parseDockerfile(t *testing.T, file string) *dockerfile {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends in a continuation line", file)
	}

	d := &dockerfile{globalArgs: map[string]string{}}
	var s *stage
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		instr = strings.ToUpper(instr)
		if s == nil && instr != "FROM" && instr != "ARG" {
			t.Fatalf("%s: %s before the first FROM", file, instr)
		}
		switch instr {
		case "ARG":
			for _, kv := range words(t, rest) {
				k, v, _ := strings.Cut(kv, "=")
				if s == nil {
					d.globalArgs[k] = v
				} else {
					s.args = append(s.args, k)
				}
			}
		case "FROM":
			w := words(t, rest)
			w = slices.DeleteFunc(w, func(x string) bool { return strings.HasPrefix(x, "--platform=") })
			s = &stage{env: map[string]string{}, labels: map[string]string{}}
			switch {
			case len(w) == 3 && strings.EqualFold(w[1], "AS"):
				s.base, s.name = w[0], w[2]
			case len(w) == 1:
				s.base = w[0]
			default:
				t.Fatalf("%s: FROM %s", file, rest)
			}
			d.stages = append(d.stages, s)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &s.entrypoint); err != nil {
				t.Fatalf("%s: ENTRYPOINT %s: want the exec (JSON) form: %v", file, rest, err)
			}
		case "USER":
			s.user = rest
		case "WORKDIR":
			s.workdir = rest
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				s.expose = append(s.expose, p)
			}
		case "ENV", "LABEL":
			m := s.env
			if instr == "LABEL" {
				m = s.labels
			}
			for _, kv := range words(t, rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("%s: %s %s: want KEY=VALUE pairs", file, instr, rest)
				}
				m[k] = v
			}
		case "COPY":
			c := copyInstr{}
			var paths []string
			for _, w := range words(t, rest) {
				if v, ok := strings.CutPrefix(w, "--from="); ok {
					c.from = v
				} else if !strings.HasPrefix(w, "--") {
					paths = append(paths, w)
				}
			}
			if len(paths) < 2 {
				t.Fatalf("%s: COPY %s: want sources and a destination", file, rest)
			}
			c.srcs, c.dest = paths[:len(paths)-1], paths[len(paths)-1]
			s.copies = append(s.copies, c)
		case "RUN":
			s.runs = append(s.runs, rest)
		default:
			t.Fatalf("%s: instruction %s: the test does not know it; teach parseDockerfile", file, instr)
		}
	}
	return d
}

// words splits s at blanks outside double quotes and removes the quotes (a backslash
// escapes the next character inside them).
func words(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case !quoted && unicode.IsSpace(rune(c)):
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// TestDockerfile: every image of make image is a final stage (FROM scratch) of the
// Dockerfile, named after it, with the same binaries at the same paths, built from the
// same packages, and the same ENTRYPOINT, USER, WORKDIR, ENV, EXPOSE and LABELs; and the
// Dockerfile has no other final stage.
func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t, filepath.Join(moduleDir(t), "Dockerfile"))
	var finals []string
	for _, s := range d.stages {
		if s.base == "scratch" {
			finals = append(finals, s.name)
		}
	}
	slices.Sort(finals)
	names := image.Names()
	slices.Sort(names)
	if !slices.Equal(finals, names) {
		t.Errorf("the Dockerfile's FROM scratch stages are %q; make image builds %q", finals, names)
	}
	// docker build without --target builds the manager.
	if last := d.stages[len(d.stages)-1].name; last != "queuejob-operator" {
		t.Errorf("the last stage, docker build's default, is %q; want queuejob-operator", last)
	}

	for _, spec := range image.Specs() {
		t.Run(spec.Name, func(t *testing.T) {
			s := d.stage(spec.Name)
			if s == nil {
				t.Fatalf("no stage %s", spec.Name)
			}
			if s.base != "scratch" {
				t.Errorf("FROM %s, want scratch", s.base)
			}
			if !slices.Equal(s.entrypoint, spec.Entrypoint) {
				t.Errorf("ENTRYPOINT %q, make image's %q", s.entrypoint, spec.Entrypoint)
			}
			if s.user != spec.User() {
				t.Errorf("USER %q, make image's %q", s.user, spec.User())
			}
			if s.workdir != "/" {
				t.Errorf("WORKDIR %q, make image's /", s.workdir)
			}
			var env []string
			for k, v := range s.env {
				env = append(env, k+"="+v)
			}
			slices.Sort(env)
			if !slices.Equal(env, spec.Env()) {
				t.Errorf("ENV %q, make image's %q", env, spec.Env())
			}
			expose := slices.Sorted(slices.Values(s.expose))
			if !slices.Equal(expose, spec.Ports) {
				t.Errorf("EXPOSE %q, make image's %q", expose, spec.Ports)
			}
			wantLabels := spec.StaticLabels()
			wantLabels[image.LabelVersion] = "${VERSION}"
			wantLabels[image.LabelRevision] = "${REVISION}"
			if !mapsEqual(s.labels, wantLabels) {
				t.Errorf("LABEL %q, want %q", s.labels, wantLabels)
			}
			for _, a := range []string{"VERSION", "REVISION"} {
				if !slices.Contains(s.args, a) {
					t.Errorf("no ARG %s in the stage: its LABEL would be empty", a)
				}
			}

			// The binaries: one COPY per file, from a stage that builds its package.
			var dests []string
			for _, c := range s.copies {
				dests = append(dests, c.dest)
			}
			var want []string
			for _, f := range spec.Files {
				want = append(want, f.Path)
			}
			if !slices.Equal(slices.Sorted(slices.Values(dests)), slices.Sorted(slices.Values(want))) {
				t.Errorf("COPY destinations %q, make image's files %q", dests, want)
			}
			for _, f := range spec.Files {
				i := slices.IndexFunc(s.copies, func(c copyInstr) bool { return c.dest == f.Path })
				if i < 0 {
					continue
				}
				c := s.copies[i]
				from := d.stage(c.from)
				if from == nil {
					t.Errorf("COPY %s: no stage %q", f.Path, c.from)
					continue
				}
				build := regexp.MustCompile(`go build .*-o /out/ ` + regexp.QuoteMeta(f.Package) + `$`)
				if !slices.ContainsFunc(from.runs, build.MatchString) {
					t.Errorf("stage %s does not `go build ... -o /out/ %s`: runs %q", c.from, f.Package, from.runs)
				}
				if !slices.Equal(c.srcs, []string{"/out/" + path.Base(f.Package)}) {
					t.Errorf("COPY %s from %q, want /out/%s (go build -o /out/ names it after its package)", f.Path, c.srcs, path.Base(f.Package))
				}
			}
		})
	}

	// The Go stages build as make image does: static, stripped, trimmed, with the version.
	src := d.stage("source")
	if src == nil {
		t.Fatal("no stage source")
	}
	if src.env["CGO_ENABLED"] != "0" {
		t.Errorf("stage source: CGO_ENABLED=%q, want 0", src.env["CGO_ENABLED"])
	}
	if want := image.LDFlags("${VERSION}", "${REVISION}"); src.env["LDFLAGS"] != want {
		t.Errorf("stage source: LDFLAGS=%q, make image's %q", src.env["LDFLAGS"], want)
	}
	for _, s := range d.stages {
		for _, r := range s.runs {
			if strings.Contains(r, "go build") && !strings.Contains(r, `go build -trimpath -buildvcs=false -ldflags "$LDFLAGS"`) {
				t.Errorf("stage %s: %q: want go build -trimpath -buildvcs=false -ldflags \"$LDFLAGS\"", s.name, r)
			}
		}
	}
}
