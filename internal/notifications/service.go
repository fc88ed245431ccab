// Package notifications turns domain events into pushes to riders and drivers.
//
// This first version is the service's process: its own database (with the
// outbox tables), its broker connection, health, readiness and metrics. Its
// domain and RPC handlers arrive with the ride saga.
package notifications

import (
	"context"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the notifications service.
var Service = platform.Service{
	Name:     "notifications",
	Summary:  "ride events turned into per-user streams",
	Database: true,
	New: func(context.Context, platform.Deps) (*platform.Component, error) {
		return &platform.Component{Handler: http.NotFoundHandler()}, nil
	},
}
