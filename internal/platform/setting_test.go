package platform

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestWithSettingReachesEveryConnection(t *testing.T) {
	for _, in := range []string{
		"postgres://postgres@127.0.0.1:5432/readmodel?sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/readmodel",
		"host=127.0.0.1 user=postgres dbname=readmodel",
	} {
		cfg, err := pgxpool.ParseConfig(WithSetting(in, "plan_cache_mode", "force_custom_plan"))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; got != "force_custom_plan" {
			t.Errorf("%s: plan_cache_mode = %q", in, got)
		}
		if cfg.ConnConfig.Database != "readmodel" {
			t.Errorf("%s: database = %q", in, cfg.ConnConfig.Database)
		}
	}
	// A setting the operator chose is kept.
	own := "postgres://h/db?plan_cache_mode=auto"
	if got := WithSetting(own, "plan_cache_mode", "force_custom_plan"); got != own {
		t.Errorf("overrode the URL's own setting: %s", got)
	}
}
