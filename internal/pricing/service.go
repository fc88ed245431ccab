// Package pricing owns fare rules and surge state.
//
// This first version is the service's process: its own database (with the
// outbox tables), its broker connection, health, readiness and metrics. Its
// domain and RPC handlers arrive with the ride saga.
package pricing

import (
	"context"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the pricing service.
var Service = platform.Service{
	Name:     "pricing",
	Summary:  "fare estimates and surge",
	Database: true,
	New: func(context.Context, platform.Deps) (*platform.Component, error) {
		return &platform.Component{Handler: http.NotFoundHandler()}, nil
	},
}
