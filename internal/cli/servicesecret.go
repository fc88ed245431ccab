package cli

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"

	"github.com/rideshare-platform/rideshare/internal/auth"
)

// upEnv is the environment `up` starts service name with: its secrets, and
// no other service's. Identity gets the operator client's secret and the
// master secret every service's secret derives from; every other service
// gets only its own derived secret (auth.ServiceSecret), so that one
// compromised service cannot act as another, nor as an operator.
func upEnv(name, operatorSecret string) []string {
	master := upServiceMaster(operatorSecret)
	if name == "identity" {
		return []string{
			"RIDESHARE_OPERATOR_CLIENT_SECRET=" + operatorSecret,
			"RIDESHARE_SERVICE_MASTER_SECRET=" + master,
		}
	}
	return []string{"RIDESHARE_SERVICE_SECRET=" + auth.ServiceSecret(master, name)}
}

// upServiceMaster is the master secret of the platform `up` runs, derived
// from the operator secret it keeps in the state file. Deriving it rather
// than storing another secret keeps services' credentials stable across
// runs over one data folder, and lets whoever holds the state file (the
// operator, and the tests) act as a service, which on one machine they can
// anyway: every process there runs as their user, whose environment they
// can read. A cluster gives each service its secret on its own instead.
func upServiceMaster(operatorSecret string) string {
	mac := hmac.New(sha256.New, []byte(operatorSecret))
	mac.Write([]byte("rideshare service master secret"))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// ServiceSecret is the client secret `up` gave service, for a test or tool
// on the same machine that must call a service's RPC directly, as that
// service.
func (s State) ServiceSecret(service string) string {
	return auth.ServiceSecret(upServiceMaster(s.ClientSecret), service)
}
