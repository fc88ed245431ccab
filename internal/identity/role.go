package identity

import (
	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// roleChange is a validated SetRole request: grant or revoke admin for the
// account with email.
type roleChange struct {
	email   string
	granted bool
}

// newRoleChange validates req. Only admin is granted or revoked: rider and
// driver are chosen at sign-up, and a driver signs up with a vehicle, so
// turning a rider into a driver here would make a driver without one.
func newRoleChange(req *identityv1.SetRoleRequest) (roleChange, error) {
	email, ok := normaliseEmail(req.GetEmail())
	if !ok {
		return roleChange{}, invalid("email must be a valid email address")
	}
	if req.GetRole() != authv1.Role_ROLE_ADMIN {
		return roleChange{}, invalid("role must be ROLE_ADMIN: rider and driver are chosen at sign-up")
	}
	return roleChange{email: email, granted: req.GetGranted()}, nil
}

// target is the role an account holding current, which signed up as
// signup, ends with.
func (c roleChange) target(current, signup authv1.Role) (authv1.Role, error) {
	switch {
	case c.granted:
		return authv1.Role_ROLE_ADMIN, nil
	case current != authv1.Role_ROLE_ADMIN:
		return current, nil // nothing to revoke
	case signup == authv1.Role_ROLE_RIDER || signup == authv1.Role_ROLE_DRIVER:
		return signup, nil
	}
	return 0, apperr.E(apperr.Unprocessable, "no_signup_role", "the account has no rider or driver role to return to")
}

// roleResult is what a role change did.
type roleResult struct {
	account  Account
	previous authv1.Role
	changed  bool
}
