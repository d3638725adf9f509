package auth

import (
	"net/http"
	"time"

	"github.com/google/uuid"
)

// ToolToken is the token the project's own clients (demo, loadgen,
// tracecheck, chaos) send: AUTH_TOKEN when set, else, when
// AUTH_HS256_SECRET is set, an admin's token minted with it for a day
// (with AUTH_ISSUER and AUTH_AUDIENCE), else none: the open API.
func ToolToken(getenv func(string) string) (string, error) {
	if t := getenv("AUTH_TOKEN"); t != "" {
		return t, nil
	}
	secret := getenv("AUTH_HS256_SECRET")
	if secret == "" {
		return "", nil
	}
	return Mint(secret, uuid.New(), true, 24*time.Hour, getenv("AUTH_ISSUER"), getenv("AUTH_AUDIENCE"))
}

// WithToken returns next sending token as a bearer token on every request
// that has no Authorization header; with no token, next itself.
func WithToken(next http.RoundTripper, token string) http.RoundTripper {
	if token == "" {
		return next
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return bearer{next: next, value: "Bearer " + token}
}

type bearer struct {
	next  http.RoundTripper
	value string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.value)
	return b.next.RoundTrip(r)
}
