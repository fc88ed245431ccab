// Package payments owns payment intents and the double-entry ledger.
//
// This first version is the service's process: its own database (with the
// outbox tables), its broker connection, health, readiness and metrics. Its
// domain and RPC handlers arrive with the ride saga.
package payments

import (
	"context"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the payments service.
var Service = platform.Service{
	Name:     "payments",
	Summary:  "holds, captures, refunds and a double-entry ledger",
	Database: true,
	New: func(context.Context, platform.Deps) (*platform.Component, error) {
		return &platform.Component{Handler: http.NotFoundHandler()}, nil
	},
}
