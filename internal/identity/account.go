package identity

import (
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Account is someone who can sign in. Its credentials stay in the accounts
// table and never leave the service.
type Account struct {
	ID        string
	Email     string
	Role      authv1.Role
	Name      string
	CreatedAt time.Time
}

// Limits on what a sign-up may contain.
const (
	minPassword  = 8   // bytes: the NIST SP 800-63B minimum
	maxPassword  = 128 // bytes: long enough for any passphrase, short enough to hash cheaply
	maxName      = 100 // characters
	maxEmail     = 254 // bytes: the longest address SMTP can deliver to (RFC 5321)
	maxVehicleAt = 40  // characters per vehicle field, as users stores them
)

// signup is a validated, normalised CreateAccount request.
type signup struct {
	email    string
	password string
	role     authv1.Role
	name     string
	vehicle  *usersv1.Vehicle
}

// newSignup validates req field by field: the first bad field is reported
// as Invalid with a message naming it, so a client can point at it.
func newSignup(req *identityv1.CreateAccountRequest) (signup, error) {
	email, ok := normaliseEmail(req.GetEmail())
	if !ok {
		return signup{}, invalid("email must be a valid email address")
	}
	if n := len(req.GetPassword()); n < minPassword || n > maxPassword {
		return signup{}, invalid("password must be %d to %d bytes long", minPassword, maxPassword)
	}
	// Sign-up never grants admin: operators authenticate as a client
	// (client_credentials), and admin accounts are not self-assigned.
	role := req.GetRole()
	if role != authv1.Role_ROLE_RIDER && role != authv1.Role_ROLE_DRIVER {
		return signup{}, invalid("role must be rider or driver")
	}
	name := strings.TrimSpace(req.GetName())
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxName {
		return signup{}, invalid("name must be 1 to %d characters", maxName)
	}
	// The vehicle only passes through to users in AccountCreated; checking it
	// here keeps an event users would refuse from ever being emitted.
	v := req.GetVehicle()
	switch {
	case role == authv1.Role_ROLE_DRIVER && strings.TrimSpace(v.GetPlate()) == "":
		return signup{}, invalid("vehicle with a plate is required for a driver")
	case role == authv1.Role_ROLE_RIDER && v != nil:
		return signup{}, invalid("vehicle is only for drivers")
	}
	for _, f := range []string{v.GetMake(), v.GetModel(), v.GetPlate(), v.GetColor()} {
		if utf8.RuneCountInString(f) > maxVehicleAt {
			return signup{}, invalid("vehicle fields must be at most %d characters", maxVehicleAt)
		}
	}
	return signup{email: email, password: req.GetPassword(), role: role, name: name, vehicle: v}, nil
}

// normaliseEmail lower-cases and trims s and reports whether it is a bare
// address. Lower-casing the local part is not strictly RFC 5321, but no
// mainstream provider distinguishes case, and treating Bob@x and bob@x as two
// accounts would let one person hold both.
func normaliseEmail(s string) (string, bool) {
	e := strings.ToLower(strings.TrimSpace(s))
	if e == "" || len(e) > maxEmail {
		return "", false
	}
	addr, err := mail.ParseAddress(e)
	// Equality refuses display names ("Bob <bob@x>") and comments, which
	// ParseAddress accepts but an account email must not carry.
	if err != nil || addr.Address != e {
		return "", false
	}
	return e, true
}

func invalid(format string, args ...any) error {
	return apperr.E(apperr.Invalid, "", format, args...)
}

// canRead is the owner rule: a user reads their own account, admins and
// platform services any. Anyone else is told the account does not exist.
func canRead(caller *authv1.Caller, accountID string) bool {
	switch caller.GetRole() {
	case authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_SERVICE:
		return true
	case authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER:
		return caller.GetUserId() != "" && caller.GetUserId() == accountID
	}
	return false
}
