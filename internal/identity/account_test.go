package identity

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

func newTestRPC(t *testing.T) (*rpc, *sqldb.DB) {
	t.Helper()
	db := newTestDB(t)
	h, err := newHasher(2)
	if err != nil {
		t.Fatal(err)
	}
	return &rpc{accounts: &accounts{db: db, outbox: outbox.New(db, "identity", outbox.Options{}), hasher: h}}, db
}

func rider(email, password, name string) *identityv1.CreateAccountRequest {
	return &identityv1.CreateAccountRequest{Email: email, Password: password, Role: authv1.Role_ROLE_RIDER, Name: name}
}

func TestCreateAccountRefusesInvalidInput(t *testing.T) {
	h, db := newTestRPC(t)
	plate := &usersv1.Vehicle{Make: "Toyota", Model: "Prius", Plate: "AB-123", Color: "white"}
	for _, tc := range []struct {
		name string
		req  *identityv1.CreateAccountRequest
		msg  string
	}{
		{"empty email", rider("", "password1", "Ann"), "email must be a valid email address"},
		{"no at sign", rider("ann.example.com", "password1", "Ann"), "email must be a valid email address"},
		{"display name", rider("Ann <ann@example.com>", "password1", "Ann"), "email must be a valid email address"},
		{"too long email", rider(strings.Repeat("a", 250)+"@example.com", "password1", "Ann"), "email must be a valid email address"},
		{"short password", rider("ann@example.com", "1234567", "Ann"), "password must be 8 to 128 bytes long"},
		{"long password", rider("ann@example.com", strings.Repeat("p", 129), "Ann"), "password must be 8 to 128 bytes long"},
		{"no role", &identityv1.CreateAccountRequest{Email: "ann@example.com", Password: "password1", Name: "Ann"}, "role must be rider or driver"},
		{"admin role", &identityv1.CreateAccountRequest{Email: "ann@example.com", Password: "password1", Name: "Ann", Role: authv1.Role_ROLE_ADMIN}, "role must be rider or driver"},
		{"service role", &identityv1.CreateAccountRequest{Email: "ann@example.com", Password: "password1", Name: "Ann", Role: authv1.Role_ROLE_SERVICE}, "role must be rider or driver"},
		{"empty name", rider("ann@example.com", "password1", ""), "name must be 1 to 100 characters"},
		{"blank name", rider("ann@example.com", "password1", "   "), "name must be 1 to 100 characters"},
		{"long name", rider("ann@example.com", "password1", strings.Repeat("é", 101)), "name must be 1 to 100 characters"},
		{"driver without vehicle", &identityv1.CreateAccountRequest{Email: "dan@example.com", Password: "password1", Name: "Dan", Role: authv1.Role_ROLE_DRIVER}, "vehicle with a plate is required for a driver"},
		{"rider with vehicle", &identityv1.CreateAccountRequest{Email: "ann@example.com", Password: "password1", Name: "Ann", Role: authv1.Role_ROLE_RIDER, Vehicle: plate}, "vehicle is only for drivers"},
		{"long vehicle field", &identityv1.CreateAccountRequest{Email: "dan@example.com", Password: "password1", Name: "Dan", Role: authv1.Role_ROLE_DRIVER,
			Vehicle: &usersv1.Vehicle{Plate: "AB-123", Model: strings.Repeat("m", 41)}}, "vehicle fields must be at most 40 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.CreateAccount(context.Background(), connect.NewRequest(tc.req))
			if got := apperr.KindOf(err); got != apperr.Invalid {
				t.Fatalf("kind = %v (%v), want invalid", got, err)
			}
			if got := apperr.CodeOf(err); got != "invalid_argument" {
				t.Errorf("code = %q, want invalid_argument", got)
			}
			if got := apperr.As(err).Message; got != tc.msg {
				t.Errorf("message = %q, want %q", got, tc.msg)
			}
		})
	}
	if n := count(t, db, "accounts"); n != 0 {
		t.Errorf("%d accounts stored from invalid requests", n)
	}
	if n := count(t, db, "outbox"); n != 0 {
		t.Errorf("%d events written for invalid requests", n)
	}
}

func TestCreateAccountNormalisesAndAnnounces(t *testing.T) {
	h, db := newTestRPC(t)
	ctx := context.Background()
	req := &identityv1.CreateAccountRequest{
		Email: "  Dan@Example.COM ", Password: "password1", Name: " Dan ", Role: authv1.Role_ROLE_DRIVER,
		Vehicle: &usersv1.Vehicle{Make: "Toyota", Model: "Prius", Plate: "AB-123", Color: "white"},
	}
	res, err := h.CreateAccount(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	acc := res.Msg.GetAccount()
	if acc.GetEmail() != "dan@example.com" || acc.GetName() != "Dan" || acc.GetRole() != authv1.Role_ROLE_DRIVER || acc.GetId() == "" {
		t.Fatalf("account = %v", acc)
	}

	var subject string
	var data []byte
	if err := db.Reader().QueryRow(`SELECT subject, envelope FROM outbox`).Scan(&subject, &data); err != nil {
		t.Fatal(err)
	}
	if subject != "identity.account.created" {
		t.Errorf("event subject = %q", subject)
	}
	var env eventsv1.Envelope
	if err := proto.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	var ev identityv1.AccountCreated
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		t.Fatal(err)
	}
	if env.GetKey() != acc.GetId() || ev.GetAccountId() != acc.GetId() || ev.GetEmail() != "dan@example.com" ||
		ev.GetVehicle().GetPlate() != "AB-123" {
		t.Errorf("event = key %q, %v", env.GetKey(), &ev)
	}

	// The owner, an admin and a service read it; another user is told it
	// does not exist.
	for _, tc := range []struct {
		caller *authv1.Caller
		kind   apperr.Kind
	}{
		{&authv1.Caller{UserId: acc.GetId(), Role: authv1.Role_ROLE_DRIVER}, 0},
		{&authv1.Caller{UserId: "someone", Role: authv1.Role_ROLE_ADMIN}, 0},
		{&authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE}, 0},
		{&authv1.Caller{UserId: "someone-else", Role: authv1.Role_ROLE_RIDER}, apperr.NotFound},
		{nil, apperr.NotFound},
	} {
		got, err := h.GetAccount(ctx, connect.NewRequest(&identityv1.GetAccountRequest{Caller: tc.caller, Id: acc.GetId()}))
		switch {
		case tc.kind == 0 && err != nil:
			t.Errorf("caller %v: %v", tc.caller, err)
		case tc.kind == 0 && !proto.Equal(got.Msg.GetAccount(), acc):
			t.Errorf("caller %v: account = %v, want %v", tc.caller, got.Msg.GetAccount(), acc)
		case tc.kind != 0 && apperr.KindOf(err) != tc.kind:
			t.Errorf("caller %v: err = %v, want %v", tc.caller, err, tc.kind)
		}
	}
}

func TestCreateAccountDuplicateEmail(t *testing.T) {
	h, db := newTestRPC(t)
	ctx := context.Background()
	first, err := h.CreateAccount(ctx, connect.NewRequest(rider("ann@example.com", "password1", "Ann")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  *identityv1.CreateAccountRequest
	}{
		{"other password", rider("ann@example.com", "password2", "Ann")},
		{"other case, other password", rider("ANN@example.com", "password2", "Ann")},
		{"other role", &identityv1.CreateAccountRequest{Email: "ann@example.com", Password: "password1", Name: "Ann",
			Role: authv1.Role_ROLE_DRIVER, Vehicle: &usersv1.Vehicle{Plate: "X"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.CreateAccount(ctx, connect.NewRequest(tc.req))
			if apperr.KindOf(err) != apperr.Conflict || apperr.CodeOf(err) != "email_taken" {
				t.Fatalf("err = %v (%v, %q), want conflict email_taken", err, apperr.KindOf(err), apperr.CodeOf(err))
			}
		})
	}
	// A retry of the very same sign-up is the first one's answer, not a
	// conflict: the contract makes CreateAccount idempotent by email.
	again, err := h.CreateAccount(ctx, connect.NewRequest(rider("Ann@Example.com", "password1", "Ann")))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again.Msg.GetAccount().GetId() != first.Msg.GetAccount().GetId() {
		t.Errorf("retry created account %s, first was %s", again.Msg.GetAccount().GetId(), first.Msg.GetAccount().GetId())
	}
	if n := count(t, db, "accounts"); n != 1 {
		t.Errorf("%d accounts, want 1", n)
	}
	if n := count(t, db, "outbox"); n != 1 {
		t.Errorf("%d outbox rows, want 1", n)
	}
}
