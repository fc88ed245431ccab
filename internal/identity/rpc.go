package identity

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// rpc serves IdentityService: accounts. Tokens are not issued here but by
// the OAuth endpoints (provider.go).
type rpc struct {
	accounts accountStore
}

// accountStore is what the RPC handler needs of the accounts.
type accountStore interface {
	// create signs s up, idempotently by email.
	create(ctx context.Context, s signup) (Account, error)
	get(ctx context.Context, id string) (Account, error)
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

func accountProto(a Account) *identityv1.Account {
	return &identityv1.Account{
		Id:        a.ID,
		Email:     a.Email,
		Role:      a.Role,
		Name:      a.Name,
		CreatedAt: timestamppb.New(a.CreatedAt),
	}
}
