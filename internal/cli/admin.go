package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
)

const adminSummary = `Gives an account the admin role (grant), or takes it away again (revoke: the
account goes back to the rider or driver it signed up as).

How it works: it gets an operator token with the client_credentials grant from
the gateway's /oauth2/token, then calls identity's SetRole RPC with that token
as its bearer. Identity verifies the token itself against its own signing keys:
only an admin may change roles. The change is an audit event in identity's log.

Against the platform 'rideshare up' runs, it needs no flags: the addresses and
the operator credential come from platform.json in the data folder. For a
remote platform pass --gateway, --identity, --client-id and --client-secret
(or set RIDESHARE_CLIENT_SECRET, which keeps the secret out of the process
list).

A role change applies to tokens issued after it. Tokens the account already
holds keep their old role until they expire (access tokens live 15 minutes);
signing in again or refreshing gets one with the new role.

Examples:
  rideshare admin grant ada@example.com
  rideshare admin revoke ada@example.com --data /srv/rideshare
  rideshare admin grant ada@example.com --gateway https://api.example.com \
      --identity http://identity.internal:8080 --client-id rideshare-operator`

// adminTarget is where and as whom the command acts.
type adminTarget struct {
	gateway, identity      string
	clientID, clientSecret string
}

// runAdmin is `rideshare admin`: operator tasks, for now granting and
// revoking the admin role.
func runAdmin(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "admin", "admin grant|revoke EMAIL [flags]", adminSummary)
	data := fs.String("data", ".rideshare", "data folder of a local platform, whose "+StateFile+" supplies what the flags below leave out")
	var t adminTarget
	fs.StringVar(&t.gateway, "gateway", "", "the gateway's base URL, where /oauth2/token is (default: from "+StateFile+")")
	fs.StringVar(&t.identity, "identity", "", "identity's base URL, where its RPCs are served (default: from "+StateFile+")")
	fs.StringVar(&t.clientID, "client-id", "", "the operator's client_credentials client id (default: from "+StateFile+")")
	fs.StringVar(&t.clientSecret, "client-secret", envOr(env, "RIDESHARE_CLIENT_SECRET", ""),
		"its secret (default: RIDESHARE_CLIENT_SECRET, else from "+StateFile+")")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the whole command")
	pos, err := parseInterspersed(fs, env, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "grant" && pos[0] != "revoke") {
		fmt.Fprintf(env.Stderr, "Usage: rideshare admin grant|revoke EMAIL [flags]\nRun 'rideshare admin --help' for more.\n")
		return errUsage
	}
	grant, email := pos[0] == "grant", pos[1]
	if err := t.fill(*data); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{}

	tok, err := operatorToken(ctx, client, t)
	if err != nil {
		return err
	}
	req := connect.NewRequest(&identityv1.SetRoleRequest{
		Caller: tok.caller(), Email: email, Role: authv1.Role_ROLE_ADMIN, Granted: grant,
	})
	req.Header().Set("Authorization", "Bearer "+tok.AccessToken)
	res, err := identityv1connect.NewIdentityServiceClient(client, t.identity).SetRole(ctx, req)
	if err != nil {
		return fmt.Errorf("identity at %s: %w", t.identity, err)
	}
	printRoleChange(env.Stdout, grant, res.Msg, time.Duration(tok.ExpiresIn)*time.Second)
	return nil
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments ("grant ada@example.com --data x" as well as "--data x grant
// ada@example.com"), which the flag package alone stops at the first
// positional for.
func parseInterspersed(fs *flag.FlagSet, env Env, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, env, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// fill takes what the flags left out from the state file in dir.
func (t *adminTarget) fill(dir string) error {
	defer func() {
		t.gateway, t.identity = strings.TrimRight(t.gateway, "/"), strings.TrimRight(t.identity, "/")
	}()
	if t.gateway != "" && t.identity != "" && t.clientID != "" && t.clientSecret != "" {
		return nil
	}
	s, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no %s in %s: is `rideshare up` running there? For another platform pass --gateway, --identity, --client-id and --client-secret",
			StateFile, dir)
	}
	if err != nil {
		return err
	}
	for _, f := range []struct {
		dst  *string
		v    string
		flag string
	}{
		{&t.gateway, s.GatewayURL, "--gateway"},
		{&t.identity, s.Services["identity"], "--identity"},
		{&t.clientID, s.ClientID, "--client-id"},
		{&t.clientSecret, s.ClientSecret, "--client-secret"},
	} {
		if *f.dst == "" {
			*f.dst = f.v
		}
		if *f.dst == "" {
			return fmt.Errorf("%s names no value for %s; pass it", filepath.Join(dir, StateFile), f.flag)
		}
	}
	return nil
}

// operatorToken gets an access token for the operator client with the
// client_credentials grant.
func operatorToken(ctx context.Context, client *http.Client, t adminTarget) (*tokenResponse, error) {
	endpoint := t.gateway + "/oauth2/token"
	tok, err := requestOperatorToken(ctx, client, endpoint, t.clientID, t.clientSecret)
	if err != nil {
		return nil, fmt.Errorf("getting an operator token from %s: %w", endpoint, err)
	}
	if tok.status != http.StatusOK || tok.AccessToken == "" {
		if tok.Error == "" && tok.Code == "" {
			return nil, fmt.Errorf("getting an operator token from %s: %d, not a token response", endpoint, tok.status)
		}
		return nil, fmt.Errorf("%s refused the operator credential of client %q: %s %s", endpoint, t.clientID, tok.Error, tok.ErrorDescription)
	}
	return tok, nil
}

// caller is who the token says it speaks for, read from its payload for
// the request's Caller field. Identity does not take that field's word: it
// verifies the token and only checks the field agrees, so nothing here
// needs verifying.
func (tok *tokenResponse) caller() *authv1.Caller {
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c struct {
		Sub  string `json:"sub"`
		Role string `json:"role"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Sub == "" || c.Role != "admin" {
		return nil
	}
	return &authv1.Caller{UserId: c.Sub, Role: authv1.Role_ROLE_ADMIN}
}

func printRoleChange(w io.Writer, grant bool, res *identityv1.SetRoleResponse, tokenLife time.Duration) {
	acc := res.GetAccount()
	role := strings.ToLower(strings.TrimPrefix(res.GetAccount().GetRole().String(), "ROLE_"))
	switch {
	case !res.GetChanged() && grant:
		fmt.Fprintf(w, "%s is already an admin (account %s); nothing changed.\n", acc.GetEmail(), acc.GetId())
		return
	case !res.GetChanged():
		fmt.Fprintf(w, "%s is not an admin (account %s, %s); nothing changed.\n", acc.GetEmail(), acc.GetId(), role)
		return
	case grant:
		was := strings.ToLower(strings.TrimPrefix(res.GetPreviousRole().String(), "ROLE_"))
		fmt.Fprintf(w, "Granted admin to %s (account %s, was %s).\n", acc.GetEmail(), acc.GetId(), was)
	default:
		fmt.Fprintf(w, "Revoked admin from %s (account %s, now %s).\n", acc.GetEmail(), acc.GetId(), role)
	}
	life := "until they expire"
	if tokenLife > 0 {
		life = fmt.Sprintf("until they expire (access tokens live %d minutes)", int(tokenLife.Round(time.Minute).Minutes()))
	}
	fmt.Fprintf(w, "The new role applies to tokens issued from now on. Tokens %s already holds keep their old role\n%s; signing in again or refreshing gets one with the new role.\n", acc.GetEmail(), life)
}
