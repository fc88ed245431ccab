package identity

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const (
	testOperatorSecret = "operator-secret-for-tests-0123456789"
	testServiceMaster  = "service-master-secret-for-tests-0123"
)

// newTestDB is a fresh identity database in a file, migrated as platform.Run
// migrates it.
func newTestDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return testenv.DB(t, Service.Migrations)
}

// testIdentity is the identity component serving on a real loopback port.
// Its issuer is its own URL as if the gateway were transparent, or, with
// viaGateway, a reverse proxy in front of it that forwards as the gateway
// does, so that every URL the browser is sent to is the proxy's.
type testIdentity struct {
	db     *sqldb.DB
	issuer string
	// direct is identity's own URL, where its RPCs are served.
	direct string
	http   *http.Client
	svc    *service
	logs   *logBuffer
}

// testConfig is how a test's identity differs from the default.
type testConfig struct {
	dev        bool
	viaGateway bool
	opts       options
}

func startIdentity(t *testing.T, dev bool) *testIdentity {
	t.Helper()
	return startIdentityWith(t, testConfig{dev: dev})
}

func startIdentityWith(t *testing.T, cfg testConfig) *testIdentity {
	t.Helper()
	db := newTestDB(t)
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	var proxy *httptest.Server
	if cfg.viaGateway {
		proxy = httptest.NewUnstartedServer(nil)
		issuer = "http://" + proxy.Listener.Addr().String()
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := assemble(context.Background(), platform.Deps{
		Config: platform.Config{
			PublicURL: issuer,
			Dev:       cfg.dev,
			Secrets: map[string]string{
				OperatorSecretName:               testOperatorSecret,
				platform.ServiceMasterSecretName: testServiceMaster,
			},
			CallGraph: map[string][]string{"gateway": {"identity", "rides"}, "rides": {"payments"}, "identity": nil, "payments": nil},
		},
		DB:     db,
		Outbox: outbox.New(db, Service.Name, outbox.Options{Logger: log}),
		Log:    log,
	}, cfg.opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = s.component.Handler
	srv.Start()
	t.Cleanup(srv.Close)
	if proxy != nil {
		// What the gateway does with /oauth2/* and /.well-known/*.
		target, _ := url.Parse(srv.URL)
		proxy.Config.Handler = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}}
		proxy.Start()
		t.Cleanup(proxy.Close)
	}
	c := srv.Client()
	// Redirects are what the authorize endpoint answers; tests look at them.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &testIdentity{db: db, issuer: issuer, direct: srv.URL, http: c, svc: s, logs: logs}
}

// logBuffer collects a test identity's JSON log lines.
type logBuffer struct{ testenv.Buffer }

// audits are the audit lines logged so far, each decoded, with event.
func (b *logBuffer) audits(t *testing.T, event string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["audit"] == true && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// count is the number of rows in table.
func count(t *testing.T, db *sqldb.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
