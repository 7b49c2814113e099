package main

import (
	"slices"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		cache    string
		wantArgs []string
	}{
		{[]string{"--cache-dir", "/c", "kube-controller-manager"}, "/c", []string{"kube-controller-manager"}},
		{[]string{"kube-controller-manager", "--cache-dir", "/c"}, "/c", []string{"kube-controller-manager"}},
		{[]string{"kubectl", "--cache-dir=/c", "kubelet"}, "/c", []string{"kubectl", "kubelet"}},
		{[]string{"--", "--cache-dir", "/c"}, "", []string{"--cache-dir", "/c"}},
		{nil, "", nil},
	} {
		o := &options{}
		fs := flagSet(o)
		def := o.CacheDir
		args, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		want := tc.cache
		if want == "" {
			want = def
		}
		if o.CacheDir != want || !slices.Equal(args, tc.wantArgs) {
			t.Errorf("%q: cache-dir %q, args %q; want %q, %q", tc.args, o.CacheDir, args, want, tc.wantArgs)
		}
	}
	if _, err := parseInterspersed(flagSet(&options{}), []string{"x", "--no-such-flag"}); err == nil {
		t.Error("an unknown flag after an argument parsed")
	}
}
