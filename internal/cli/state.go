package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StateFile is where `up` records how to reach the platform it runs, so
// that later commands need no flags against the local platform.
const StateFile = "platform.json"

// State is the running platform's address book and operator credential.
// The file is mode 0600: it holds a client secret.
type State struct {
	GatewayURL string `json:"gateway_url"`
	// NATSURL is the broker's URL (comma-separated for a cluster), without
	// a password or token.
	NATSURL  string            `json:"nats_url"`
	Services map[string]string `json:"services"`
	// Databases maps each service that keeps data to its database: a
	// SQLite file, or a PostgreSQL DSN without its password (tools find
	// that where psql does: PGPASSWORD or ~/.pgpass), so that no secret
	// is kept here that `up` did not make itself.
	Databases map[string]string `json:"databases,omitempty"`
	// ClientID and ClientSecret are the operator's client-credentials
	// client; kept across runs so scripts keep working.
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	// FleetPassword is the simulated drivers' password, kept so a new run
	// logs in to the accounts the last one created.
	FleetPassword string    `json:"fleet_password,omitempty"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"started_at"`
}

// ReadState reads the state in the data folder dir.
func ReadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

// writeState replaces the state file atomically, so a reader never sees
// half of it.
func writeState(dir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".platform-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, StateFile))
}

// previousState is the last run's state, or the zero State if there was none.
func previousState(dir string) (State, error) {
	s, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	return s, err
}
