// Package rides owns rides and orchestrates the ride saga.
//
// This first version is the service's process: its own database (with the
// outbox tables), its broker connection, health, readiness and metrics. Its
// domain and RPC handlers arrive with the ride saga.
package rides

import (
	"context"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the rides service.
var Service = platform.Service{
	Name:     "rides",
	Summary:  "ride lifecycle and the ride saga",
	Database: true,
	New: func(context.Context, platform.Deps) (*platform.Component, error) {
		return &platform.Component{Handler: http.NotFoundHandler()}, nil
	},
}
