package identity

import (
	"crypto/hmac"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/rideshare-platform/rideshare/internal/auth"
)

// serviceTokenLifetime is how long a service token lives. Services fetch
// and refresh theirs by themselves, so a short life costs one request to
// the token endpoint every few minutes per process, and bounds what a
// token leaked from one service's memory or traffic is good for.
const serviceTokenLifetime = 5 * time.Minute

// serviceClients are the platform services' own clients, one per service
// ("service-payments"), for the client_credentials grant. They are not
// stored: configuration is the whole truth about them. Each one's secret is
// derived from the master secret (auth.ServiceSecret), which only identity
// holds, and checked by deriving it again, so nothing about them sits in
// the database, no slow password hash is needed (a derived secret has 256
// bits: nothing to guess), and a new master secret takes effect at the
// next start. The "service-" prefix is reserved for them: a stored client
// of that name is never read.
type serviceClients struct {
	master string
	names  map[string]bool
}

func newServiceClients(master string, callGraph map[string][]string) serviceClients {
	sc := serviceClients{master: master, names: map[string]bool{}}
	for name := range callGraph {
		sc.names[name] = true
	}
	return sc
}

// get is service name's client; an unknown service, or any without a
// master secret, is an unknown client.
func (sc serviceClients) get(name string) (*client, error) {
	if sc.master == "" || !sc.names[name] {
		return nil, errUnknownClient()
	}
	return &client{
		id:         auth.ServiceClientID(name),
		service:    true,
		grantTypes: []oidc.GrantType{oidc.GrantTypeClientCredentials},
		role:       auth.ServiceRole,
	}, nil
}

// authenticate reports whether secret is service client id's secret, in
// constant time.
func (sc serviceClients) authenticate(id, secret string) bool {
	name, ok := auth.ServiceOfClient(id)
	if !ok || sc.master == "" {
		return false
	}
	return hmac.Equal([]byte(secret), []byte(auth.ServiceSecret(sc.master, name)))
}
