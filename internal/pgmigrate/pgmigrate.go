// Package pgmigrate applies a component's embedded SQL migrations to a
// Postgres database. Each component (event store, outbox, a service's own
// tables) keeps its own version table, so components evolve independently in
// one database. It wraps jackc/tern, which serialises concurrent migrators with
// an advisory lock, so several instances starting at once are safe.
package pgmigrate

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

// Migration is one component's schema: files named 001_name.sql, 002_... in
// directory Dir of FS, and the table that records how far this database has
// come.
type Migration struct {
	VersionTable string
	FS           fs.FS
	Dir          string
}

// Apply brings the database behind pool up to date with every migration, in
// order.
func Apply(ctx context.Context, pool *pgxpool.Pool, ms ...Migration) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	for _, m := range ms {
		mg, err := migrate.NewMigrator(ctx, conn.Conn(), m.VersionTable)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.VersionTable, err)
		}
		dir, err := fs.Sub(m.FS, m.Dir)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.VersionTable, err)
		}
		if err := mg.LoadMigrations(dir); err != nil {
			return fmt.Errorf("migrate %s: load: %w", m.VersionTable, err)
		}
		if err := mg.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate %s: %w", m.VersionTable, err)
		}
	}
	return nil
}
