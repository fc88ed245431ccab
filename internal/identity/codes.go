package identity

import "errors"

// codes is the provider's op.Crypto. The library uses it for two things: to
// turn an auth request id into an authorization code (Encrypt), and to read
// opaque bearer access tokens (Decrypt).
//
// Its default encrypts the request id under a configured key, so anyone who
// knew the key could mint the code for any request id they saw in a login
// URL. Here a code is 256 random bits that the storage looks up by hash, so
// there is no long-lived key to manage or leak. And since every access token
// is a JWT, nothing is ever decrypted: refusing Decrypt also closes the
// library's path that accepts an "id:subject" string encrypted under that
// key as a bearer token.
type codes struct{}

// Encrypt ignores its input and returns a fresh random code.
func (codes) Encrypt(string) (string, error) { return randomToken() }

// Decrypt refuses: there are no opaque tokens to read.
func (codes) Decrypt(string) (string, error) {
	return "", errors.New("identity: no opaque tokens are issued")
}
