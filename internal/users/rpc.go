package users

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// handler serves UsersService.
type handler struct {
	store *store
	rides rideLookup
}

func (h *handler) CreateProfile(ctx context.Context, req *connect.Request[usersv1.CreateProfileRequest]) (*connect.Response[usersv1.CreateProfileResponse], error) {
	m := req.Msg
	if r := m.GetCaller().GetRole(); r != authv1.Role_ROLE_SERVICE && r != authv1.Role_ROLE_ADMIN {
		return nil, apperr.E(apperr.Forbidden, "", "only the platform creates profiles")
	}
	p, err := newProfile(m.GetAccountId(), m.GetRole(), m.GetName(), m.GetEmail(), m.GetVehicle())
	if err != nil {
		return nil, err
	}
	if p, err = h.store.create(ctx, p); err != nil {
		return nil, err
	}
	return connect.NewResponse(&usersv1.CreateProfileResponse{Profile: toProto(p)}), nil
}

// newProfile is shared by the RPC and the AccountCreated consumer: both paths
// lead to the same single, validated profile per account.
func newProfile(accountID string, role authv1.Role, name, email string, v *usersv1.Vehicle) (Profile, error) {
	p := Profile{
		UserID: accountID, Role: role, Name: name, Email: email,
		Vehicle:   Vehicle{Make: v.GetMake(), Model: v.GetModel(), Plate: v.GetPlate(), Color: v.GetColor()},
		CreatedAt: now(),
	}
	return p, p.validate()
}

func (h *handler) GetProfile(ctx context.Context, req *connect.Request[usersv1.GetProfileRequest]) (*connect.Response[usersv1.GetProfileResponse], error) {
	caller := req.Msg.GetCaller()
	id := req.Msg.GetUserId()
	if id == "" {
		id = caller.GetUserId()
	}
	if !canRead(caller, id) {
		return nil, apperr.E(apperr.NotFound, "", "profile not found")
	}
	p, err := h.store.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&usersv1.GetProfileResponse{Profile: toProto(p)}), nil
}

func toProto(p Profile) *usersv1.Profile {
	return &usersv1.Profile{
		UserId:      p.UserID,
		Role:        p.Role,
		Name:        p.Name,
		Email:       p.Email,
		Vehicle:     vehicleProto(p.Vehicle),
		Rating:      p.Rating(),
		RatingCount: p.RatingCount,
		CreatedAt:   timestamppb.New(p.CreatedAt),
	}
}

func vehicleProto(v Vehicle) *usersv1.Vehicle {
	if v == (Vehicle{}) {
		return nil
	}
	return &usersv1.Vehicle{Make: v.Make, Model: v.Model, Plate: v.Plate, Color: v.Color}
}
