package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rideshare-platform/rideshare/internal/broker"
)

// TestDialSecurity connects to servers that demand each kind of credential
// and TLS the flags offer: the right settings connect, the wrong ones are
// refused by the server (or by the client's own TLS check).
func TestDialSecurity(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	creds := newOperator(t, dir)

	for _, c := range []struct {
		name   string
		server func(*server.Options)
		good   broker.Security
		bad    []broker.Security
		refuse string // what a refusal says
	}{
		{
			name:   "user and password",
			server: func(o *server.Options) { o.Username, o.Password = "svc", "s3cret" },
			good:   broker.Security{User: "svc", Password: "s3cret"},
			bad:    []broker.Security{{User: "svc", Password: "wrong"}, {}},
			refuse: "authorization violation",
		},
		{
			name:   "token",
			server: func(o *server.Options) { o.Authorization = "t0ken" },
			good:   broker.Security{Token: "t0ken"},
			bad:    []broker.Security{{Token: "other"}, {}},
			refuse: "authorization violation",
		},
		{
			name:   "credentials file",
			server: creds.configure,
			good:   broker.Security{CredsFile: creds.good},
			bad:    []broker.Security{{CredsFile: creds.stranger}, {}},
			refuse: "authorization violation",
		},
		{
			name:   "TLS with a private CA",
			server: func(o *server.Options) { o.TLS, o.TLSConfig = true, pki.serverTLS(false) },
			good:   broker.Security{TLSCA: pki.ca},
			bad:    []broker.Security{{}},
			refuse: "certificate",
		},
		{
			name:   "mutual TLS",
			server: func(o *server.Options) { o.TLS, o.TLSVerify, o.TLSConfig = true, true, pki.serverTLS(true) },
			good:   broker.Security{TLSCA: pki.ca, TLSCert: pki.clientCert, TLSKey: pki.clientKey},
			bad:    []broker.Security{{TLSCA: pki.ca}},
			refuse: "tls",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := runServer(t, c.server)
			dial := func(sec broker.Security) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				nc, _, err := broker.Dial(ctx, broker.DialOptions{
					URL: url, Name: t.Name(), Security: sec,
					// Fail at once rather than retry: the answer is the point.
					Extra: []nats.Option{nats.RetryOnFailedConnect(false), nats.MaxReconnects(0), nats.Timeout(5 * time.Second)},
				})
				if err == nil {
					defer nc.Close()
					return nc.Flush()
				}
				return err
			}
			if err := dial(c.good); err != nil {
				t.Fatalf("with the right settings: %v", err)
			}
			for _, sec := range c.bad {
				err := dial(sec)
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), c.refuse) {
					t.Errorf("with %+v: %v, want a refusal (%q)", redacted(sec), err, c.refuse)
				} else {
					t.Logf("with %+v: refused: %v", redacted(sec), err)
				}
			}
		})
	}
}

// TestSecurityOptions: contradictory or broken settings are refused before
// any connection, so a service does not retry a hopeless connection forever.
func TestSecurityOptions(t *testing.T) {
	dir := t.TempDir()
	notCreds := filepath.Join(dir, "not.creds")
	if err := os.WriteFile(notCreds, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sec  broker.Security
		want string
	}{
		{broker.Security{}, ""},
		{broker.Security{User: "u", Password: "p"}, ""},
		{broker.Security{User: "u", Password: "p", Token: "t"}, "only one"},
		{broker.Security{CredsFile: notCreds, Token: "t"}, "only one"},
		{broker.Security{User: "u"}, "needs a password"},
		{broker.Security{Password: "p"}, "needs a password"},
		{broker.Security{TLSCert: notCreds}, "needs its key"},
		{broker.Security{CredsFile: filepath.Join(dir, "missing.creds")}, "no such file"},
		{broker.Security{TLSCA: filepath.Join(dir, "missing.pem")}, "no such file"},
		{broker.Security{CredsFile: notCreds}, "not a NATS credentials file"},
	} {
		_, err := c.sec.Options()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", redacted(c.sec), err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want an error saying %q", redacted(c.sec), err, c.want)
		}
	}
}

func redacted(s broker.Security) broker.Security {
	if s.Password != "" {
		s.Password = "***"
	}
	if s.Token != "" {
		s.Token = "***"
	}
	return s
}

// runServer starts a NATS server on a free loopback port, configured by
// configure, and returns its client URL.
func runServer(t *testing.T, configure func(*server.Options)) string {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true}
	configure(o)
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}

// pki is a private CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rideshare test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) serverTLS(mutual bool) *tls.Config {
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		panic(err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if mutual {
		c.ClientCAs, c.ClientAuth = p.pool, tls.RequireAndVerifyClientCert
	}
	return c
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// operator is decentralized authentication in miniature: an operator, one
// account it signed, a user of that account with a credentials file, and
// a stranger's credentials file signed by an account the server does not
// know.
type operator struct {
	claims         *jwt.OperatorClaims
	account, ajwt  string
	good, stranger string
}

func newOperator(t *testing.T, dir string) *operator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	_, err = oc.Encode(okp)
	must(err)
	account := func() (nkeys.KeyPair, string, string) {
		akp, err := nkeys.CreateAccount()
		must(err)
		apub, _ := akp.PublicKey()
		ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
		must(err)
		return akp, apub, ajwt
	}
	userCreds := func(akp nkeys.KeyPair, name string) string {
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, _ := ukp.PublicKey()
		ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
		must(err)
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		must(err)
		path := filepath.Join(dir, name)
		must(os.WriteFile(path, b, 0o600))
		return path
	}
	akp, apub, ajwt := account()
	otherKP, _, _ := account()
	return &operator{
		claims: oc, account: apub, ajwt: ajwt,
		good: userCreds(akp, "svc.creds"), stranger: userCreds(otherKP, "stranger.creds"),
	}
}

func (op *operator) configure(o *server.Options) {
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(op.account, op.ajwt); err != nil {
		panic(err)
	}
	o.TrustedOperators = []*jwt.OperatorClaims{op.claims}
	o.AccountResolver = resolver
}
