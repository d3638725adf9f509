// Package auth says who is calling a service's API and what they may do: it
// verifies the bearer token (a JWT) of each request and gives the handlers a
// Principal, or answers 401 itself (Require); it applies a service's access
// table (Rules: 403 for what the caller may not do, Owns and Scope for what
// only the handler can tell); and it holds each caller to a write rate
// (Limit: 429). The services share it so that a token means the same thing
// to all three.
//
// Keys come from AUTH_HS256_SECRET (one shared secret: development and
// tests), from AUTH_JWKS_URL (the RS256 and ES256 public keys an identity
// provider publishes, fetched at start, refreshed hourly and when a token
// names a key not seen yet), or both. With neither, the API is open: every
// request is let through, and the service says so at start (Open).
//
// A token is accepted when its signature verifies with a key of its
// algorithm (HS256, RS256 or ES256, nothing else: never "none"), it has not
// expired and is not used before its nbf (with Leeway for clocks apart), its
// iss and aud match AUTH_ISSUER and AUTH_AUDIENCE when those are set, and its
// sub is a UUID: a customer's ID, or any UUID for an admin (roles claim
// holding "admin"). Verification uses golang-jwt/jwt and, for key sets,
// MicahParks/jwkset: parsing and checking JOSE is not code to write again.
package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/time/rate"
)

// Leeway is how far apart the clocks of the issuer and a service may be.
const Leeway = 30 * time.Second

// MaxTokenBytes bounds a token: longer ones are refused unread. Real ones
// are well under 2 KiB.
const MaxTokenBytes = 8 << 10

// MinSecretBytes is the shortest AUTH_HS256_SECRET accepted: HS256 with a
// shorter secret can be brute-forced from one token.
const MinSecretBytes = 32

// RoleAdmin in the roles claim makes the caller an admin.
const RoleAdmin = "admin"

// Config is the AUTH_* settings.
type Config struct {
	// JWKSURL is where the RS256/ES256 public keys are (AUTH_JWKS_URL).
	JWKSURL string
	// HS256Secret verifies HS256 tokens (AUTH_HS256_SECRET); never logged.
	HS256Secret string
	// Issuer and Audience, when set, must be the token's iss and one of
	// its aud (AUTH_ISSUER, AUTH_AUDIENCE).
	Issuer, Audience string
	// Limits hold each caller's writes to a rate (WRITE_RATE_LIMIT,
	// WRITE_RATE_BURST); the zero value, none.
	Limits Limits
}

// Load reads Config from getenv.
func Load(getenv func(string) string) (Config, error) {
	c := Config{
		JWKSURL:     strings.TrimSpace(getenv("AUTH_JWKS_URL")),
		HS256Secret: getenv("AUTH_HS256_SECRET"),
		Issuer:      strings.TrimSpace(getenv("AUTH_ISSUER")),
		Audience:    strings.TrimSpace(getenv("AUTH_AUDIENCE")),
	}
	var err error
	if c.Limits, err = LoadLimits(getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate reports settings a service cannot start with.
func (c Config) Validate() error {
	if c.HS256Secret != "" && len(c.HS256Secret) < MinSecretBytes {
		return fmt.Errorf("AUTH_HS256_SECRET must be at least %d bytes, not %d", MinSecretBytes, len(c.HS256Secret))
	}
	if c.JWKSURL != "" && !strings.HasPrefix(c.JWKSURL, "https://") && !strings.HasPrefix(c.JWKSURL, "http://") {
		return fmt.Errorf("AUTH_JWKS_URL %q is not an http(s) URL", c.JWKSURL)
	}
	if !c.Enabled() && (c.Issuer != "" || c.Audience != "") {
		return errors.New("AUTH_ISSUER or AUTH_AUDIENCE is set, but neither AUTH_JWKS_URL nor AUTH_HS256_SECRET: no token could be verified")
	}
	return nil
}

// Enabled reports whether tokens are required.
func (c Config) Enabled() bool { return c.JWKSURL != "" || c.HS256Secret != "" }

// String keeps the secret out of a %v.
func (c Config) String() string { return c.LogValue().String() }

// LogValue says how callers are authenticated and limited, without the
// secret.
func (c Config) LogValue() slog.Value {
	limit := "off"
	if c.Limits.WriteRate > 0 {
		limit = fmt.Sprintf("%g writes/s per caller", c.Limits.WriteRate)
	}
	if !c.Enabled() {
		return slog.GroupValue(slog.String("tokens", "OFF (open API)"), slog.String("write_limit", limit))
	}
	var keys []string
	if c.HS256Secret != "" {
		keys = append(keys, "HS256 secret")
	}
	if c.JWKSURL != "" {
		keys = append(keys, "JWKS "+c.JWKSURL)
	}
	return slog.GroupValue(slog.String("keys", strings.Join(keys, ", ")),
		slog.String("issuer", c.Issuer), slog.String("audience", c.Audience), slog.String("write_limit", limit))
}

// Principal is who a verified token says is calling.
type Principal struct {
	// Subject is the token's sub: a customer's ID, unless Admin.
	Subject uuid.UUID
	// Admin: the roles claim holds RoleAdmin.
	Admin bool
}

// Claims is the body of the tokens this package reads (and Mint writes).
type Claims struct {
	Roles []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

// Verifier checks tokens. The zero of *Verifier (nil) is the open API.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
	keys   jwkset.Storage // nil without AUTH_JWKS_URL
	now    func() time.Time
}

// New returns the verifier of cfg, or nil when cfg is not Enabled; then it
// logs, loudly, that the API is open. With AUTH_JWKS_URL it fetches the key
// set once before returning (a failure is logged, not fatal: the keys are
// fetched again when a token needs them) and refreshes it until ctx ends.
func New(ctx context.Context, cfg Config, client *http.Client, log *slog.Logger) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		log.Warn("AUTHENTICATION IS OFF: anyone who can reach this API may call every endpoint; set AUTH_HS256_SECRET or AUTH_JWKS_URL to require tokens")
		return nil, nil
	}
	v := &Verifier{cfg: cfg, now: time.Now}
	if cfg.JWKSURL != "" {
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		set, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
			Client: client, Ctx: ctx, HTTPTimeout: 10 * time.Second,
			NoErrorReturnFirstHTTPReq: true, RefreshInterval: time.Hour,
			RefreshErrorHandler: func(_ context.Context, err error) {
				log.Warn("auth: the key set could not be fetched", "url", cfg.JWKSURL, "err", err)
			},
		})
		if err != nil {
			return nil, fmt.Errorf("AUTH_JWKS_URL: %w", err)
		}
		// A token signed with a key published after the last fetch makes
		// the set be fetched again, at most once every 10 s whatever
		// tokens arrive: a rotation is picked up without a restart, and a
		// flood of made-up key IDs does not become a flood of fetches. A
		// request waits at most 3 s for its turn and the fetch together.
		if v.keys, err = jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
			HTTPURLs:          map[string]jwkset.Storage{cfg.JWKSURL: set},
			RefreshUnknownKID: rate.NewLimiter(rate.Every(10*time.Second), 1),
			RateLimitWaitMax:  3 * time.Second,
		}); err != nil {
			return nil, fmt.Errorf("AUTH_JWKS_URL: %w", err)
		}
	}
	var methods []string
	if cfg.HS256Secret != "" {
		methods = append(methods, "HS256")
	}
	if cfg.JWKSURL != "" {
		methods = append(methods, "RS256", "ES256")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(Leeway), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return v.now() })}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	log.Info("authentication on: every endpoint but /healthz, /readyz and /metrics needs a bearer token", "auth", cfg)
	return v, nil
}

// Errors of Verify; the 401 carries their text.
var (
	ErrNoToken  = errors.New("no bearer token: send Authorization: Bearer <token>")
	ErrBadToken = errors.New("invalid token")
)

// Verify checks the value of an Authorization header and returns who it
// names. Every failure wraps ErrNoToken or ErrBadToken.
func (v *Verifier) Verify(ctx context.Context, header string) (Principal, error) {
	if header == "" {
		return Principal{}, ErrNoToken
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return Principal{}, fmt.Errorf("%w: the Authorization header is not \"Bearer <token>\"", ErrBadToken)
	}
	if len(token) > MaxTokenBytes {
		return Principal{}, fmt.Errorf("%w: longer than %d bytes", ErrBadToken, MaxTokenBytes)
	}
	var claims Claims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyFor(ctx)); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	sub, err := uuid.Parse(claims.Subject)
	if err != nil || len(claims.Subject) != 36 {
		return Principal{}, fmt.Errorf("%w: sub %q is not a UUID", ErrBadToken, claims.Subject)
	}
	return Principal{Subject: sub, Admin: slices.Contains(claims.Roles, RoleAdmin)}, nil
}

// keyFor returns the key a token's header calls for. The parser has already
// refused any algorithm but those configured.
func (v *Verifier) keyFor(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if alg == "HS256" {
			return []byte(v.cfg.HS256Secret), nil
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, fmt.Errorf("%s token without a kid", alg)
		}
		k, err := v.keys.KeyRead(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
		if a := string(k.Marshal().ALG); a != "" && a != alg {
			return nil, fmt.Errorf("key %q is for %s, the token says %s", kid, a, alg)
		}
		switch pub := k.Key().(type) {
		case *rsa.PublicKey:
			if alg == "RS256" {
				return pub, nil
			}
		case *ecdsa.PublicKey:
			if alg == "ES256" && pub.Curve == elliptic.P256() {
				return pub, nil
			}
		}
		return nil, fmt.Errorf("key %q does not fit %s", kid, alg)
	}
}

// Mint returns an HS256 token for sub (an admin's if admin) that expires
// after ttl, signed with secret: bin/token's, for development and tests.
func Mint(secret string, sub uuid.UUID, admin bool, ttl time.Duration, issuer, audience string) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("the secret must be at least %d bytes", MinSecretBytes)
	}
	now := time.Now()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub.String(), Issuer: issuer,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
	if admin {
		c.Roles = []string{RoleAdmin}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
