// Package users owns rider and driver profiles: who someone is on the
// platform, their vehicle if they drive, and the ratings they received.
// Profiles are simple records, so the service is one flat package: no layers
// beyond the store and the RPC handler.
package users

import (
	"strings"
	"time"
	"unicode/utf8"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Profile is a user's public face on the platform.
type Profile struct {
	UserID      string
	Role        authv1.Role
	Name        string
	Email       string
	Vehicle     Vehicle
	RatingSum   int64
	RatingCount int64
	CreatedAt   time.Time
}

// Vehicle is a driver's car; the zero value means none.
type Vehicle struct {
	Make, Model, Plate, Color string
}

// Rating is the mean of the stars received, 0 before the first rating.
func (p Profile) Rating() float64 {
	if p.RatingCount == 0 {
		return 0
	}
	return float64(p.RatingSum) / float64(p.RatingCount)
}

// validate checks a new profile. Identity validated the account already;
// this guards the profile's own rules, since CreateProfile is also reached
// from events and other callers.
func (p Profile) validate() error {
	switch {
	case p.UserID == "":
		return apperr.E(apperr.Invalid, "", "account_id is required")
	case p.Role != authv1.Role_ROLE_RIDER && p.Role != authv1.Role_ROLE_DRIVER:
		return apperr.E(apperr.Invalid, "", "role must be rider or driver")
	case strings.TrimSpace(p.Name) == "" || utf8.RuneCountInString(p.Name) > 100:
		return apperr.E(apperr.Invalid, "", "name must be 1 to 100 characters")
	case p.Role == authv1.Role_ROLE_DRIVER && p.Vehicle.Plate == "":
		return apperr.E(apperr.Invalid, "", "a driver needs a vehicle with a plate")
	case p.Role == authv1.Role_ROLE_RIDER && p.Vehicle != Vehicle{}:
		return apperr.E(apperr.Invalid, "", "only drivers have a vehicle")
	}
	for _, f := range []string{p.Vehicle.Make, p.Vehicle.Model, p.Vehicle.Plate, p.Vehicle.Color} {
		if utf8.RuneCountInString(f) > 40 {
			return apperr.E(apperr.Invalid, "", "vehicle fields are at most 40 characters")
		}
	}
	return nil
}

// canRead is the owner rule: a user reads their own profile, admins and
// services any. Everyone else is told it does not exist.
func canRead(caller *authv1.Caller, userID string) bool {
	switch caller.GetRole() {
	case authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_SERVICE:
		return true
	case authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER:
		return caller.GetUserId() != "" && caller.GetUserId() == userID
	}
	return false
}
