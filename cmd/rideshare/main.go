// Command rideshare runs the rideshare platform: every service, or one.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rideshare-platform/rideshare/internal/cli"
	"github.com/rideshare-platform/rideshare/internal/dispatch"
	"github.com/rideshare-platform/rideshare/internal/gateway"
	"github.com/rideshare-platform/rideshare/internal/identity"
	"github.com/rideshare-platform/rideshare/internal/notifications"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/pricing"
	"github.com/rideshare-platform/rideshare/internal/rides"
	"github.com/rideshare-platform/rideshare/internal/users"
)

// services is every service the binary can run: `serve NAME` runs one,
// `up` runs them all. Adding a service means adding it here.
var services = []platform.Service{
	identity.Service,
	users.Service,
	rides.Service,
	dispatch.Service,
	payments.Service,
	pricing.Service,
	notifications.Service,
	gateway.Service,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.Run(ctx, cli.Env{Args: args, Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr, Services: services})
}
