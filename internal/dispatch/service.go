// Package dispatch owns driver availability and positions, and matches riders to drivers.
//
// This first version is the service's process: its own database (with the
// outbox tables), its broker connection, health, readiness and metrics. Its
// domain and RPC handlers arrive with the ride saga.
package dispatch

import (
	"context"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the dispatch service.
var Service = platform.Service{
	Name:     "dispatch",
	Summary:  "driver positions, matching, offers, route estimates",
	Database: true,
	New: func(context.Context, platform.Deps) (*platform.Component, error) {
		return &platform.Component{Handler: http.NotFoundHandler()}, nil
	},
}
