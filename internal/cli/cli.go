// Package cli is the rideshare command line: `up` runs the whole platform
// on one machine, `serve` runs one service (what a container runs). main
// hands it the process's arguments, environment and output, so tests drive
// exactly what a user types.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Env is the outside world of one invocation.
type Env struct {
	Args   []string // without the program name
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Services is the table of every service the binary can run.
	Services []platform.Service
}

type command struct {
	name, summary string
	run           func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"up", "run the whole platform on this machine, each service its own process", runUp},
		{"serve", "run one service (what a container runs)", runServe},
		{"fault", "make a service slow or broken on purpose, or clear it", runFault},
		{"load", "drive simulated riders and drivers through the public API; report throughput and latency", runLoad},
		{"drill", "run a live drill: a fault under load, and a verdict with the numbers behind it", runDrill},
		{"check", "audit a running platform's invariants: sagas, captures, holds, ledger, outboxes", runCheck},
		{"admin", "operator tasks: grant the admin role", runAdmin},
		{"probe", "exit 0 when a process answers its health URL (container health checks)", runProbe},
	}
}

// Run executes one command and returns the process exit code.
func Run(ctx context.Context, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	args := env.Args
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(env)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, env, args[1:])
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			}
			fmt.Fprintf(env.Stderr, "rideshare %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(env.Stderr, "rideshare: unknown command %q\n\n", args[0])
	usage(env)
	return 2
}

// errUsage means the flags were wrong; the flag set already said how.
var errUsage = errors.New("usage")

func usage(env Env) {
	w := env.Stdout
	fmt.Fprintf(w, "rideshare: a ride-sharing platform of Go microservices.\n\nUsage:\n  rideshare COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nServices (rideshare serve NAME):\n")
	for _, s := range env.Services {
		fmt.Fprintf(w, "  %-14s %s\n", s.Name, s.Summary)
	}
	fmt.Fprintf(w, "  %-14s %s\n", brokerName, "embedded NATS JetStream server (what `up` runs for the platform)")
	fmt.Fprintf(w, "\nRun 'rideshare COMMAND --help' for a command's flags.\n")
}

// newFlags is a flag set that prints its usage to stdout on --help and to
// stderr on a mistake, with a summary line first.
func newFlags(env Env, name, synopsis, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: rideshare %s\n\n%s\n\nFlags:\n", synopsis, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, printing --help to stdout.
func parse(fs *flag.FlagSet, env Env, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return nil
}

// envOr is the environment variable's value, or def.
func envOr(env Env, key, def string) string {
	if v := strings.TrimSpace(env.Getenv(key)); v != "" {
		return v
	}
	return def
}
