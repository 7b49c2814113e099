package main

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
)

// iptablesTools are the binaries whose KUBE-* chains up records and down removes.
var iptablesTools = []string{"iptables", "ip6tables"}

// kubeChains parses iptables-save output and returns its KUBE-* chains as
// "<tool>/<table>/<chain>".
func kubeChains(tool, save string) []string {
	var out []string
	table := ""
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimPrefix(line, "*")
		case strings.HasPrefix(line, ":KUBE-"):
			name := strings.Fields(line[1:])[0]
			out = append(out, tool+"/"+table+"/"+name)
		}
	}
	sort.Strings(out)
	return out
}

// chainCleanup returns the iptables argument lists that remove every KUBE-* chain in save
// that is not in keep: first the rules of other chains that jump to one of them, then a
// flush of each, then its deletion (a chain can only be deleted once nothing refers to it).
func chainCleanup(tool, save string, keep []string) [][]string {
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	var deletes, flushes, removes [][]string
	table := ""
	drop := map[string]bool{} // table/chain
	for _, c := range kubeChains(tool, save) {
		if !kept[c] {
			drop[strings.TrimPrefix(c, tool+"/")] = true
		}
	}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimPrefix(line, "*")
		case strings.HasPrefix(line, ":KUBE-"):
			name := strings.Fields(line[1:])[0]
			if drop[table+"/"+name] {
				flushes = append(flushes, []string{"-t", table, "-F", name})
				removes = append(removes, []string{"-t", table, "-X", name})
			}
		case strings.HasPrefix(line, "-A "):
			args := splitRule(line)
			if len(args) < 2 || drop[table+"/"+args[1]] {
				continue // flushed with its chain
			}
			for i := 0; i+1 < len(args); i++ {
				if (args[i] == "-j" || args[i] == "-g") && drop[table+"/"+args[i+1]] {
					del := append([]string{"-t", table, "-D"}, args[1:]...)
					deletes = append(deletes, del)
					break
				}
			}
		}
	}
	return append(append(deletes, flushes...), removes...)
}

// splitRule splits an iptables-save rule line into arguments, honouring double quotes
// (comments) and backslash-escaped quotes in them.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case ch == '"':
			inQuote = !inQuote
			have = true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

func iptablesSave(tool string) (string, error) {
	if _, err := exec.LookPath(tool + "-save"); err != nil {
		return "", nil
	}
	out, err := exec.Command(tool + "-save").Output()
	if err != nil {
		return "", fmt.Errorf("%s-save: %w", tool, err)
	}
	return string(out), nil
}

// currentKubeChains lists the KUBE-* chains of iptables and ip6tables now.
func currentKubeChains() []string {
	var all []string
	for _, t := range iptablesTools {
		s, _ := iptablesSave(t)
		all = append(all, kubeChains(t, s)...)
	}
	return all
}

// removeKubeChains removes the KUBE-* chains not in keep; it returns how many chains it
// removed.
func removeKubeChains(keep []string) (int, error) {
	n := 0
	var firstErr error
	for _, t := range iptablesTools {
		s, err := iptablesSave(t)
		if err != nil {
			firstErr = err
			continue
		}
		for _, args := range chainCleanup(t, s, keep) {
			if out, err := exec.Command(t, args...).CombinedOutput(); err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s %s: %v: %s", t, strings.Join(args, " "), err, out)
				}
			} else if args[2] == "-X" {
				n++
			}
		}
	}
	return n, firstErr
}
