package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/cli"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestServiceCall calls payments' RPC at payments' own address, past the
// gateway, as any process on the machine can: only a platform service that
// calls payments, with its own token, gets an answer.
func TestServiceCall(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir)
	payURL := p.state.Services["payments"]
	if payURL == "" {
		t.Fatalf("no address for payments in %s: %v", cli.StateFile, p.state.Services)
	}
	rider := p.newRider("direct-rider@example.com")
	saga := &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}

	// No token at all, as a plain HTTP client sees it.
	res, err := http.Post(payURL+paymentsv1connect.PaymentsServiceCheckLedgerProcedure, "application/json", strings.NewReader(`{"caller":{"userId":"rides","role":"ROLE_SERVICE"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Code string }
	_ = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || body.Code != "unauthenticated" {
		t.Errorf("no token: %d %q, want 401 unauthenticated", res.StatusCode, body.Code)
	}

	pay := paymentsv1connect.NewPaymentsServiceClient(http.DefaultClient, payURL)
	ledger := func(bearer string, caller *authv1.Caller) (*paymentsv1.CheckLedgerResponse, error) {
		req := connect.NewRequest(&paymentsv1.CheckLedgerRequest{Caller: caller})
		if bearer != "" {
			req.Header().Set("Authorization", "Bearer "+bearer)
		}
		res, err := pay.CheckLedger(context.Background(), req)
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	refused := 1
	for _, c := range []struct {
		name   string
		bearer string
		caller *authv1.Caller
		want   connect.Code
	}{
		{"no token", "", saga, connect.CodeUnauthenticated},
		{"a rider's access token", rider.token, &authv1.Caller{UserId: rider.id, Role: authv1.Role_ROLE_RIDER}, connect.CodeUnauthenticated},
		{"a rider's access token, claiming to be the saga", rider.token, saga, connect.CodeUnauthenticated},
		{"the operator's client-credentials token (admin, not a service)", p.adminToken(), saga, connect.CodeUnauthenticated},
		{"the token of a service that does not call payments", p.serviceToken("users"), &authv1.Caller{UserId: "users", Role: authv1.Role_ROLE_SERVICE}, connect.CodePermissionDenied},
		{"rides's token, naming another service as the caller", p.serviceToken("rides"), &authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE}, connect.CodePermissionDenied},
	} {
		refused++
		if res, err := ledger(c.bearer, c.caller); connect.CodeOf(err) != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, res, err, c.want)
		}
	}
	// The control: the service that does call payments, as itself.
	if res, err := ledger(p.serviceToken("rides"), saga); err != nil || !res.GetBalanced() {
		t.Errorf("rides calling payments: %v %v", res, err)
	}

	// Each refusal is an audit event in payments' log.
	logFile := filepath.Join(dir, "logs", "payments.log")
	testenv.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(logFile)
		return bytes.Count(b, []byte(`"event":"service_call_refused"`)) >= refused
	}, "payments did not log its %d refusals as audit events", refused)
}

// serviceToken is service name's own token, got with the secret `up` gave
// it.
func (p *runningPlatform) serviceToken(name string) string {
	p.t.Helper()
	return p.clientToken(auth.ServiceClientID(name), p.state.ServiceSecret(name))
}

// asService makes a client's calls as service name, with its token.
func (p *runningPlatform) asService(name string) connect.ClientOption {
	tok := p.serviceToken(name)
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	}))
}
