package gateway

import (
	"net/http"
	"strconv"
	"time"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"

	"connectrpc.com/connect"
)

// gatewayCaller is how the gateway identifies itself when it acts for a
// caller who has no account yet (signup).
var gatewayCaller = &authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE}

type vehicleJSON struct {
	Make  string `json:"make"`
	Model string `json:"model"`
	Plate string `json:"plate"`
	Color string `json:"color"`
}

type signupJSON struct {
	Role     string       `json:"role"`
	Name     string       `json:"name"`
	Email    string       `json:"email"`
	Password string       `json:"password"`
	Vehicle  *vehicleJSON `json:"vehicle,omitempty"`
}

// check refuses control characters and absurd lengths before anything is
// hashed or stored; identity applies the exact limits. The password is
// left alone: it is only ever hashed.
func (in signupJSON) check() error {
	type field struct {
		name, value string
		max         int
	}
	fields := []field{{"role", in.Role, 16}, {"name", in.Name, 1024}, {"email", in.Email, 1024}}
	if v := in.Vehicle; v != nil {
		fields = append(fields, field{"vehicle.make", v.Make, 256}, field{"vehicle.model", v.Model, 256},
			field{"vehicle.plate", v.Plate, 256}, field{"vehicle.color", v.Color, 256})
	}
	for _, f := range fields {
		if err := checkText(f.name, f.value, f.max, false); err != nil {
			return err
		}
	}
	return nil
}

// profileJSON is a user as the public API shows them.
type profileJSON struct {
	ID          string       `json:"id"`
	Role        string       `json:"role"`
	Name        string       `json:"name"`
	Email       string       `json:"email"`
	Vehicle     *vehicleJSON `json:"vehicle,omitempty"`
	Rating      float64      `json:"rating"`
	RatingCount int64        `json:"rating_count"`
	CreatedAt   time.Time    `json:"created_at"`
}

// signup creates an account (identity) and then its profile (users). The
// profile call is a shortcut so GET /v1/me works at once; if it fails, users
// still creates the profile from identity's account.created event.
func (g *Gateway) signup(w http.ResponseWriter, r *http.Request, _ *authv1.Caller) error {
	var in signupJSON
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := in.check(); err != nil {
		return err
	}
	role := auth.RoleOf(in.Role)
	if role != authv1.Role_ROLE_RIDER && role != authv1.Role_ROLE_DRIVER {
		return apperr.E(apperr.Invalid, "", `role must be "rider" or "driver"`)
	}
	if role == authv1.Role_ROLE_DRIVER && (in.Vehicle == nil || in.Vehicle.Plate == "") {
		return apperr.E(apperr.Invalid, "", "a driver signs up with a vehicle that has a plate")
	}
	if role == authv1.Role_ROLE_RIDER && in.Vehicle != nil {
		return apperr.E(apperr.Invalid, "", "only drivers sign up with a vehicle")
	}
	var vehicle *usersv1.Vehicle
	if in.Vehicle != nil {
		vehicle = &usersv1.Vehicle{Make: in.Vehicle.Make, Model: in.Vehicle.Model, Plate: in.Vehicle.Plate, Color: in.Vehicle.Color}
	}
	acc, err := g.identity.CreateAccount(r.Context(), connect.NewRequest(&identityv1.CreateAccountRequest{
		Caller: gatewayCaller, Email: in.Email, Password: in.Password, Role: role, Name: in.Name, Vehicle: vehicle,
	}))
	if err != nil {
		return err
	}
	a := acc.Msg.GetAccount()
	out := profileJSON{ID: a.GetId(), Role: auth.RoleName(a.GetRole()), Name: a.GetName(), Email: a.GetEmail(),
		Vehicle: in.Vehicle, CreatedAt: a.GetCreatedAt().AsTime()}
	prof, err := g.users.CreateProfile(r.Context(), connect.NewRequest(&usersv1.CreateProfileRequest{
		Caller: gatewayCaller, AccountId: a.GetId(), Role: a.GetRole(), Name: a.GetName(), Email: a.GetEmail(), Vehicle: vehicle,
	}))
	if err != nil {
		g.deps.Log.WarnContext(r.Context(), "profile not created at signup; the account event will create it", "account", a.GetId(), "err", err)
	} else {
		out = profileFromProto(prof.Msg.GetProfile()) // what GET /v1/me will show
		g.profiles.put(out)
	}
	w.Header().Set("Location", "/v1/me")
	return writeJSON(w, http.StatusCreated, out)
}

// me is the caller's own profile. While users is down it is the copy the
// gateway last relayed, if it has one (profilecache.go), marked stale.
func (g *Gateway) me(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	res, err := g.users.GetProfile(r.Context(), connect.NewRequest(&usersv1.GetProfileRequest{Caller: c}))
	if err != nil {
		if !dependencyDown(r.Context(), err) {
			g.profiles.forget(c.GetUserId()) // users answered: an older copy must not contradict it later
			return err
		}
		p, age, ok := g.profiles.get(c.GetUserId())
		if !ok {
			return err
		}
		g.fellBack(r.Context(), routeMe, err)
		// The body is the one users would give; only the headers tell a
		// client it is a copy, and how old (RFC 9111 Age; Warning 110 from
		// RFC 7234, which clients and proxies still recognise).
		w.Header().Set("Warning", staleWarning)
		w.Header().Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
		return writeJSON(w, http.StatusOK, p)
	}
	out := profileFromProto(res.Msg.GetProfile())
	g.profiles.put(out)
	return writeJSON(w, http.StatusOK, out)
}

// staleWarning marks an answer served from the gateway's copy.
const staleWarning = `110 - "response is stale"`

func profileFromProto(p *usersv1.Profile) profileJSON {
	out := profileJSON{
		ID: p.GetUserId(), Role: auth.RoleName(p.GetRole()), Name: p.GetName(), Email: p.GetEmail(),
		Rating: p.GetRating(), RatingCount: p.GetRatingCount(), CreatedAt: p.GetCreatedAt().AsTime(),
	}
	if v := p.GetVehicle(); v != nil {
		out.Vehicle = &vehicleJSON{Make: v.GetMake(), Model: v.GetModel(), Plate: v.GetPlate(), Color: v.GetColor()}
	}
	return out
}
