package backends_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	rabbitmqkube "github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq/kube"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
)

// The check of the backends' addresses, from outside the package: the backends' kube
// packages import this one.

// fakeDNS is a seam: the names it knows and their addresses; any other name does not
// resolve.
type fakeDNS struct{ names map[string][]string }

func (d *fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	ips, ok := d.names[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	var out []netip.Addr
	for _, ip := range ips {
		out = append(out, netip.MustParseAddr(ip))
	}
	return out, nil
}

func selector(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

// Check names the field to fix and the flag, for every address a backend connects to,
// and connects to nothing.
func TestAddressPolicyCheck(t *testing.T) {
	urlRef, mgmtRef := selector("rabbit", "url"), selector("rabbit", "mgmt")
	redisAt := func(addr string) backends.Source {
		return backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: addr, Key: "k"}}}
	}
	rabbit := func(url, mgmt string) backends.Source {
		return backends.Source{Spec: &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URL: url, ManagementURL: mgmt, Queue: "q"}}}
	}
	fromSecrets := backends.Source{Spec: &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: urlRef, ManagementURLSecretRef: mgmtRef, Queue: "q"}},
		Secrets: map[string]string{backends.RefOf(urlRef, "").ID(): "amqp://u:Pw-in-url@10.1.1.1/", backends.RefOf(mgmtRef, "").ID(): "https://u:Pw-in-mgmt@mgmt.example/"}}
	cases := []struct {
		name   string
		kind   backends.Backend
		src    backends.Source
		reason string
		says   []string
	}{
		{name: "a Redis address allowed", kind: rediskube.Backend, src: redisAt("10.1.1.1:6379")},
		{name: "a Redis address refused", kind: rediskube.Backend, src: redisAt("192.168.1.1:22"), reason: queue.ReasonAddressNotAllowed,
			says: []string{"192.168.1.1:22 (spec.queue.redis.address)", "point spec.queue.redis.address at", backends.FlagAllowedAddresses}},
		{name: "an AMQP URL refused", kind: rabbitmqkube.Backend, src: rabbit("amqp://guest:guest@192.168.1.1/", ""), reason: queue.ReasonAddressNotAllowed,
			says: []string{"192.168.1.1:5672 (spec.queue.rabbitmq.url)", backends.FlagAllowedAddresses}},
		{name: "the management URL refused", kind: rabbitmqkube.Backend, src: rabbit("amqp://guest:guest@10.1.1.1/", "http://192.168.1.1:15672"),
			reason: queue.ReasonAddressNotAllowed, says: []string{"192.168.1.1:15672 (spec.queue.rabbitmq.managementURL)", backends.FlagAllowedAddresses}},
		{name: "both allowed", kind: rabbitmqkube.Backend, src: rabbit("amqps://guest:guest@10.1.1.1/", "https://10.1.1.2")},
		{name: "URLs from Secrets: the management URL's default port", kind: rabbitmqkube.Backend, src: fromSecrets, reason: queue.ReasonAddressNotAllowed,
			says: []string{"mgmt.example:443 (the URL in the Secret of spec.queue.rabbitmq.managementURLSecretRef)"}},
		{name: "a URL that cannot be used: the probe's own error", kind: rabbitmqkube.Backend, src: rabbit("amqp://u:12/ab@10.1.1.1/", ""),
			reason: queue.ReasonConnectionFailed, says: []string{"percent-encoded"}},
		{name: "a kind that does not say where it connects", kind: backends.Backend{Name: "mystery"}, src: redisAt("10.1.1.1:6379"),
			reason: queue.ReasonAddressNotAllowed, says: []string{"mystery", backends.FlagAllowedAddresses}},
	}
	p, err := backends.ParseAddressPolicy("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	backends.SetLookup(&p, (&fakeDNS{}).lookup)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Check(context.Background(), &tc.kind, tc.src)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if queue.ReasonOf(err) != tc.reason || err == nil {
				t.Fatalf("Check = %v (reason %s), want reason %s", err, queue.ReasonOf(err), tc.reason)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "Pw-in") || strings.Contains(err.Error(), "guest:guest") {
				t.Errorf("error %q repeats credentials", err)
			}
		})
	}
	if err := (backends.AddressPolicy{}).Check(context.Background(), &backends.Backend{Name: "mystery"}, redisAt("anywhere:1")); err != nil {
		t.Errorf("the zero policy refused a kind that does not say where it connects: %v", err)
	}
}
