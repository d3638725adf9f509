// Package pgdb holds the few things every program here does with a Postgres
// server before it has a database to work in: point a connection string at
// another database, create a database if it is missing, and give a database
// a role of its own that owns it and nothing else.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Local is the server every program here uses when DATABASE_URL is unset:
// the one on 127.0.0.1:5432, which make run starts (embedded) when none
// answers there. The password is the embedded server's; a local server that
// trusts loopback connections ignores it.
const Local = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// WithDatabase returns the connection string raw with its database replaced
// by db; it takes URLs and key=value strings.
func WithDatabase(raw, db string) string {
	if u, err := url.Parse(raw); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	return raw + " dbname=" + db // in a key=value string the last value wins
}

// redacted is what stands in for a secret that Redact hides.
const redacted = "xxxxx"

// Redact hides the passwords in a connection string, for messages: in a URL
// the one in the user info and a password (or sslpassword) query parameter,
// in a key=value string the value of password (or sslpassword), quoted or
// not.
func Redact(raw string) string {
	lower := strings.ToLower(raw)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		return redactKeywordValue(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redactURLText(raw)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	u.RawQuery = redactQuery(u.RawQuery)
	return u.String()
}

// secretKey reports whether a connection parameter holds a secret.
func secretKey(key string) bool {
	key = strings.ToLower(key)
	return key == "password" || key == "sslpassword"
}

// redactQuery hides the secret parameters of a URL's raw query, keeping the
// others as they are.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		k, _, found := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			key = k
		}
		if found && secretKey(key) {
			parts[i] = k + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

// redactURLText hides the password of a URL that does not parse (the
// connection will fail, and its error is still worth printing): whatever
// stands between the user name and the last @, and the query's secrets.
func redactURLText(raw string) string {
	start := strings.Index(raw, "://") + len("://")
	if at := strings.LastIndex(raw, "@"); at > start {
		if colon := strings.Index(raw[start:at], ":"); colon >= 0 {
			raw = raw[:start+colon+1] + redacted + raw[at:]
		}
	}
	if q := strings.Index(raw, "?"); q >= 0 {
		raw = raw[:q+1] + redactQuery(raw[q+1:])
	}
	return raw
}

// redactKeywordValue hides the secrets of a key=value connection string, as
// libpq reads one: pairs separated by white space, white space allowed
// around the =, a value either single-quoted (with \' and \\ inside) or
// running to the next white space (with \ escaping the next character).
func redactKeywordValue(raw string) string {
	var b strings.Builder
	i, last := 0, 0
	for i < len(raw) {
		i = skipSpace(raw, i)
		keyStart := i
		for i < len(raw) && raw[i] != '=' && !isSpace(raw[i]) {
			i++
		}
		key := raw[keyStart:i]
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != '=' {
			continue // a key without a value: not a connection string to parse
		}
		i = skipSpace(raw, i+1)
		valueStart := i
		if i < len(raw) && raw[i] == '\'' {
			for i++; i < len(raw); i++ {
				if raw[i] == '\\' {
					i++
				} else if raw[i] == '\'' {
					i++
					break
				}
			}
		} else {
			for ; i < len(raw) && !isSpace(raw[i]); i++ {
				if raw[i] == '\\' {
					i++
				}
			}
		}
		i = min(i, len(raw))
		if secretKey(key) {
			b.WriteString(raw[last:valueStart])
			b.WriteString(redacted)
			last = i
		}
	}
	b.WriteString(raw[last:])
	return b.String()
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// Ensure creates database name on the server of adminURL unless it exists.
// Concurrent callers are safe: losing the race to create it is success.
func Ensure(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", Redact(adminURL), err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	// Two CREATEs that both found no database: the loser gets
	// duplicate_database if the winner had committed when it looked, else
	// a unique violation on the catalog's index of names (seen when two
	// instances of a service start at once).
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" ||
		pgErr.Code == "23505" && pgErr.ConstraintName == "pg_database_datname_index") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Provision gives database db a login role of its own, role with password,
// on the server of adminURL (a superuser's, or one with CREATEROLE and
// CREATEDB): the role is created (or its password set), the database created
// if missing and handed to it, with what is already in its public schema
// (tables, sequences, views, functions), and nobody else may connect to it.
// A service that connects as role then runs its migrations as the owner of
// its database only: it cannot read another service's, and a leaked
// password opens one database, not the server. It returns the URL of db as
// role.
func Provision(ctx context.Context, adminURL, db, role, password string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", Redact(adminURL), err)
	}
	defer conn.Close(context.Background())
	r, d := pgx.Identifier{role}.Sanitize(), pgx.Identifier{db}.Sanitize()
	lit := "'" + strings.ReplaceAll(password, "'", "''") + "'"
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return "", fmt.Errorf("look for role %s: %w", role, err)
	}
	stmt := "ALTER ROLE " + r + " LOGIN PASSWORD " + lit
	if !exists {
		stmt = "CREATE ROLE " + r + " LOGIN PASSWORD " + lit
	}
	if _, err := conn.Exec(ctx, stmt); err != nil && !isCode(err, "42710") { // duplicate_object: created meanwhile
		return "", fmt.Errorf("role %s: %w", role, err)
	}
	if err := Ensure(ctx, adminURL, db); err != nil {
		return "", err
	}
	for _, stmt := range []string{
		"ALTER DATABASE " + d + " OWNER TO " + r,
		// Every role may connect to a new database unless this is revoked.
		"REVOKE ALL ON DATABASE " + d + " FROM PUBLIC",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return "", fmt.Errorf("database %s: %w", db, err)
		}
	}
	// What an earlier run created in the database as another role (the
	// superuser, before roles were provisioned) becomes role's, or its
	// migrations could not change it. Sequences owned by a table follow it.
	in, err := pgx.Connect(ctx, WithDatabase(adminURL, db))
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", db, err)
	}
	defer in.Close(context.Background())
	rows, err := in.Query(ctx, `
SELECT format('ALTER %s %s OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              c.oid::regclass, $1::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm') AND pg_get_userbyid(c.relowner) <> $1
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = c.oid AND dep.deptype IN ('a', 'i')))
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1::text)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1`, role)
	if err != nil {
		return "", fmt.Errorf("objects of %s: %w", db, err)
	}
	alters, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("objects of %s: %w", db, err)
	}
	for _, a := range alters {
		if _, err := in.Exec(ctx, a); err != nil {
			return "", fmt.Errorf("%s: %w", a, err)
		}
	}
	return asRole(WithDatabase(adminURL, db), role, password)
}

// asRole returns the connection string raw with its user and password
// replaced.
func asRole(raw, role, password string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "", errors.New("a URL (postgres://…) is needed to connect as another role")
	}
	u.User = url.UserPassword(role, password)
	return u.String(), nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
