package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

const secret = "0123456789abcdef0123456789abcdef-test"

var quiet = slog.New(slog.DiscardHandler)

func hsVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	cfg.HS256Secret = secret
	v, err := New(t.Context(), cfg, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sign returns a token of claims signed with method and key.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, roles []string, mod func(*jwt.RegisteredClaims)) Claims {
	now := time.Now()
	c := Claims{Roles: roles, RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}}
	if mod != nil {
		mod(&c.RegisteredClaims)
	}
	return c
}

// A token is accepted only when everything about it holds; each way of
// being wrong is refused as a bad token (a missing one as no token).
func TestVerifyRefusesEveryBadToken(t *testing.T) {
	v := hsVerifier(t, Config{Issuer: "https://id.example", Audience: "eventsaga"})
	customer := uuid.New()
	good := func(mod func(*jwt.RegisteredClaims)) Claims {
		return claims(customer.String(), nil, func(c *jwt.RegisteredClaims) {
			c.Issuer, c.Audience = "https://id.example", jwt.ClaimStrings{"eventsaga"}
			if mod != nil {
				mod(c)
			}
		})
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ok := sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(nil))
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good(nil))
	forged := ok[:len(ok)-4] + map[bool]string{true: "AAAA", false: "BBBB"}[!strings.HasSuffix(ok, "AAAA")]

	for _, tc := range []struct {
		name, header string
		want         error
	}{
		{"no header", "", ErrNoToken},
		{"not Bearer", "Basic " + ok, ErrBadToken},
		{"Bearer without a token", "Bearer ", ErrBadToken},
		{"two tokens", "Bearer " + ok + " " + ok, ErrBadToken},
		{"not a JWT", "Bearer hello", ErrBadToken},
		{"alg none", "Bearer " + none, ErrBadToken},
		{"HS384", "Bearer " + sign(t, jwt.SigningMethodHS384, []byte(secret), "", good(nil)), ErrBadToken},
		{"RS256 without a key set", "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey, "k1", good(nil)), ErrBadToken},
		{"another secret", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), "", good(nil)), ErrBadToken},
		{"signature altered", "Bearer " + forged, ErrBadToken},
		{"expired", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) {
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-Leeway - time.Second))
		})), ErrBadToken},
		{"no expiry", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil })), ErrBadToken},
		{"not yet valid", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) {
			c.NotBefore = jwt.NewNumericDate(time.Now().Add(Leeway + time.Minute))
		})), ErrBadToken},
		{"wrong issuer", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) { c.Issuer = "https://evil.example" })), ErrBadToken},
		{"wrong audience", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"other"} })), ErrBadToken},
		{"sub not a UUID", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) { c.Subject = "alice" })), ErrBadToken},
		{"sub a UUID in braces", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) { c.Subject = "{" + customer.String() + "}" })), ErrBadToken},
		{"100 KB", "Bearer " + strings.Repeat("a", 100<<10), ErrBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.header)
			if err == nil || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("good, within the clock skew", func(t *testing.T) {
		tok := sign(t, jwt.SigningMethodHS256, []byte(secret), "", good(func(c *jwt.RegisteredClaims) {
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-Leeway / 2))
			c.NotBefore = jwt.NewNumericDate(time.Now().Add(Leeway / 2))
		}))
		p, err := v.Verify(context.Background(), "bearer "+tok)
		if err != nil || p != (Principal{Subject: customer}) {
			t.Fatalf("got %+v, %v", p, err)
		}
	})
	t.Run("admin", func(t *testing.T) {
		c := good(nil)
		c.Roles = []string{"viewer", RoleAdmin}
		p, err := v.Verify(context.Background(), "Bearer "+sign(t, jwt.SigningMethodHS256, []byte(secret), "", c))
		if err != nil || !p.Admin || p.Subject != customer {
			t.Fatalf("got %+v, %v", p, err)
		}
	})
}

func TestMintedTokensVerify(t *testing.T) {
	v := hsVerifier(t, Config{Issuer: "dev", Audience: "eventsaga"})
	sub := uuid.New()
	for _, admin := range []bool{false, true} {
		tok, err := Mint(secret, sub, admin, time.Hour, "dev", "eventsaga")
		if err != nil {
			t.Fatal(err)
		}
		if p, err := v.Verify(context.Background(), "Bearer "+tok); err != nil || p != (Principal{Subject: sub, Admin: admin}) {
			t.Errorf("admin=%v: got %+v, %v", admin, p, err)
		}
	}
	if _, err := Mint("short", sub, false, time.Hour, "", ""); err == nil {
		t.Error("minted with a short secret")
	}
}

func TestConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name    string
		getenv  func(string) string
		enabled bool
		bad     string
	}{
		{"nothing: open", env(), false, ""},
		{"secret", env("AUTH_HS256_SECRET", secret), true, ""},
		{"short secret", env("AUTH_HS256_SECRET", "abc"), false, "at least 32 bytes"},
		{"jwks", env("AUTH_JWKS_URL", "https://id.example/jwks.json"), true, ""},
		{"jwks not a URL", env("AUTH_JWKS_URL", "id.example"), false, "not an http(s) URL"},
		{"audience alone", env("AUTH_AUDIENCE", "x"), false, "no token could be verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.getenv)
			switch {
			case tc.bad != "":
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("err %v, want one saying %q", err, tc.bad)
				}
			case err != nil:
				t.Fatal(err)
			case c.Enabled() != tc.enabled:
				t.Fatalf("enabled %v", c.Enabled())
			}
		})
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "auth", Config{HS256Secret: secret})
	if strings.Contains(b.String(), secret) {
		t.Errorf("the secret is logged: %s", b.String())
	}
	for _, s := range []string{fmt.Sprint(Config{HS256Secret: secret}), fmt.Sprintf("%+v", Config{HS256Secret: secret})} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret is printed: %s", s)
		}
	}
}

// keyServer publishes a JWK set that a test can replace, and counts fetches.
type keyServer struct {
	mu      sync.Mutex
	set     []byte
	fetches atomic.Int32
	*httptest.Server
}

func newKeyServer(t *testing.T) *keyServer {
	ks := &keyServer{}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ks.fetches.Add(1)
		ks.mu.Lock()
		defer ks.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(ks.set)
	}))
	t.Cleanup(ks.Close)
	return ks
}

// publish makes the set the public halves of keys, by kid.
func (ks *keyServer) publish(t *testing.T, keys map[string]any) {
	t.Helper()
	var set jwkset.JWKSMarshal
	for kid, k := range keys {
		var pub any
		alg := jwkset.AlgRS256
		switch k := k.(type) {
		case *rsa.PrivateKey:
			pub = &k.PublicKey
		case *ecdsa.PrivateKey:
			pub, alg = &k.PublicKey, jwkset.AlgES256
		}
		j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	ks.mu.Lock()
	ks.set = b
	ks.mu.Unlock()
}

// RS256 and ES256 tokens verify against the published set; a key published
// later (a rotation) is fetched when a token names it, and a key taken out
// of the set no longer verifies once the set is fetched again.
func TestVerifyWithAKeySetAndItsRotation(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	next, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ks := newKeyServer(t)
	ks.publish(t, map[string]any{"rsa-1": rsaKey, "ec-1": ecKey})
	v, err := New(t.Context(), Config{JWKSURL: ks.URL}, ks.Client(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	sub := uuid.New()
	c := claims(sub.String(), nil, nil)
	verify := func(tok string) error {
		_, err := v.Verify(context.Background(), "Bearer "+tok)
		return err
	}
	if err := verify(sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c)); err != nil {
		t.Errorf("RS256: %v", err)
	}
	if err := verify(sign(t, jwt.SigningMethodES256, ecKey, "ec-1", c)); err != nil {
		t.Errorf("ES256: %v", err)
	}
	for name, tok := range map[string]string{
		"RS256 under the EC key's kid": sign(t, jwt.SigningMethodRS256, rsaKey, "ec-1", c),
		"no kid":                       sign(t, jwt.SigningMethodRS256, rsaKey, "", c),
		"HS256 without a secret":       sign(t, jwt.SigningMethodHS256, []byte(secret), "", c),
		"RS256 with the public key as an HS256 secret (alg confusion)": sign(t, jwt.SigningMethodHS256,
			[]byte(must(jwkset.NewJWKFromKey(&rsaKey.PublicKey, jwkset.JWKOptions{})).Marshal().N), "rsa-1", c),
	} {
		if err := verify(tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// Rotation: rsa-2 replaces rsa-1.
	ks.publish(t, map[string]any{"rsa-2": next, "ec-1": ecKey})
	before := ks.fetches.Load()
	if err := verify(sign(t, jwt.SigningMethodRS256, next, "rsa-2", c)); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if ks.fetches.Load() != before+1 {
		t.Errorf("fetches: %d, want %d", ks.fetches.Load(), before+1)
	}
	if err := verify(sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c)); err == nil {
		t.Error("a token of the retired key verified")
	}
	// Unknown key IDs do not make a fetch each.
	for i := range 5 {
		if err := verify(sign(t, jwt.SigningMethodRS256, next, "made-up-"+string(rune('a'+i)), c)); err == nil {
			t.Error("a made-up kid verified")
		}
	}
	if n := ks.fetches.Load(); n > before+2 {
		t.Errorf("%d fetches for five made-up key IDs within 10 s, want at most one", n-before-1)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Through the middleware: no token or a bad one is a 401 problem with a
// Bearer challenge and never reaches the handler; the health, readiness
// and metrics paths need none; a good token reaches the handler with its
// caller.
func TestRequire(t *testing.T) {
	v := hsVerifier(t, Config{})
	e := httpapi.New(quiet, nil)
	e.Use(Require(v, Rules{"POST /orders": AnyCaller}))
	var reached atomic.Int32
	var got Principal
	e.POST("/orders", func(c echo.Context) error {
		reached.Add(1)
		got, _ = Caller(c)
		return c.NoContent(http.StatusCreated)
	})
	httpapi.Health(e, func(context.Context) error { return nil })
	e.GET("/metrics", func(c echo.Context) error { return c.String(http.StatusOK, "# metrics") })

	do := func(method, path, authz string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader("{}"))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for name, authz := range map[string]string{
		"none":    "",
		"garbage": "Bearer x.y.z",
		"basic":   "Basic dXNlcjpwYXNz",
		"100 KB":  "Bearer " + strings.Repeat("a", 100<<10),
	} {
		rec := do(http.MethodPost, "/orders", authz)
		body, _ := io.ReadAll(rec.Body)
		var p httpapi.Problem
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Content-Type") != httpapi.ContentType ||
			json.Unmarshal(body, &p) != nil || p.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s %s", name, rec.Code, rec.Header().Get("Content-Type"), body)
		}
		ch := rec.Header().Get("WWW-Authenticate")
		if !strings.HasPrefix(ch, "Bearer ") || (authz != "") != strings.Contains(ch, `error="invalid_token"`) {
			t.Errorf("%s: WWW-Authenticate %q", name, ch)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the handler ran %d times without a valid token", n)
	}
	for _, path := range Open {
		if rec := do(http.MethodGet, path, ""); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %d", path, rec.Code)
		}
	}
	sub := uuid.New()
	tok, err := Mint(secret, sub, false, time.Minute, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if rec := do(http.MethodPost, "/orders", "Bearer "+tok); rec.Code != http.StatusCreated || got != (Principal{Subject: sub}) {
		t.Errorf("a good token: %d, caller %+v", rec.Code, got)
	}

	// Without a verifier the API is open.
	open := httpapi.New(quiet, nil)
	open.Use(Require(nil, nil))
	open.POST("/orders", func(c echo.Context) error { return c.NoContent(http.StatusCreated) })
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders", nil))
	if rec.Code != http.StatusCreated {
		t.Errorf("open API: %d", rec.Code)
	}
}

// The rules: AdminOnly (and a route without a rule) refuses customers
// before the handler; OwnerOrAdmin lets a customer through to the handler,
// where Owns admits the owner only; AnyCaller lets anyone through, and
// Scope narrows a customer to itself.
func TestRules(t *testing.T) {
	v := hsVerifier(t, Config{})
	e := httpapi.New(quiet, nil)
	e.Use(Require(v, Rules{
		"POST /back-office":    AdminOnly,
		"GET /things/:id":      OwnerOrAdmin,
		"GET /things":          AnyCaller,
		"GET /owned-elsewhere": AnyCaller,
	}))
	owner, other := uuid.New(), uuid.New()
	handler := func(c echo.Context) error {
		if err := Owns(c, owner); err != nil {
			return err
		}
		return c.NoContent(http.StatusOK)
	}
	e.POST("/back-office", handler)
	e.GET("/things/:id", handler)
	e.GET("/owned-elsewhere", handler) // Owns on a route that is not OwnerOrAdmin
	e.GET("/unlisted", handler)
	e.GET("/things", func(c echo.Context) error {
		who, all := Scope(c)
		if all {
			return c.String(http.StatusOK, "all")
		}
		return c.String(http.StatusOK, who.String())
	})
	token := func(sub uuid.UUID, admin bool) string {
		tok, err := Mint(secret, sub, admin, time.Minute, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	for _, tc := range []struct {
		method, path string
		authz        string
		want         int
		body         string
	}{
		{http.MethodPost, "/back-office", token(other, true), http.StatusOK, ""},
		{http.MethodPost, "/back-office", token(owner, false), http.StatusForbidden, ""},
		{http.MethodGet, "/unlisted", token(owner, false), http.StatusForbidden, ""},
		{http.MethodGet, "/unlisted", token(other, true), http.StatusOK, ""},
		{http.MethodGet, "/things/x", token(owner, false), http.StatusOK, ""},
		{http.MethodGet, "/things/x", token(other, false), http.StatusForbidden, ""},
		{http.MethodGet, "/things/x", token(other, true), http.StatusOK, ""},
		{http.MethodGet, "/owned-elsewhere", token(owner, false), http.StatusForbidden, ""},
		{http.MethodGet, "/things", token(other, false), http.StatusOK, other.String()},
		{http.MethodGet, "/things", token(other, true), http.StatusOK, "all"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", tc.authz)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.want || (tc.body != "" && rec.Body.String() != tc.body) {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, rec.Code, rec.Body, tc.want, tc.body)
		}
		if rec.Code == http.StatusForbidden && !strings.Contains(rec.Body.String(), "urn:eventsaga:problem:forbidden") {
			t.Errorf("%s %s: a 403 without its problem: %s", tc.method, tc.path, rec.Body)
		}
	}
}

// Pages: a browser's cookie stands for the Authorization header on GETs
// under the prefix only; a browser without a valid token is sent to sign
// in, an API client gets its 401; Public routes need nothing.
func TestPagesAndPublic(t *testing.T) {
	v := hsVerifier(t, Config{})
	e := httpapi.New(quiet, nil)
	e.Use(Require(v, Rules{"GET /ui/login": Public, "POST /ui/write": AdminOnly}, Pages{Prefix: "/ui", SignIn: "/ui/login"}))
	ok := func(c echo.Context) error { return c.NoContent(http.StatusOK) }
	for _, r := range []string{"/ui", "/ui/orders/:id", "/ui/login", "/api", "/uix"} {
		e.GET(r, ok)
	}
	e.POST("/ui/write", ok)
	admin, err := Mint(secret, uuid.New(), true, time.Minute, "", "")
	if err != nil {
		t.Fatal(err)
	}
	customer, err := Mint(secret, uuid.New(), false, time.Minute, "", "")
	if err != nil {
		t.Fatal(err)
	}
	expired, err := Mint(secret, uuid.New(), true, -time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, cookie, accept string
		want                         int
		location                     string
	}{
		{http.MethodGet, "/ui", admin, "", http.StatusOK, ""},
		{http.MethodGet, "/ui/orders/x", admin, "text/html", http.StatusOK, ""},
		{http.MethodGet, "/ui/orders/x", customer, "", http.StatusForbidden, ""},
		{http.MethodGet, "/ui/orders/x", expired, "", http.StatusUnauthorized, ""},
		{http.MethodGet, "/ui/orders/x?a=1", expired, "text/html,application/xhtml+xml", http.StatusSeeOther, "/ui/login?then=%2Fui%2Forders%2Fx%3Fa%3D1"},
		{http.MethodGet, "/ui", "", "text/html", http.StatusSeeOther, "/ui/login?then=%2Fui"},
		{http.MethodGet, "/ui", "", "", http.StatusUnauthorized, ""},
		{http.MethodGet, "/ui/login", "", "text/html", http.StatusOK, ""},
		// Not pages: the cookie counts for nothing there.
		{http.MethodGet, "/api", admin, "text/html", http.StatusUnauthorized, ""},
		{http.MethodGet, "/uix", admin, "", http.StatusUnauthorized, ""},
		{http.MethodPost, "/ui/write", admin, "text/html", http.StatusUnauthorized, ""},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.cookie != "" {
			req.AddCookie(&http.Cookie{Name: CookieName, Value: tc.cookie})
		}
		req.Header.Set("Accept", tc.accept)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.want || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s %s (cookie %t, accept %q): %d to %q, want %d to %q", tc.method, tc.path, tc.cookie != "", tc.accept,
				rec.Code, rec.Header().Get("Location"), tc.want, tc.location)
		}
	}
}

// SetCookie: a cookie no script reads and no other site sends.
func TestSetCookie(t *testing.T) {
	e := echo.New()
	for _, tc := range []struct {
		token  string
		tls    bool
		maxAge int
	}{{"tok", false, 0}, {"tok", true, 0}, {"", false, -1}} {
		req := httptest.NewRequest(http.MethodPost, "/ui/login", nil)
		if tc.tls {
			req.TLS = &tls.ConnectionState{}
		}
		rec := httptest.NewRecorder()
		SetCookie(e.NewContext(req, rec), "/ui", tc.token)
		cks := rec.Result().Cookies()
		if len(cks) != 1 {
			t.Fatalf("%d cookies", len(cks))
		}
		ck := cks[0]
		if ck.Name != CookieName || ck.Value != tc.token || ck.Path != "/ui" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode ||
			ck.Secure != tc.tls || ck.MaxAge != tc.maxAge {
			t.Errorf("%+v for %+v", ck, tc)
		}
	}
}

// The project's clients send AUTH_TOKEN, or an admin's token minted with
// AUTH_HS256_SECRET, or nothing.
func TestToolToken(t *testing.T) {
	v := hsVerifier(t, Config{})
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	tok, err := ToolToken(env(map[string]string{"AUTH_HS256_SECRET": secret}))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
	defer srv.Close()
	resp, err := (&http.Client{Transport: WithToken(nil, tok)}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p, err := v.Verify(context.Background(), got); err != nil || !p.Admin {
		t.Errorf("sent %q: %+v, %v", got, p, err)
	}
	if tok, _ := ToolToken(env(map[string]string{"AUTH_TOKEN": "given", "AUTH_HS256_SECRET": secret})); tok != "given" {
		t.Errorf("AUTH_TOKEN not preferred: %q", tok)
	}
	if tok, err := ToolToken(env(nil)); tok != "" || err != nil {
		t.Errorf("without settings: %q, %v", tok, err)
	}
	if rt := WithToken(http.DefaultTransport, ""); rt != http.DefaultTransport {
		t.Error("no token, yet the transport was wrapped")
	}
}
