package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

const chartREADME = chartDir + "/README.md"

// section returns the lines of path between <!-- name:begin --> and <!-- name:end -->.
func section(t *testing.T, path, name string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("%s: no %s ... %s section", path, begin, end)
	}
	return strings.Split(strings.TrimSpace(text[i+len(begin):j]), "\n")
}

// tableRows returns the cells of each row of a markdown table, without its header and
// separator rows.
func tableRows(t *testing.T, lines []string) [][]string {
	t.Helper()
	var rows [][]string
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") {
			t.Fatalf("not a table row: %q", line)
		}
		if i < 2 {
			continue // the header and |---|
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for k := range cells {
			cells[k] = strings.TrimSpace(cells[k])
		}
		rows = append(rows, cells)
	}
	return rows
}

var code = regexp.MustCompile("^`([^`]*)`$")

// unquote returns the text of a cell that is one `code` span.
func unquote(t *testing.T, cell string) string {
	t.Helper()
	m := code.FindStringSubmatch(cell)
	if m == nil {
		t.Fatalf("cell %q: want one `code` span", cell)
	}
	return m[1]
}

// leaves returns each leaf of a values tree, by dotted key, with its default as compact
// JSON. A leaf is a value that is not a non-empty map: a scalar, a list, or {}.
func leaves(prefix string, v any, into map[string]string) error {
	if m, ok := v.(map[string]any); ok && len(m) > 0 {
		for k, e := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			if err := leaves(key, e, into); err != nil {
				return err
			}
		}
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	into[prefix] = string(b)
	return nil
}

// The chart README's values table lists every leaf key of values.yaml with its default
// (as compact JSON in a code span), once, and no other key; each row has a description.
func TestREADMEValues(t *testing.T) {
	var values map[string]any
	readYAML(t, chartDir+"/values.yaml", &values)
	want := map[string]string{}
	if err := leaves("", values, want); err != nil {
		t.Fatal(err)
	}

	got := map[string]string{}
	for _, row := range tableRows(t, section(t, chartREADME, "values")) {
		if len(row) != 3 || row[2] == "" {
			t.Errorf("values row %q: want key, default and a description", row)
			continue
		}
		key := unquote(t, row[0])
		if _, dup := got[key]; dup {
			t.Errorf("%s is twice in the README's values table", key)
		}
		got[key] = unquote(t, row[1])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		var expected []string
		for _, k := range slices.Sorted(mapKeys(want)) {
			expected = append(expected, fmt.Sprintf("| `%s` | `%s` | ... |", k, want[k]))
		}
		t.Errorf("%s's values table and values.yaml differ (-values.yaml +README):\n%s\nvalues.yaml's keys and defaults:\n%s",
			chartREADME, diff, strings.Join(expected, "\n"))
	}
}

// The chart README's RBAC table gives a reason for each rule of the manager's role
// (config/rbac/role.yaml, generated from the +kubebuilder:rbac markers), one row per API
// group and resource with its verbs; it fails when the role gains or loses a verb, a
// resource or a group. The role has no wildcards, and Secrets only get.
func TestRBACTableIsTheGeneratedRole(t *testing.T) {
	var role rbacv1.ClusterRole
	readYAML(t, "../../config/rbac/role.yaml", &role)
	want := map[string][]string{} // "group resource" -> verbs
	for _, r := range role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("rule %+v: the manager's role has no nonResourceURLs or resourceNames rules; the table cannot say why", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := fmt.Sprintf("%q %s", g, res)
				want[key] = append(want[key], r.Verbs...)
				if g == "*" || res == "*" || slices.Contains(r.Verbs, "*") {
					t.Errorf("rule %+v has a wildcard", r)
				}
			}
		}
	}
	for k, v := range want {
		slices.Sort(v)
		want[k] = slices.Compact(v)
	}
	if v := want[`"" secrets`]; !slices.Equal(v, []string{"get"}) {
		t.Errorf("the manager may %v Secrets: want get only (never list or watch)", v)
	}

	got := map[string][]string{}
	for _, row := range tableRows(t, section(t, chartREADME, "rbac")) {
		if len(row) != 4 || len(row[3]) < 10 {
			t.Errorf("RBAC row %q: want apiGroup, resource, verbs and why", row)
			continue
		}
		group := unquote(t, row[0])
		if group == `""` {
			group = ""
		}
		key := fmt.Sprintf("%q %s", group, unquote(t, row[1]))
		if _, dup := got[key]; dup {
			t.Errorf("%s is twice in the RBAC table", key)
		}
		verbs := strings.Split(unquote(t, row[2]), ", ")
		if !slices.IsSorted(verbs) {
			t.Errorf("%s: list the verbs sorted: %v", key, verbs)
		}
		got[key] = verbs
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config/rbac/role.yaml and %s's RBAC table differ (-role.yaml +README): say why the manager needs each rule:\n%s", chartREADME, diff)
	}
}
