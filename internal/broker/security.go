package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// Security is how a client proves itself to a secured NATS and checks that
// the server is the right one. At most one way of authenticating is set:
// a credentials file, a user and password, or a token. The secrets among
// them (password, token) come from the environment, never from flags, which
// any user of the machine can read in the process list.
type Security struct {
	// CredsFile is a NATS credentials file (a user JWT and its nkey seed),
	// as decentralized authentication (nsc, Synadia) issues them.
	CredsFile string
	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a bearer token.
	Token string
	// TLSCA is a PEM file of the certificate authorities that sign the
	// server's certificate; set it when that is not a public CA.
	TLSCA string
	// TLSCert and TLSKey are PEM files of this client's certificate and key,
	// for servers that require mutual TLS.
	TLSCert, TLSKey string
}

// Options are the nats.go options s stands for. Files are checked now, so
// a mistyped path or a wrong file is a clear error at start rather than a
// connection that retries forever (nats.go reads a credentials file only
// when it connects, and a service retries connecting without end).
func (s Security) Options() ([]nats.Option, error) {
	ways := 0
	for _, set := range []bool{s.CredsFile != "", s.User != "" || s.Password != "", s.Token != ""} {
		if set {
			ways++
		}
	}
	if ways > 1 {
		return nil, errors.New("broker: set only one of a credentials file, a user and password, or a token")
	}
	if (s.User == "") != (s.Password == "") {
		return nil, errors.New("broker: a NATS user needs a password, and a password a user")
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return nil, errors.New("broker: a TLS client certificate needs its key, and a key its certificate")
	}
	for _, f := range []struct{ what, path string }{
		{"credentials file", s.CredsFile}, {"TLS CA file", s.TLSCA}, {"TLS certificate", s.TLSCert}, {"TLS key", s.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("broker: NATS %s: %w", f.what, err)
		}
	}
	if s.CredsFile != "" {
		b, err := os.ReadFile(s.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("broker: NATS credentials file: %w", err)
		}
		if !bytes.Contains(b, []byte("BEGIN NATS USER JWT")) || !bytes.Contains(b, []byte("BEGIN USER NKEY SEED")) {
			return nil, fmt.Errorf("broker: %s is not a NATS credentials file (a user JWT and its nkey seed)", s.CredsFile)
		}
	}
	var opts []nats.Option
	switch {
	case s.CredsFile != "":
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	case s.User != "":
		opts = append(opts, nats.UserInfo(s.User, s.Password))
	case s.Token != "":
		opts = append(opts, nats.Token(s.Token))
	}
	if s.TLSCA != "" {
		opts = append(opts, nats.RootCAs(s.TLSCA))
	}
	if s.TLSCert != "" {
		opts = append(opts, nats.ClientCert(s.TLSCert, s.TLSKey))
	}
	return opts, nil
}
