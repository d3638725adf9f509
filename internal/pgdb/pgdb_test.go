package pgdb

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedact(t *testing.T) {
	// Only the string's own password counts when pgconn reads it below.
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", t.TempDir()+"/none")
	for _, tc := range []struct {
		name, raw, want string
		secrets         []string // none of which may be left
	}{
		{"url userinfo", "postgres://app:s3cret@db:5432/orders?sslmode=disable",
			"postgres://app:xxxxx@db:5432/orders?sslmode=disable", []string{"s3cret"}},
		{"url userinfo escaped", "postgresql://app:p%40ss%2Fw0rd@db/orders",
			"postgresql://app:xxxxx@db/orders", []string{"p%40ss", "p@ss", "w0rd"}},
		{"url the local default", Local, "postgres://postgres:xxxxx@127.0.0.1:5432/postgres?sslmode=disable", nil},
		{"url no password", "postgres://app@db/orders?sslmode=disable", "postgres://app@db/orders?sslmode=disable", nil},
		{"url no user", "postgres://db/orders", "postgres://db/orders", nil},
		{"url query parameter", "postgres://app@db/orders?sslmode=disable&password=s3cret&application_name=x",
			"postgres://app@db/orders?sslmode=disable&password=xxxxx&application_name=x", []string{"s3cret"}},
		{"url query parameter first", "postgres://db/orders?password=s%20ecret",
			"postgres://db/orders?password=xxxxx", []string{"ecret"}},
		{"url query key escaped", "postgres://db/orders?pass%77ord=s3cret", "postgres://db/orders?pass%77ord=xxxxx", []string{"s3cret"}},
		{"url both", "postgres://app:one@db/orders?password=two&sslpassword=three",
			"postgres://app:xxxxx@db/orders?password=xxxxx&sslpassword=xxxxx", []string{"one", "two", "three"}},
		{"url uppercase scheme", "POSTGRES://app:s3cret@db/orders", "postgres://app:xxxxx@db/orders", []string{"s3cret"}},
		{"url that does not parse", "postgres://app:s3%zzcret@db/orders?password=two",
			"postgres://app:xxxxx@db/orders?password=xxxxx", []string{"s3", "cret", "two"}},
		{"url that does not parse, @ in the password", "postgres://app:s3@c%zret@db/orders",
			"postgres://app:xxxxx@db/orders", []string{"s3", "ret"}},

		{"kv", "host=db password=s3cret", "host=db password=xxxxx", []string{"s3cret"}},
		{"kv password first", "password=s3cret host=db dbname=orders", "password=xxxxx host=db dbname=orders", []string{"s3cret"}},
		{"kv spaces around =", "host=db password = s3cret user=app", "host=db password = xxxxx user=app", []string{"s3cret"}},
		{"kv tabs and newlines", "host=db\tpassword=s3cret\nuser=app", "host=db\tpassword=xxxxx\nuser=app", []string{"s3cret"}},
		{"kv quoted", "host=db password='s 3cret' user=app", "host=db password=xxxxx user=app", []string{"3cret"}},
		{"kv quoted escaped quote", `host=db password='it\'s s3cret' user=app`, "host=db password=xxxxx user=app", []string{"it", "s3cret"}},
		{"kv quoted escaped backslash", `password='s3\\' user=app`, "password=xxxxx user=app", []string{"s3"}},
		{"kv quoted last", "host=db password='s 3cret'", "host=db password=xxxxx", []string{"3cret"}},
		{"kv quoted empty", "host=db password='' user=app", "host=db password=xxxxx user=app", nil},
		{"kv quoted unterminated", "host=db password='s 3cret", "host=db password=xxxxx", []string{"3cret"}},
		{"kv unquoted escaped space", `host=db password=s3\ cret user=app`, "host=db password=xxxxx user=app", []string{"s3", "cret"}},
		{"kv sslpassword", "host=db sslpassword=s3cret sslkey=/k", "host=db sslpassword=xxxxx sslkey=/k", []string{"s3cret"}},
		{"kv twice", "password=one host=db password=two", "password=xxxxx host=db password=xxxxx", []string{"one", "two"}},
		{"kv no password", "host=db user=app passfile=/p dbname=orders", "host=db user=app passfile=/p dbname=orders", nil},
		{"kv password inside another value", "options='-c password=x' host=db", "options='-c password=x' host=db", nil},
		{"kv with dbname appended", WithDatabase("host=db password=s3cret", "orders"), "host=db password=xxxxx dbname=orders", []string{"s3cret"}},
		{"empty", "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Redact(tc.raw)
			if got != tc.want {
				t.Errorf("Redact(%q)\n got %q\nwant %q", tc.raw, got, tc.want)
			}
			secrets := tc.secrets
			// The password as the driver reads it is gone too (unless it is
			// also a word of what is kept, as in Local).
			if cfg, err := pgconn.ParseConfig(tc.raw); err == nil && cfg.Password != "" && !strings.Contains(tc.want, cfg.Password) {
				secrets = append(secrets, cfg.Password)
			}
			for _, s := range secrets {
				if strings.Contains(got, s) {
					t.Errorf("Redact(%q) = %q still shows %q", tc.raw, got, s)
				}
			}
		})
	}
}
