package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// Suffixes of the environment variables of the TLS settings of workers; each backend
// prefixes them (QUEUEJOB_REDIS_TLS_CA, QUEUEJOB_RABBITMQ_TLS_CA, ...).
const (
	EnvSuffixTLSCA         = "_TLS_CA"
	EnvSuffixTLSServerName = "_TLS_SERVER_NAME"
)

// TLSCause says why a TLS handshake failed, in fixed words (the server's certificate is
// the peer's: the names it holds are not repeated), naming at most the server name asked
// for; and whether it was a TLS failure at all.
func TLSCause(err error) (string, bool) {
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	var noHandshake *handshakeError
	switch {
	case errors.As(err, &unknownCA):
		return "its TLS certificate is not signed by a trusted CA", true
	case errors.As(err, &hostErr):
		return fmt.Sprintf("its TLS certificate is not valid for the server name %q", hostErr.Host), true
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "its TLS certificate has expired or is not valid yet", true
	case errors.As(err, &invalid):
		return "its TLS certificate is invalid", true
	case errors.As(err, &certErr):
		return "its TLS certificate was not accepted", true
	case errors.As(err, &recErr):
		return "it does not speak TLS on that port", true
	case errors.As(err, &alert):
		return "it refused the TLS handshake", true
	case errors.As(err, &noHandshake):
		return "it did not complete a TLS handshake (does it speak TLS on that port?)", true
	}
	return "", false
}

// handshakeError is a TLS handshake that failed without a TLS answer: it timed out, or the
// server closed the connection.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "no TLS handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// TLSDialer dials TCP and makes a TLS handshake, each bounded by timeout; a handshake
// that gets no TLS answer fails with a *handshakeError.
func TLSDialer(config *tls.Config, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: timeout}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c := tls.Client(raw, config)
		if err := c.HandshakeContext(hctx); err != nil {
			_ = raw.Close()
			if _, ok := TLSCause(err); !ok {
				return nil, &handshakeError{err}
			}
			return nil, err
		}
		return c, nil
	}
}

// HostOf is the host of a host:port address, the address itself if it has no port.
func HostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// TLSFromEnv is the client TLS configuration of <prefix>_TLS_CA (a PEM CA bundle; the
// system's roots without one) and <prefix>_TLS_SERVER_NAME (host without one).
func TLSFromEnv(getenv func(string) string, prefix, host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if sn := getenv(prefix + EnvSuffixTLSServerName); sn != "" {
		c.ServerName = sn
	}
	if ca := getenv(prefix + EnvSuffixTLSCA); ca != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(ca)) {
			return nil, Errorf(ReasonTLSFailed, "%s holds no PEM certificate: its Secret key (tls.caSecretRef) must hold "+
				"the CA certificates as -----BEGIN CERTIFICATE----- blocks", prefix+EnvSuffixTLSCA)
		}
		c.RootCAs = pool
	}
	return c, nil
}
