package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/utils/ptr"
)

// Row is one figure of the results: ours beside the peer's, measured in the same run.
// A row that could not be measured keeps its nil values and says why in Note.
type Row struct {
	Section  string   `json:"section"`
	Name     string   `json:"name"`
	Unit     string   `json:"unit"`
	Ours     *float64 `json:"ours,omitempty"`
	Peer     *float64 `json:"peer,omitempty"`
	PeerName string   `json:"peerName,omitempty"`
	// Ratio is Ours/Peer when both are known and Peer is not 0.
	Ratio *float64 `json:"ratio,omitempty"`
	// Goal is the target, as text ("≤ 1 s"); Met says whether Ours meets it.
	Goal string `json:"goal,omitempty"`
	Met  *bool  `json:"met,omitempty"`
	Note string `json:"note,omitempty"`
}

// Results is what make bench writes: the machine, every version, and the rows.
type Results struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  Machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	Settings map[string]string `json:"settings"`
	Rows     []Row             `json:"rows"`
	Profiles []string          `json:"profiles,omitempty"`
}

// Machine records what the figures were measured on.
type Machine struct {
	Cores        int        `json:"cores"`
	MemTotalMiB  int        `json:"memTotalMiB"`
	Kernel       string     `json:"kernel"`
	LoadAvgStart [3]float64 `json:"loadAvgStart"`
	LoadAvgEnd   [3]float64 `json:"loadAvgEnd"`
}

// add appends a row, computing its ratio.
func (r *Results) add(row Row) {
	// A figure with no samples (NaN) or beyond what was waited for (Inf) is not a
	// number: the row says so instead, and JSON can carry it.
	for _, v := range []**float64{&row.Ours, &row.Peer} {
		if *v != nil && (math.IsNaN(**v) || math.IsInf(**v, 0)) {
			*v = nil
			row.Note = strings.TrimPrefix(row.Note+"; a figure had no samples, or too many trials never ended", "; ")
			row.Met = nil
			if row.Goal != "" && v == &row.Ours {
				row.Met = ptr.To(false)
			}
		}
	}
	if row.Ours != nil && row.Peer != nil && *row.Peer != 0 && !math.IsNaN(*row.Ours) && !math.IsNaN(*row.Peer) {
		row.Ratio = ptr.To(*row.Ours / *row.Peer)
	}
	r.Rows = append(r.Rows, row)
	logf("%s | %s: ours %s, %s %s%s", row.Section, row.Name, fmtVal(row.Ours, row.Unit), orDash(row.PeerName), fmtVal(row.Peer, row.Unit), noteSuffix(row.Note))
}

// missing appends a row that could not be measured, saying why.
func (r *Results) missing(section, name, why string) {
	r.add(Row{Section: section, Name: name, Note: "not measured: " + why})
}

// failed reports whether a row says it could not be measured.
func (r *Results) failed() bool {
	for _, row := range r.Rows {
		if strings.HasPrefix(row.Note, "not measured") {
			return true
		}
	}
	return false
}

func noteSuffix(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtVal prints a value with 3 significant digits and its unit.
func fmtVal(v *float64, unit string) string {
	if v == nil {
		return "—"
	}
	s := sig3(*v)
	if unit != "" {
		s += " " + unit
	}
	return s
}

func sig3(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

func fmtRatio(r *float64) string {
	if r == nil {
		return "—"
	}
	return sig3(*r) + "×"
}

// Markdown renders the results as the file committed under bench/results.
func (r *Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# make bench: %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %d cores, %d MiB, %s; load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end; %s.\n\n",
		r.Machine.Cores, r.Machine.MemTotalMiB, r.Machine.Kernel,
		r.Machine.LoadAvgStart[0], r.Machine.LoadAvgStart[1], r.Machine.LoadAvgStart[2],
		r.Machine.LoadAvgEnd[0], r.Machine.LoadAvgEnd[1], r.Machine.LoadAvgEnd[2],
		r.Finished.Sub(r.Started).Round(time.Second))
	b.WriteString("Versions: ")
	b.WriteString(joinSorted(r.Versions))
	b.WriteString(".\n\n")
	if len(r.Settings) > 0 {
		b.WriteString("Settings: ")
		b.WriteString(joinSorted(r.Settings))
		b.WriteString(".\n\n")
	}
	b.WriteString("Ratio is ours ÷ the peer's. Absolute times on a shared 2-core machine are noise; the ratios, measured in the same run, are not.\n\n")
	section := ""
	for _, row := range r.Rows {
		if row.Section != section {
			section = row.Section
			fmt.Fprintf(&b, "\n## %s\n\n| figure | queuejob-operator | peer | peer's figure | ratio | goal | notes |\n|---|---|---|---|---|---|---|\n", section)
		}
		goal := row.Goal
		if row.Met != nil {
			if *row.Met {
				goal += " ✔ met"
			} else {
				goal += " ✘ missed"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", row.Name, fmtVal(row.Ours, row.Unit), orDash(row.PeerName),
			fmtVal(row.Peer, row.Unit), fmtRatio(row.Ratio), strings.TrimSpace(goal), strings.ReplaceAll(row.Note, "|", "\\|"))
	}
	if len(r.Profiles) > 0 {
		b.WriteString("\n## Profiles\n\n")
		for _, p := range r.Profiles {
			fmt.Fprintf(&b, "- [%s](%s)\n", p, p)
		}
		b.WriteString("\nRead one with `go tool pprof -top <file>` (the profiles carry their symbols).\n")
	}
	return b.String()
}

func joinSorted(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + m[k]
	}
	return strings.Join(parts, ", ")
}

// write stores the results as <stem>.md and <stem>.json in dir.
func (r *Results) write(dir, stem string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	md := filepath.Join(dir, stem+".md")
	if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
		return "", err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return md, err
	}
	return md, os.WriteFile(filepath.Join(dir, stem+".json"), append(js, '\n'), 0o644)
}

// quantile is the p-quantile of samples, nearest rank, where missed more samples never
// ended: +Inf when the rank falls among those, NaN with no samples at all.
func quantile(samples []time.Duration, missed int, p float64) float64 {
	n := len(samples) + missed
	if n == 0 {
		return math.NaN()
	}
	slices.Sort(samples)
	i := int(math.Ceil(p*float64(n))) - 1
	i = max(0, min(i, n-1))
	if i >= len(samples) {
		return math.Inf(1)
	}
	return samples[i].Seconds()
}
