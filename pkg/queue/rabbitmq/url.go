package rabbitmq

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// errRabbitURL is returned for a RabbitMQ URL that cannot be used. It quotes no part of the
// URL: a URL with an unescaped reserved character in its password is split in the wrong
// place, and then any part of it (a "host", a "port", a "vhost") may be the password.
// errTLSWithoutAMQPS is returned for TLS settings with an amqp:// URL; it quotes no part
// of the URL either.
var errTLSWithoutAMQPS = &queue.Error{Reason: queue.ReasonTLSFailed, Message: "spec.queue.rabbitmq.tls is set, but the AMQP URL " +
	"is not amqps://, and TLS settings apply only to amqps: make the URL in the Secret of " +
	"spec.queue.rabbitmq.urlSecretRef amqps:// (the broker's TLS port), or remove spec.queue.rabbitmq.tls"}

var errRabbitURL = &queue.Error{Reason: queue.ReasonConnectionFailed, Message: "the RabbitMQ URL is not a valid AMQP URL: " +
	"check spec.queue.rabbitmq.url or the Secret of urlSecretRef; special characters in the user " +
	"and the password (such as / ? # @ : %) must be percent-encoded"}

// parseRabbitURL parses and checks an AMQP URL before any library sees it, so that no
// library error that quotes the URL ever becomes a message. Besides what amqp091 rejects,
// it rejects what amqp091 accepts although the URL was split at an unescaped character of
// the password: an '@' after the host (amqp://u:12/ab@host/ parses as host u, port 12),
// a port out of range, and anything but amqp:// or amqps:// followed by an authority.
func parseRabbitURL(raw string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, errRabbitURL
	}
	rest, ok := strings.CutPrefix(raw, uri.Scheme+"://")
	if !ok {
		return amqp.URI{}, errRabbitURL
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if strings.Contains(rest[end:], "@") || uri.Port < 1 || uri.Port > 65535 {
		return amqp.URI{}, errRabbitURL
	}
	return uri, nil
}

// AddrOf is the host:port of an AMQP URL, the only part of it a message may name (the
// URL may hold the password); a fixed phrase if parseRabbitURL rejects it. (queue.HostOf
// is the host of a host:port.)
func AddrOf(amqpURL string) string {
	uri, err := parseRabbitURL(amqpURL)
	if err != nil {
		return "(an invalid AMQP URL)"
	}
	return rabbitAddr(uri)
}

// rabbitAddr is the host:port of a parsed URL, the only part of it a message may name.
func rabbitAddr(uri amqp.URI) string {
	return net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port))
}

// errManagementURL is returned for a management URL that cannot be used; like
// errRabbitURL, it quotes no part of it.
// errManagementCredentials is returned for a managementURL without credentials whose
// host is not the AMQP URL's, or that is plain HTTP while the AMQP URL is amqps.
var errManagementCredentials = &queue.Error{Reason: queue.ReasonAuthFailed, Message: "spec.queue.rabbitmq.managementURL has no " +
	"credentials, and the AMQP URL's are only sent to the AMQP URL's own host, and over https when the AMQP URL " +
	"is amqps: put the management URL with its user and password in a Secret and use managementURLSecretRef"}

var errManagementURL = &queue.Error{Reason: queue.ReasonConnectionFailed, Message: "the RabbitMQ management URL is not a valid " +
	"http:// or https:// URL: check spec.queue.rabbitmq.managementURL or the Secret of managementURLSecretRef; " +
	"special characters in the user and the password (such as / ? # @ : %) must be percent-encoded"}

// wholeAuthority reports whether no '@' follows the authority of a URL: an unescaped '/',
// '?' or '#' in a password splits the URL early (http://u:12/ab@host/ parses as host u,
// port 12), and the host, which messages name, would then hold part of the password.
func wholeAuthority(raw, scheme string) bool {
	rest, ok := strings.CutPrefix(raw, scheme+"://")
	if !ok {
		return false
	}
	end := strings.IndexAny(rest, "/?#")
	return end < 0 || !strings.Contains(rest[end:], "@")
}

// parseManagementURL parses and checks a management URL before any library sees it (see
// parseRabbitURL).
func parseManagementURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, " \t\r\n") || !wholeAuthority(raw, u.Scheme) {
		return nil, errManagementURL
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errManagementURL
		}
	}
	return u, nil
}

// Addresses are the host:port a probe connects to: the AMQP URL's and, if
// managementURL is not empty, the management URL's (its port defaults to the scheme's).
// A URL that cannot be used gives the probe's own error, which quotes no part of it.
func Addresses(amqpURL, managementURL string) (amqpAddr, managementAddr string, err error) {
	uri, err := parseRabbitURL(amqpURL)
	if err != nil {
		return "", "", err
	}
	if managementURL == "" {
		return rabbitAddr(uri), "", nil
	}
	u, err := parseManagementURL(managementURL)
	if err != nil {
		return "", "", err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return rabbitAddr(uri), net.JoinHostPort(u.Hostname(), port), nil
}
