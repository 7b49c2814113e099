package chart

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// allowedArg is the manager's --allowed-queue-addresses argument, if it has one.
func allowedArg(t *testing.T, objs []object) (string, bool) {
	t.Helper()
	var d appsv1.Deployment
	only(t, objs, "Deployment", &d)
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, backends.FlagAllowedAddresses+"="); ok {
			return v, true
		}
	}
	return "", false
}

// allowedQueueAddresses becomes the manager's flag, in a form its parser takes; by default
// there is neither the flag nor a NetworkPolicy.
func TestAllowedQueueAddresses(t *testing.T) {
	if v, ok := allowedArg(t, render(t)); ok {
		t.Errorf("at the defaults the manager has %s=%s, want no flag (any address)", backends.FlagAllowedAddresses, v)
	}
	objs := render(t, "--set-json", `allowedQueueAddresses=["10.0.0.0/8","*.svc.cluster.local","redis.prod:6379","[fd00::1]:6379"]`)
	v, ok := allowedArg(t, objs)
	if want := "10.0.0.0/8,*.svc.cluster.local,redis.prod:6379,[fd00::1]:6379"; !ok || v != want {
		t.Fatalf("%s = %q (set: %v), want %q", backends.FlagAllowedAddresses, v, ok, want)
	}
	p, err := backends.ParseAddressPolicy(v)
	if err != nil {
		t.Fatalf("the manager would refuse the chart's flag: %v", err)
	}
	if p.String() != v {
		t.Errorf("the manager parses %q as %q", v, p.String())
	}
}

// networkPolicy.enabled renders a NetworkPolicy on the manager pods whose egress is the API
// server, DNS and the queues, and nothing else.
func TestNetworkPolicy(t *testing.T) {
	objs := render(t,
		"--set", "networkPolicy.enabled=true",
		"--set-json", `networkPolicy.apiServer.cidrs=["10.0.0.10/32"]`,
		"--set-json", `networkPolicy.queues=[{"cidr":"10.20.0.0/16","ports":[6379,5672]},{"cidr":"192.168.7.0/24"}]`,
	)
	var np networkingv1.NetworkPolicy
	only(t, objs, "NetworkPolicy", &np)
	var d appsv1.Deployment
	only(t, objs, "Deployment", &d)
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, np.Spec.PodSelector.MatchLabels); diff != "" {
		t.Errorf("podSelector is not the Deployment's selector (-deployment +policy):\n%s", diff)
	}
	if np.Namespace != namespace {
		t.Errorf("namespace = %q, want %q", np.Namespace, namespace)
	}
	if diff := cmp.Diff([]networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes); diff != "" {
		t.Errorf("policyTypes (-want +got):\n%s", diff)
	}
	type rule struct {
		To    []string // ipBlock CIDRs, or namespace/pod label values
		Ports []string // protocol/port
	}
	var got []rule
	for _, e := range np.Spec.Egress {
		var r rule
		for _, to := range e.To {
			switch {
			case to.IPBlock != nil:
				r.To = append(r.To, to.IPBlock.CIDR)
			case to.NamespaceSelector != nil && to.PodSelector != nil:
				r.To = append(r.To, to.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]+"/"+to.PodSelector.MatchLabels["k8s-app"])
			default:
				r.To = append(r.To, "?")
			}
		}
		for _, p := range e.Ports {
			r.Ports = append(r.Ports, string(*p.Protocol)+"/"+p.Port.String())
		}
		got = append(got, r)
	}
	want := []rule{
		{To: []string{"10.0.0.10/32"}, Ports: []string{"TCP/443", "TCP/6443"}},
		{To: []string{"kube-system/kube-dns"}, Ports: []string{"UDP/53", "TCP/53"}},
		{To: []string{"10.20.0.0/16"}, Ports: []string{"TCP/6379", "TCP/5672"}},
		{To: []string{"192.168.7.0/24"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("egress (-want +got):\n%s", diff)
	}
	if len(np.Spec.Ingress) != 0 {
		t.Errorf("ingress rules %+v: the policy only limits egress", np.Spec.Ingress)
	}
	helmLint(t, "--set", "networkPolicy.enabled=true", "--set-json", `networkPolicy.queues=[{"cidr":"10.20.0.0/16"}]`,
		"--set-json", `allowedQueueAddresses=["10.20.0.0/16"]`)
}

// Without apiServer.cidrs, the API server's rule allows its ports anywhere; no queue: none.
func TestNetworkPolicyDefaults(t *testing.T) {
	var np networkingv1.NetworkPolicy
	only(t, render(t, "--set", "networkPolicy.enabled=true"), "NetworkPolicy", &np)
	if len(np.Spec.Egress) != 2 {
		t.Fatalf("egress = %+v, want the API server's and DNS's rules", np.Spec.Egress)
	}
	if api := np.Spec.Egress[0]; len(api.To) != 0 || len(api.Ports) != 2 {
		t.Errorf("API server rule = %+v, want ports 443 and 6443 to any address", api)
	}
}

func TestNetworkPolicySchema(t *testing.T) {
	for _, tc := range []struct {
		name, set, field string
	}{
		{"a queue without a cidr", `networkPolicy.queues=[{"ports":[6379]}]`, "cidr"},
		{"a queue port out of range", `networkPolicy.queues=[{"cidr":"10.0.0.0/8","ports":[0]}]`, "ports"},
		{"a misspelt key", `networkPolicy.egress=[]`, "egress"},
		{"an address list in one string", `allowedQueueAddresses="10.0.0.0/8,redis:6379"`, "allowedQueueAddresses"},
		{"two addresses in one entry", `allowedQueueAddresses=["10.0.0.0/8,redis:6379"]`, "allowedQueueAddresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := template(t, "--set-json", tc.set)
			if err == nil {
				t.Fatalf("helm template --set-json %s succeeded, want a schema error", tc.set)
			}
			if !strings.Contains(stderr, "schema") || !strings.Contains(stderr, tc.field) {
				t.Errorf("helm template --set-json %s: want a schema error naming %q, got:\n%s", tc.set, tc.field, stderr)
			}
		})
	}
}

// The API server takes the NetworkPolicy as rendered.
func TestNetworkPolicyIsAdmitted(t *testing.T) {
	c := needCluster(t)
	ctx := testCtx(t)
	ns := "netpol"
	objs := renderAs(t, release, ns, "--set", "networkPolicy.enabled=true",
		"--set-json", `networkPolicy.apiServer.cidrs=["10.0.0.10/32"]`,
		"--set-json", `networkPolicy.queues=[{"cidr":"10.20.0.0/16","ports":[6379]},{"cidr":"fd00::/8"}]`)
	createNamespace(t, ctx, c, ns, nil)
	applied := 0
	for _, o := range objs {
		if o.kind == "NetworkPolicy" {
			applyObject(t, ctx, c, o)
			applied++
		}
	}
	if applied != 1 {
		t.Fatalf("applied %d NetworkPolicies, want 1", applied)
	}
}
