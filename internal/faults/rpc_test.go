package faults

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/api/users/v1/usersv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// fakeUsers answers GetProfile with a fixed profile and counts calls.
type fakeUsers struct {
	usersv1connect.UnimplementedUsersServiceHandler
	calls atomic.Int64
}

func (f *fakeUsers) GetProfile(context.Context, *connect.Request[usersv1.GetProfileRequest]) (*connect.Response[usersv1.GetProfileResponse], error) {
	f.calls.Add(1)
	return connect.NewResponse(&usersv1.GetProfileResponse{Profile: &usersv1.Profile{UserId: "u1", Name: "Ada"}}), nil
}

// TestRPCClientsSeeUnavailable: a real Connect handler behind the
// middleware, called with the generated client over every protocol it
// speaks, fails as an RPC error a client understands (Unavailable with the
// stable code), not as a body it cannot parse.
func TestRPCClientsSeeUnavailable(t *testing.T) {
	fake := &fakeUsers{}
	inj := New(Options{})
	mux := http.NewServeMux()
	mux.Handle(usersv1connect.NewUsersServiceHandler(fake))
	srv := httptest.NewUnstartedServer(inj.Middleware(mux))
	srv.EnableHTTP2 = true // gRPC needs HTTP/2
	srv.StartTLS()
	t.Cleanup(srv.Close)

	protocols := map[string][]connect.ClientOption{
		"connect proto": nil,
		"connect json":  {connect.WithProtoJSON()},
		"connect get":   {connect.WithHTTPGet()},
		"grpc":          {connect.WithGRPC()},
		"grpc-web":      {connect.WithGRPCWeb()},
	}
	for name, opts := range protocols {
		t.Run(name, func(t *testing.T) {
			client := usersv1connect.NewUsersServiceClient(srv.Client(), srv.URL, opts...)
			get := func() error {
				_, err := client.GetProfile(t.Context(), connect.NewRequest(&usersv1.GetProfileRequest{}))
				return err
			}
			inj.ClearAll()
			before := fake.calls.Load()
			if err := get(); err != nil {
				t.Fatalf("with no fault: %v", err)
			}

			if _, err := inj.Set(Fault{Route: usersv1connect.UsersServiceGetProfileProcedure, ErrorRate: 1}); err != nil {
				t.Fatal(err)
			}
			err := get()
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("RPC error %v (code %v), want Unavailable", err, connect.CodeOf(err))
			}
			if code := apperr.CodeOf(err); code != Code {
				t.Fatalf("stable code %q, want %q", code, Code)
			}
			if fake.calls.Load() != before+1 {
				t.Fatal("the failed call reached the service")
			}

			// A fault on another route leaves this one alone.
			inj.ClearAll()
			if _, err := inj.Set(Fault{Route: usersv1connect.UsersServiceRateUserProcedure, ErrorRate: 1}); err != nil {
				t.Fatal(err)
			}
			if err := get(); err != nil {
				t.Fatalf("fault on another route: %v", err)
			}
		})
	}
}

// TestRPCDeadlineEndsAHang: a Connect client with a deadline calling a hung
// service gets DeadlineExceeded, and the service's handler never runs.
func TestRPCDeadlineEndsAHang(t *testing.T) {
	fake := &fakeUsers{}
	inj := New(Options{})
	mux := http.NewServeMux()
	mux.Handle(usersv1connect.NewUsersServiceHandler(fake))
	srv := httptest.NewServer(inj.Middleware(mux))
	t.Cleanup(srv.Close)
	if _, err := inj.Set(Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	client := usersv1connect.NewUsersServiceClient(srv.Client(), srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := client.GetProfile(ctx, connect.NewRequest(&usersv1.GetProfileRequest{}))
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
	if fake.calls.Load() != 0 {
		t.Fatal("a hung call reached the service")
	}
}

func TestIsRPC(t *testing.T) {
	for _, tc := range []struct {
		method, path, ctype string
		want                bool
	}{
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/proto", true},
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/json", true},
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/json; charset=utf-8", true},
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/grpc", true},
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/grpc+proto", true},
		{"POST", "/rideshare.users.v1.UsersService/GetProfile", "application/grpc-web+proto", true},
		{"POST", "/rideshare.notifications.v1.NotificationsService/Stream", "application/connect+proto", true},
		{"GET", "/rideshare.users.v1.UsersService/GetProfile?encoding=proto&message=", "", true},
		{"POST", "/v1/rides", "application/json", false},
		{"POST", "/oauth2/token", "application/x-www-form-urlencoded", false},
		{"GET", "/v1/rides/abc", "", false},
		{"GET", "/rideshare.users.v1.UsersService/GetProfile", "", false},
	} {
		r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(""))
		if tc.ctype != "" {
			r.Header.Set("Content-Type", tc.ctype)
		}
		if got := isRPC(r); got != tc.want {
			t.Errorf("%s %s %q: isRPC %v, want %v", tc.method, tc.path, tc.ctype, got, tc.want)
		}
	}
}
