package rabbitmq

import "testing"

// TestAddrOf: the host:port that messages name, and no part of a password split at an
// unescaped '/' (amqp://u:12/ab@host/ parses as host u, port 12).
func TestAddrOf(t *testing.T) {
	cases := []struct{ name, url, want string }{
		{name: "port given", url: "amqp://guest:guest@rabbit.example:5673/", want: "rabbit.example:5673"},
		{name: "default port", url: "amqps://guest:guest@rabbit.example/vh", want: "rabbit.example:5671"},
		{name: "password split at a '/'", url: "amqp://guest:12/ab@rabbit.example/", want: "(an invalid AMQP URL)"},
		{name: "not a URL", url: "rabbit.example:5672", want: "(an invalid AMQP URL)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := AddrOf(tc.url); got != tc.want {
				t.Errorf("AddrOf(%q) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}
