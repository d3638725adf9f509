package pgdb_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/order"
)

// Each service's role owns its database and nothing else: the order
// service's runs its migrations in its database (tables, sequences and
// functions an earlier run made as the superuser included), and can neither
// connect to the customer service's database nor read from it.
func TestProvisionedRolesSeeOnlyTheirDatabase(t *testing.T) {
	admin := testenv.ServerURL(t)
	ctx := context.Background()
	suffix := strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	orders, customers := "prov_orders_"+suffix, "prov_customers_"+suffix
	exec := func(url string, stmts ...string) {
		t.Helper()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		for _, s := range stmts {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	t.Cleanup(func() {
		exec(admin, "DROP DATABASE IF EXISTS "+orders+" WITH (FORCE)", "DROP DATABASE IF EXISTS "+customers+" WITH (FORCE)",
			"DROP ROLE IF EXISTS "+orders, "DROP ROLE IF EXISTS "+customers)
	})
	// An earlier run made the orders database, and a table with a sequence
	// and a function in it, as the superuser.
	if err := pgdb.Ensure(ctx, admin, orders); err != nil {
		t.Fatal(err)
	}
	exec(pgdb.WithDatabase(admin, orders),
		"CREATE TABLE legacy (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
		"CREATE SEQUENCE loose_seq",
		"CREATE FUNCTION legacy_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM legacy'")

	ordersURL, err := pgdb.Provision(ctx, admin, orders, orders, "pw-orders-'quote")
	if err != nil {
		t.Fatal(err)
	}
	customersURL, err := pgdb.Provision(ctx, admin, customers, customers, "pw-customers")
	if err != nil {
		t.Fatal(err)
	}
	// Provisioning again (every make run) changes nothing that works.
	if again, err := pgdb.Provision(ctx, admin, orders, orders, "pw-orders-'quote"); err != nil || again != ordersURL {
		t.Fatalf("provisioned again: %s, %v; want %s", pgdb.Redact(again), err, pgdb.Redact(ordersURL))
	}

	// The order service's migrations, as its role.
	pool, err := platform.OpenDB(ctx, ordersURL, nil, eventstore.Migration(), outbox.Migration(), order.Migration())
	if err != nil {
		t.Fatalf("the order service's migrations as its role: %v", err)
	}
	pool.Close()
	exec(ordersURL, "ALTER TABLE legacy ADD COLUMN more text", "INSERT INTO legacy (note) VALUES ('x')",
		"SELECT legacy_count()", "SELECT nextval('loose_seq')")
	exec(customersURL, "CREATE TABLE events (id int)", "INSERT INTO events VALUES (1)")

	// The order service's role and the customers database.
	c, err := pgx.Connect(ctx, pgdb.WithDatabase(ordersURL, customers))
	var pgErr *pgconn.PgError
	if err == nil {
		_, err = c.Exec(ctx, "SELECT * FROM events")
		c.Close(ctx)
		t.Fatalf("the order service's role connected to the customers database (and read: %v)", err)
	}
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("the order service's role on the customers database: %v, want permission denied (42501)", err)
	}
	// Nor the other way round.
	if c, err := pgx.Connect(ctx, pgdb.WithDatabase(customersURL, orders)); err == nil {
		c.Close(ctx)
		t.Fatal("the customer service's role connected to the orders database")
	}
}
