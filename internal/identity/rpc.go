package identity

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
)

// rpc serves IdentityService: accounts. Tokens are not issued here but by
// the OAuth endpoints (provider.go).
type rpc struct {
	accounts accountStore
	// bearer authenticates the callers of SetRole from their token.
	bearer callerAuthenticator
	audit  auditor
}

// accountStore is what the RPC handler needs of the accounts.
type accountStore interface {
	// create signs s up, idempotently by email.
	create(ctx context.Context, s signup) (Account, error)
	get(ctx context.Context, id string) (Account, error)
	setRole(ctx context.Context, c roleChange) (roleResult, error)
}

// callerAuthenticator says who a request's bearer token speaks for.
type callerAuthenticator interface {
	caller(ctx context.Context, h http.Header) (*authv1.Caller, error)
}

var _ identityv1connect.IdentityServiceHandler = (*rpc)(nil)

// CreateAccount signs a user up.
func (h *rpc) CreateAccount(ctx context.Context, req *connect.Request[identityv1.CreateAccountRequest]) (*connect.Response[identityv1.CreateAccountResponse], error) {
	s, err := newSignup(req.Msg)
	if err != nil {
		return nil, err
	}
	acc, err := h.accounts.create(ctx, s)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&identityv1.CreateAccountResponse{Account: accountProto(acc)}), nil
}

// GetAccount reads one account for its owner, an admin or a service.
func (h *rpc) GetAccount(ctx context.Context, req *connect.Request[identityv1.GetAccountRequest]) (*connect.Response[identityv1.GetAccountResponse], error) {
	id := req.Msg.GetId()
	if id == "" {
		return nil, invalid("id is required")
	}
	if !canRead(req.Msg.GetCaller(), id) {
		return nil, apperr.E(apperr.NotFound, "", "account not found")
	}
	acc, err := h.accounts.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&identityv1.GetAccountResponse{Account: accountProto(acc)}), nil
}

// SetRole grants or revokes the admin role. The caller is whoever the
// request's bearer token speaks for, checked here against identity's own
// keys: the Caller field is a claim anyone can write, so it is only
// required to agree with the token.
func (h *rpc) SetRole(ctx context.Context, req *connect.Request[identityv1.SetRoleRequest]) (*connect.Response[identityv1.SetRoleResponse], error) {
	if h.bearer == nil {
		return nil, apperr.E(apperr.Unavailable, "", "role changes are not configured")
	}
	caller, err := h.bearer.caller(ctx, req.Header())
	if err != nil {
		h.audit.roleChangeRefused(ctx, "", "no valid bearer token")
		return nil, err
	}
	if c := req.Msg.GetCaller(); c != nil && (c.GetUserId() != caller.GetUserId() || c.GetRole() != caller.GetRole()) {
		h.audit.roleChangeRefused(ctx, caller.GetUserId(), "caller field does not match the bearer token")
		return nil, apperr.E(apperr.Forbidden, "", "the caller does not match the bearer token")
	}
	if caller.GetRole() != authv1.Role_ROLE_ADMIN {
		h.audit.roleChangeRefused(ctx, caller.GetUserId(), "caller is not an admin")
		return nil, apperr.E(apperr.Forbidden, "", "only an admin may change roles")
	}
	change, err := newRoleChange(req.Msg)
	if err != nil {
		return nil, err
	}
	res, err := h.accounts.setRole(ctx, change)
	if err != nil {
		return nil, err
	}
	if res.changed {
		h.audit.roleChanged(ctx, caller.GetUserId(), res.account.ID, auth.RoleName(res.previous), auth.RoleName(res.account.Role))
	}
	return connect.NewResponse(&identityv1.SetRoleResponse{
		Account: accountProto(res.account), PreviousRole: res.previous, Changed: res.changed,
	}), nil
}

func accountProto(a Account) *identityv1.Account {
	return &identityv1.Account{
		Id:        a.ID,
		Email:     a.Email,
		Role:      a.Role,
		Name:      a.Name,
		CreatedAt: timestamppb.New(a.CreatedAt),
	}
}
